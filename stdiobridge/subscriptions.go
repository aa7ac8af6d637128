package stdiobridge

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// subscriptions/listen (MCP 2026-07-28): one long-lived response stream per
// listener for the change notifications it opted into. On legacy children
// the bridge fans the children's list_changed and resources/updated
// notifications out to the pool's listeners (subscribing the child to each
// resource a listener names); a modern child's own listen stream is passed
// through.

// listener is one subscriptions/listen stream.
type listener struct {
	id      json.RawMessage
	tools   bool
	prompts bool
	res     bool
	uris    map[string]bool
	ch      chan []byte
	closed  chan struct{}
	once    sync.Once
}

// broadcast delivers a change notification to the pool's listeners that
// opted into it, tagged with their subscription id.
func (p *childPool) broadcast(method string, params json.RawMessage) {
	var uri string
	if method == "notifications/resources/updated" {
		var x struct {
			URI string `json:"uri"`
		}
		_ = json.Unmarshal(params, &x)
		uri = x.URI
	}
	p.mu.Lock()
	if method == "notifications/tools/list_changed" {
		p.toolsKnown, p.tools = false, nil
	}
	ls := make([]*listener, 0, len(p.listeners))
	for l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		want := false
		switch method {
		case "notifications/tools/list_changed":
			want = l.tools
		case "notifications/prompts/list_changed":
			want = l.prompts
		case "notifications/resources/list_changed":
			want = l.res
		case "notifications/resources/updated":
			want = l.uris[uri]
		}
		if !want {
			continue
		}
		var pm map[string]json.RawMessage
		_ = json.Unmarshal(params, &pm)
		if pm == nil {
			pm = map[string]json.RawMessage{}
		}
		var meta map[string]json.RawMessage
		_ = json.Unmarshal(pm["_meta"], &meta)
		if meta == nil {
			meta = map[string]json.RawMessage{}
		}
		meta[metaSubID] = l.id
		pm["_meta"], _ = json.Marshal(meta)
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": pm})
		select {
		case l.ch <- b:
		default: // a listener that does not read loses notifications, never blocks the child
		}
	}
}

func (p *childPool) closeListeners() {
	p.mu.Lock()
	ls := make([]*listener, 0, len(p.listeners))
	for l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.once.Do(func() { close(l.closed) })
	}
}

// listen serves subscriptions/listen: an acknowledgement, then the change
// notifications the client opted into, until it goes away or the route
// ends (then a final result closes the stream).
func (h *Handler) listen(w http.ResponseWriter, r *http.Request, m *modernReq) {
	var sp struct {
		Notifications struct {
			Tools     bool     `json:"toolsListChanged"`
			Prompts   bool     `json:"promptsListChanged"`
			Resources bool     `json:"resourcesListChanged"`
			URIs      []string `json:"resourceSubscriptions"`
		} `json:"notifications"`
	}
	_ = json.Unmarshal(m.e.Params, &sp)
	n := sp.Notifications
	if h.era(r) == eraModern {
		h.listenModern(w, r, m)
		return
	}
	if len(n.URIs) > 1000 {
		modernError(w, m.e.ID, codeInvalidParams, "too many resourceSubscriptions (at most 1000)")
		return
	}
	p := h.pool(m)
	l := &listener{id: m.e.ID, tools: n.Tools, prompts: n.Prompts, res: n.Resources, uris: map[string]bool{},
		ch: make(chan []byte, 256), closed: make(chan struct{})}
	var sub *poolChild
	if len(n.URIs) > 0 {
		// a legacy child reports updates only for what it was subscribed to
		if sub = h.child(w, r, m, p, false, 0); sub == nil {
			return
		}
		for _, u := range n.URIs {
			params := map[string]json.RawMessage{}
			params["uri"], _ = json.Marshal(u)
			if cl, err := sub.start("resources/subscribe", params, false, "", -1); err == nil {
				select {
				case <-cl.final:
				case <-time.After(10 * time.Second):
				case <-r.Context().Done():
					return
				}
			}
			l.uris[u] = true
		}
		defer func() {
			for u := range l.uris {
				params := map[string]json.RawMessage{}
				params["uri"], _ = json.Marshal(u)
				_, _ = sub.start("resources/unsubscribe", params, false, "", -1)
			}
		}()
	}
	p.mu.Lock()
	p.listeners[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, l)
		p.mu.Unlock()
	}()
	sw := newSSEWriter(w, "")
	ack, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
		"params": map[string]any{"_meta": map[string]any{metaSubID: m.e.ID}, "notifications": n}})
	sw.add("", ack)
	if sw.flush() != nil {
		return
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	closing := func() {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID,
			"result": map[string]any{"resultType": "complete", "_meta": map[string]any{metaSubID: m.e.ID}}})
		sw.add("", b)
		_ = sw.flush()
	}
	for {
		select {
		case b := <-l.ch:
			sw.add("", b)
			if sw.flush() != nil {
				return
			}
		case <-keepalive.C:
			sw.comment("keep-alive")
			if sw.flush() != nil {
				return
			}
		case <-l.closed:
			closing()
			return
		case <-h.shutdown:
			closing()
			return
		case <-r.Context().Done():
			return
		}
	}
}

// listenModern passes a subscriptions/listen through to a modern child:
// its notifications, tagged with the bridge's id, go to the client with
// the client's.
func (h *Handler) listenModern(w http.ResponseWriter, r *http.Request, m *modernReq) {
	c := h.child(w, r, m, h.pool(m), false, 0)
	if c == nil {
		return
	}
	cl, err := c.start(m.e.Method, m.params, false, "", -1)
	if err != nil {
		h.childUnavailable(w, m.e.ID, err)
		return
	}
	cl.subID = m.e.ID
	sw := newSSEWriter(w, "")
	if sw.flush() != nil {
		cl.cancel("the client went away")
		return
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case b := <-cl.events:
			sw.add("", b)
			if sw.flush() != nil {
				cl.cancel("the client went away")
				return
			}
		case b := <-cl.final:
			_, body := h.translate(b, m, cl)
			sw.add("", body)
			_ = sw.flush()
			return
		case <-keepalive.C:
			sw.comment("keep-alive")
			if sw.flush() != nil {
				cl.cancel("the client went away")
				return
			}
		case <-h.shutdown:
			cl.cancel("the route is reloading or stopping")
			return
		case <-r.Context().Done():
			cl.cancel("the client went away")
			return
		}
	}
}
