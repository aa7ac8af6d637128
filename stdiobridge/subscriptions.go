package stdiobridge

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
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

// resourceSub is one URI a child was subscribed to, shared by every
// listener of the pool that names it: the child is unsubscribed when the
// last of them goes away.
type resourceSub struct {
	n    int           // listeners holding it
	done chan struct{} // closed once the child answered resources/subscribe
	ok   bool          // the child accepted it (read after done)
}

// subscribe subscribes c to uri for one listener (once per child and URI,
// however many listeners name it) and reports whether the child accepted.
func (c *poolChild) subscribe(ctx context.Context, uri string) bool {
	c.mu.Lock()
	if c.subs == nil {
		c.subs = map[string]*resourceSub{}
	}
	s := c.subs[uri]
	first := s == nil
	if first {
		s = &resourceSub{done: make(chan struct{})}
		c.subs[uri] = s
	}
	s.n++
	c.mu.Unlock()
	if first {
		params := map[string]json.RawMessage{}
		params["uri"], _ = json.Marshal(uri)
		if cl, err := c.start("resources/subscribe", params, false, "", -1); err == nil {
			timer := time.NewTimer(10 * time.Second)
			select {
			case b := <-cl.final:
				e, err := parseEnvelope(b)
				s.ok = err == nil && e.Result != nil
			case <-timer.C:
				c.finish(cl.id)
			case <-c.exited:
			}
			timer.Stop()
		}
		close(s.done)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		c.unsubscribe(uri, false)
		return false
	}
	if !s.ok {
		c.unsubscribe(uri, false)
	}
	return s.ok
}

// unsubscribe gives back one listener's hold on uri; the last one
// unsubscribes the child (when it had accepted the subscription).
func (c *poolChild) unsubscribe(uri string, accepted bool) {
	c.mu.Lock()
	s := c.subs[uri]
	if s == nil {
		c.mu.Unlock()
		return
	}
	s.n--
	last := s.n == 0
	if last {
		delete(c.subs, uri)
	}
	c.mu.Unlock()
	if last && accepted {
		params := map[string]json.RawMessage{}
		params["uri"], _ = json.Marshal(uri)
		if cl, err := c.start("resources/unsubscribe", params, false, "", -1); err == nil {
			go func() {
				// the answer is not awaited by anyone; the call slot is freed
				// when it comes, or when the child exits
				select {
				case <-cl.final:
				case <-c.exited:
				case <-time.After(10 * time.Second):
					c.finish(cl.id)
				}
			}()
		}
	}
}

// listenCapabilities is what a 2025 server's InitializeResult says it can
// notify: the part of a listen filter the bridge can honour.
func listenCapabilities(init json.RawMessage) (tools, prompts, resources bool) {
	var ir struct {
		Capabilities struct {
			Tools struct {
				ListChanged bool `json:"listChanged"`
			} `json:"tools"`
			Prompts struct {
				ListChanged bool `json:"listChanged"`
			} `json:"prompts"`
			Resources struct {
				ListChanged bool `json:"listChanged"`
			} `json:"resources"`
		} `json:"capabilities"`
	}
	_ = json.Unmarshal(init, &ir)
	return ir.Capabilities.Tools.ListChanged, ir.Capabilities.Prompts.ListChanged, ir.Capabilities.Resources.ListChanged
}

// listen serves subscriptions/listen: an acknowledgement of what the
// bridge will honour (the list changes the server declared it notifies,
// the URIs the child accepted a subscription to), then those
// notifications, until the client goes away, or the route or the
// subscribed child ends (then a final result closes the stream, so that
// the client knows to listen again).
func (h poolServer) listen(w http.ResponseWriter, r *http.Request, m *modernReq) {
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
	if h.childEra(r) == eraModern {
		h.listenModern(w, r, m)
		return
	}
	if len(n.URIs) > 1000 {
		modernError(w, m.e.ID, codeInvalidParams, "too many resourceSubscriptions (at most 1000)")
		return
	}
	p := m.pool
	// a child of the pool: what it declared says what can be honoured,
	// and it is the one subscribed to the URIs
	sub := h.child(w, r, m, p, false, 0)
	if sub == nil {
		return
	}
	tools, prompts, resources := listenCapabilities(sub.initResult)
	l := &listener{id: m.e.ID, tools: n.Tools && tools, prompts: n.Prompts && prompts, res: n.Resources && resources,
		uris: map[string]bool{}, ch: make(chan []byte, 256), closed: make(chan struct{})}
	defer func() {
		for u := range l.uris {
			sub.unsubscribe(u, true)
		}
	}()
	for _, u := range n.URIs {
		if l.uris[u] {
			continue
		}
		if sub.subscribe(r.Context(), u) {
			l.uris[u] = true
		} else if r.Context().Err() != nil {
			return
		}
	}
	p.mu.Lock()
	p.listeners[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, l)
		p.mu.Unlock()
	}()
	acked := map[string]any{}
	if l.tools {
		acked["toolsListChanged"] = true
	}
	if l.prompts {
		acked["promptsListChanged"] = true
	}
	if l.res {
		acked["resourcesListChanged"] = true
	}
	if len(l.uris) > 0 {
		uris := make([]string, 0, len(l.uris))
		for _, u := range n.URIs {
			if l.uris[u] && !slices.Contains(uris, u) {
				uris = append(uris, u)
			}
		}
		acked["resourceSubscriptions"] = uris
	}
	sw := newSSEWriter(w, "")
	ack, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
		"params": map[string]any{"_meta": map[string]any{metaSubID: m.e.ID}, "notifications": acked}})
	sw.add("", ack)
	if sw.flush() != nil {
		return
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	// a subscribed child that exits ends the stream: its subscriptions are
	// gone, and the client must listen again
	var gone <-chan struct{}
	if len(l.uris) > 0 {
		gone = sub.exited
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
			listenClosed(sw, m.e.ID)
			return
		case <-gone:
			listenClosed(sw, m.e.ID)
			return
		case <-h.shutdown:
			listenClosed(sw, m.e.ID)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// listenClosed ends a listen stream the server tears down with the
// graceful closure result (subscriptions: "Graceful Closure").
func listenClosed(sw *sseWriter, id json.RawMessage) {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id,
		"result": map[string]any{"resultType": "complete", "_meta": map[string]any{metaSubID: id}}})
	sw.add("", b)
	_ = sw.flush()
}

// listenModern passes a subscriptions/listen through to a modern child:
// its notifications, tagged with the bridge's id, go to the client with
// the client's.
func (h poolServer) listenModern(w http.ResponseWriter, r *http.Request, m *modernReq) {
	c := h.child(w, r, m, m.pool, false, 0)
	if c == nil {
		return
	}
	cl, err := c.startListen(m.e.Method, m.params, false, "", -1, m.e.ID)
	if err != nil {
		h.childUnavailable(w, m.e.ID, err)
		return
	}
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
			for _, ev := range cl.pendingEvents() {
				sw.add("", ev)
			}
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
			listenClosed(sw, m.e.ID)
			return
		case <-r.Context().Done():
			cl.cancel("the client went away")
			return
		}
	}
}
