package stdiobridge

// The child pool: children that serve MCP 2026-07-28 requests.
//
// A modern request carries no session, so the bridge owns the correlation.
// Each route (table) keeps pools of children: by default one per principal
// (`pool per_user`; one for all unauthenticated requests), or one for
// everyone (`pool shared`); and within either, one per resolved
// environment when env has placeholders, so that no child ever runs with
// another request's values. A pool is dropped once it has no children, no
// listeners and no request using it. A pool child is started and initialized by the bridge itself
// (the 2025 handshake, once), and serves many requests at once, each under
// an id of the bridge's (its own counter) and, where the request asked for
// progress, a progress token of the bridge's: clients' ids and tokens never
// meet in a child.
//
// A legacy child may ask its client things while it serves a call. Such a
// question must be attributed to the right call with certainty, and stdio
// carries no relation, so a child serves at most one call that may ask
// (tools/call, prompts/get, resources/read: the methods MRTR allows) at a
// time: the asker. Other methods share the child freely. What a child says
// without naming a request is delivered only where it is certain whose it
// is: a question to the asker when every client call in flight on the
// child is the asker's principal's, a log message to the only client call
// in flight (subscriptions/listen streams aside), and otherwise to no one. A second such call
// gets another child (more children, not guesses), within max_sessions and
// max_sessions_per_user, which count pool children like sessions; at the
// limit it waits for a child to free up, as long as its client waits.
//
// Locks (see table.go for the whole order): table.poolsMu → childPool.mu →
// poolChild.mu; none is held across I/O, and a poolChild never takes its
// pool's lock while holding its own.

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddymcp/caddymcp/internal/childproc"

	"go.uber.org/zap"
)

// childPool is a set of initialized children of one route (and principal).
type childPool struct {
	t     *table
	key   string   // the pool's key in table.pools: owner and env digest
	owner string   // the principal of a per-user pool, "" when shared
	limit string   // whom its children count against (table.reserve); "" for a shared pool: who started each
	env   []string // the children's environment, resolved (nil: env has no placeholders)
	users int      // requests using the pool now (table.poolsMu)

	mu         sync.Mutex
	children   []*poolChild
	changed    chan struct{} // closed and replaced when a child frees up or exits
	listeners  map[*listener]struct{}
	tools      map[string][]paramBinding // x-mcp-header bindings by tool name (tools/list)
	toolsKnown bool
	holds      map[string]int // asking calls in flight or parked, by limit key (shared pools)
}

// poolChild is one initialized child of a pool.
type poolChild struct {
	serial  uint64 // names the child in a wrapped requestState
	limit   string // whom it counts against (table.reserve)
	modern  bool   // speaks 2026-07-28 itself: requests pass through
	pool    *childPool
	proc    *childproc.Process
	logger  *zap.Logger
	ready   chan struct{} // closed once the handshake finished (initErr says how)
	started chan struct{} // closed once proc is set (nil if the start failed)

	initErr    error
	initResult json.RawMessage

	mu        sync.Mutex
	nextID    uint64
	calls     map[uint64]*call
	tokens    map[string]*call // the bridge's progress tokens
	asker     *call            // the call that may ask the client now
	closed    bool
	idleSince time.Time               // when the last call finished (zero while busy)
	logLevel  int                     // the level last set on the child (-1: none)
	exitCause string                  // the sandbox limit that ended it (ChildExited), c.mu
	stuckAt   time.Time               // when the asker was cancelled (it may never answer)
	subs      map[string]*resourceSub // resources/subscribe sent to this child, by URI (subscriptions.go)
	exited    chan struct{}           // closed when the process has exited
	evicted   bool                    // its slot was released when it was evicted (table.evictIdle)
	taskHolds int                     // tasks of the server's own it holds (tasks.go): not idle while any

	invalidWarned atomic.Bool // an invalid line was logged at warn
}

// idleAt reports when the child's last call finished, if it counts
// against user and has no call (table.evictIdle).
func (c *poolChild) idleAt(user string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleSince, c.limit == user && !c.closed && len(c.calls) == 0 && c.asker == nil && !c.idleSince.IsZero() && c.taskHolds == 0
}

// evict ends the child if it is still idle, releasing its slot at once.
func (c *poolChild) evict(reason string) bool {
	c.mu.Lock()
	idle := !c.closed && len(c.calls) == 0 && c.asker == nil && c.proc != nil && c.taskHolds == 0
	c.evicted = idle
	c.mu.Unlock()
	if idle {
		c.pool.t.release(c.limit)
		c.end(reason)
	}
	return idle
}

// call is one request in a pool child, from the bridge's id to the
// response; across MRTR rounds it outlives the HTTP requests that serve it.
type call struct {
	child       *poolChild
	id          uint64
	method      string
	clientToken json.RawMessage // the client's progress token
	bridgeToken string
	logLevel    int             // least severity forwarded; -1: none asked
	subID       json.RawMessage // the client's id of a subscriptions/listen call (modern child)
	holder      string          // the limit key that holds the asker slot ("" if none)
	owner       string          // whose request it serves (its limit key); "" for the bridge's own calls

	events chan []byte // notifications for the client (bounded; dropped when full)
	asks   chan []byte // the child's requests to the client
	final  chan []byte // the response (the child's id), exactly once

	mu        sync.Mutex
	open      map[string]ask // input key -> question not answered yet
	nextKey   int
	cancelled bool
	timer     *time.Timer
}

// ask is a request from the child to its client.
type ask struct {
	id     json.RawMessage
	method string
	params json.RawMessage
}

var errPoolStopped = errors.New("route stopped")

// logLevels orders the syslog severities of notifications/message.
var logLevels = map[string]int{"debug": 0, "info": 1, "notice": 2, "warning": 3, "error": 4, "critical": 5, "alert": 6, "emergency": 7}

// poolFor returns the pool named key, made with owner, limit and env if
// there is none, for a request that uses it until leavePool.
func (t *table) poolFor(key, owner, limit string, env []string) *childPool {
	t.poolsMu.Lock()
	defer t.poolsMu.Unlock()
	p := t.pools[key]
	if p == nil {
		p = &childPool{t: t, key: key, owner: owner, limit: limit, env: env, changed: make(chan struct{}),
			listeners: map[*listener]struct{}{}, holds: map[string]int{}}
		t.pools[key] = p
	}
	p.users++
	return p
}

// leavePool ends a request's use of p; a pool that nobody uses and that
// has no children or listeners is dropped.
func (t *table) leavePool(p *childPool) {
	if p == nil {
		return
	}
	t.poolsMu.Lock()
	p.users--
	t.dropIfEmptyLocked(p)
	t.poolsMu.Unlock()
}

// dropIfEmptyLocked forgets p if it is empty and unused (poolsMu held).
func (t *table) dropIfEmptyLocked(p *childPool) {
	if p.users > 0 || t.pools[p.key] != p {
		return
	}
	p.mu.Lock()
	empty := len(p.children) == 0 && len(p.listeners) == 0 && len(p.holds) == 0
	p.mu.Unlock()
	if empty {
		delete(t.pools, p.key)
	}
}

// poolCount is the number of pools the table keeps.
func (t *table) poolCount() int {
	t.poolsMu.Lock()
	defer t.poolsMu.Unlock()
	return len(t.pools)
}

// poolList copies the pools.
func (t *table) poolList() []*childPool {
	t.poolsMu.Lock()
	defer t.poolsMu.Unlock()
	out := make([]*childPool, 0, len(t.pools))
	for _, p := range t.pools {
		out = append(out, p)
	}
	return out
}

// signalLocked wakes whoever waits for a child.
func (p *childPool) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// acquire returns a ready child for a call: for an asking call, one whose
// asker slot is free (it is taken for the caller: start must follow);
// otherwise the least busy child. It starts a child when none fits and the
// limits allow, and otherwise waits while ctx lives and stop is open.
func (p *childPool) acquire(ctx context.Context, stop <-chan struct{}, asking bool, holder string, prefer uint64, start func() (*poolChild, refusal, error)) (*poolChild, refusal, error) {
	for {
		p.mu.Lock()
		cfg := p.t.settings.Load()
		if asking && p.limit == "" && cfg.maxPerUser > 0 && p.holds[holder] >= cfg.maxPerUser {
			ch := p.changed
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, refusedPerUser, ctx.Err()
			case <-stop:
				return nil, refusedPerUser, context.Canceled
			}
		}
		var best, foreign *poolChild
		bestLoad := -1
		for _, c := range p.children {
			c.mu.Lock()
			fits := !c.closed && (!asking || c.asker == nil)
			// a call of another principal beside an asker would make the
			// asker's questions unattributable: avoided where possible
			other := fits && !asking && c.asker != nil && c.asker.owner != holder && c.asker.child != nil
			load := len(c.calls)
			c.mu.Unlock()
			if other {
				if foreign == nil {
					foreign = c
				}
				continue
			}
			if fits && (best == nil || load < bestLoad || (prefer != 0 && c.serial == prefer)) {
				best, bestLoad = c, load
				if prefer != 0 && c.serial == prefer {
					break
				}
			}
		}
		if best == nil && foreign != nil && !p.canGrowLocked(cfg) {
			best = foreign
		}
		if best != nil && (asking || bestLoad < 8 || !p.canGrowLocked(cfg)) {
			if asking {
				best.mu.Lock()
				best.asker = &call{} // reserved; start replaces it
				best.mu.Unlock()
				p.holds[holder]++
			}
			p.mu.Unlock()
			return best, admitted, nil
		}
		ch := p.changed
		p.mu.Unlock()
		c, why, err := start()
		if err != nil {
			return nil, why, err
		}
		if c != nil {
			p.mu.Lock()
			p.children = append(p.children, c)
			p.signalLocked()
			p.mu.Unlock()
			continue
		}
		if why == refusedStopped {
			return nil, why, errPoolStopped
		}
		if best == nil && len(p.snapshot()) == 0 {
			return nil, why, nil // nothing to wait for
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, why, ctx.Err()
		case <-stop:
			return nil, why, context.Canceled
		}
	}
}

// canGrowLocked: a busy shared child may still get non-asking calls when
// the pool cannot grow; whether it can is decided by reserve.
func (p *childPool) canGrowLocked(cfg *settings) bool {
	return cfg.maxSessions == 0 || len(p.children) < cfg.maxSessions
}

func (p *childPool) snapshot() []*poolChild {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*poolChild(nil), p.children...)
}

// release gives back the asker slot of holder.
func (p *childPool) releaseHold(holder string) {
	p.mu.Lock()
	if p.holds[holder] <= 1 {
		delete(p.holds, holder)
	} else {
		p.holds[holder]--
	}
	p.signalLocked()
	p.mu.Unlock()
}

// remove forgets an exited child.
func (p *childPool) remove(c *poolChild) {
	p.mu.Lock()
	for i, x := range p.children {
		if x == c {
			p.children = append(p.children[:i], p.children[i+1:]...)
			break
		}
	}
	p.signalLocked()
	p.mu.Unlock()
	p.t.poolsMu.Lock()
	p.t.dropIfEmptyLocked(p)
	p.t.poolsMu.Unlock()
}

// freed wakes waiters (a call finished).
func (p *childPool) freed() {
	p.mu.Lock()
	p.signalLocked()
	p.mu.Unlock()
}

// start sends a call to the child. params is the request's params as the
// child must see them, except for the progress token, which start replaces
// by one of its own.
func (c *poolChild) start(method string, params map[string]json.RawMessage, asking bool, holder string, logLevel int) (*call, error) {
	return c.startListen(method, params, asking, holder, logLevel, nil)
}

// startListen is start for a subscriptions/listen call whose client id is
// subID: it is set before the request reaches the child, whose
// acknowledgement may come back before start returns.
func (c *poolChild) startListen(method string, params map[string]json.RawMessage, asking bool, holder string, logLevel int, subID json.RawMessage) (*call, error) {
	cl := &call{child: c, method: method, logLevel: logLevel, holder: holder, subID: subID,
		events: make(chan []byte, eventsBuffer(method)), final: make(chan []byte, 1)}
	if asking {
		// only the asker's channel receives the child's questions
		cl.asks, cl.open = make(chan []byte, 32), map[string]ask{}
	}
	c.mu.Lock()
	if c.closed {
		if asking && c.asker != nil && c.asker.child == nil {
			c.asker = nil
		}
		c.mu.Unlock()
		if asking {
			c.pool.releaseHold(holder)
		}
		return nil, errSessionClosed
	}
	c.nextID++
	cl.id = c.nextID
	c.calls[cl.id] = cl
	c.idleSince = time.Time{}
	cl.owner = holder
	if asking {
		c.asker = cl
	} else {
		cl.holder = ""
	}
	var tok json.RawMessage
	if params != nil && params["_meta"] != nil {
		tok = member(params["_meta"], "progressToken") // read in place: most calls have none
	}
	if tok != nil {
		var meta map[string]json.RawMessage
		_ = json.Unmarshal(params["_meta"], &meta)
		cl.clientToken = append(json.RawMessage(nil), tok...)
		cl.bridgeToken = "caddymcp-" + strconv.FormatUint(cl.id, 10)
		c.tokens[cl.bridgeToken] = cl
		meta["progressToken"], _ = json.Marshal(cl.bridgeToken)
		params["_meta"], _ = json.Marshal(meta)
	}
	c.mu.Unlock()
	if err := c.send(encodeRequest(cl.id, method, params)); err != nil {
		c.finish(cl.id)
		return nil, err
	}
	return cl, nil
}

// eventsBuffer is how many notifications a call holds for a client that
// has not read them yet: a listen stream's change notifications come in
// bursts; a call's progress and log messages are read as they come (and
// are hints: past the buffer they are dropped).
func eventsBuffer(method string) int {
	if method == "subscriptions/listen" {
		return 256
	}
	return 16
}

// encodeRequest renders a request line for a child without going through
// a map and reflection: params' values are kept as they are (valid JSON,
// as decoded or encoded by the bridge), compacted only where they hold a
// line break, which a JSON line must not.
func encodeRequest(id uint64, method string, params map[string]json.RawMessage) []byte {
	b := make([]byte, 0, 64+len(method)+paramsSize(params))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, method)
	if params != nil {
		b = append(b, `,"params":`...)
		b = appendObject(b, params)
	}
	return append(b, '}')
}

// appendObject appends members as a JSON object (see encodeRequest).
func appendObject(b []byte, members map[string]json.RawMessage) []byte {
	b = append(b, '{')
	first := true
	for k, v := range members {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, k)
		b = append(b, ':')
		v = oneLine(v)
		if len(v) == 0 {
			v = json.RawMessage("null")
		}
		b = append(b, v...)
	}
	return append(b, '}')
}

func paramsSize(params map[string]json.RawMessage) int {
	n := 0
	for k, v := range params {
		n += len(k) + len(v) + 4
	}
	return n
}

// appendJSONString appends s as a JSON string: as it is when it needs no
// escaping, else as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// finish forgets a call (its response came, or it could not be sent).
func (c *poolChild) finish(id uint64) *call {
	c.mu.Lock()
	cl := c.calls[id]
	if cl == nil {
		c.mu.Unlock()
		return nil
	}
	delete(c.calls, id)
	if cl.bridgeToken != "" {
		delete(c.tokens, cl.bridgeToken)
	}
	wasAsker := c.asker == cl
	if wasAsker {
		c.asker = nil
		c.stuckAt = time.Time{}
	}
	if len(c.calls) == 0 {
		c.idleSince = time.Now()
	}
	c.mu.Unlock()
	if cl.holder != "" {
		c.pool.releaseHold(cl.holder)
	} else {
		c.pool.freed()
	}
	return cl
}

// cancel tells the child a call is abandoned (notifications/cancelled) and
// answers its open questions with an error. The call is forgotten at once
// (a server that honours cancellation never answers it, MCP: "MUST NOT
// send any further messages"; an answer that comes anyway is dropped),
// except an asking call: its asker slot stays taken until the child
// answers, or the reaper ends a child that never does, so that a late
// question of the cancelled call is never handed to the next asker.
func (cl *call) cancel(reason string) {
	cl.mu.Lock()
	if cl.cancelled {
		cl.mu.Unlock()
		return
	}
	cl.cancelled = true
	open := cl.open
	cl.open = map[string]ask{}
	if cl.timer != nil {
		cl.timer.Stop()
	}
	cl.mu.Unlock()
	c := cl.child
	c.mu.Lock()
	asker := c.asker == cl
	if asker {
		c.stuckAt = time.Now()
	}
	live := c.calls[cl.id] == cl
	c.mu.Unlock()
	for _, a := range open {
		c.answerError(a.id, codeInternalError, reason)
	}
	for {
		select {
		case b := <-cl.asks:
			if e, err := parseEnvelope(b); err == nil {
				c.answerError(e.ID, codeInternalError, reason)
			}
			continue
		default:
		}
		break
	}
	if live {
		msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
			"params": map[string]any{"requestId": cl.id, "reason": reason}})
		_ = c.send(msg)
		if !asker {
			c.finish(cl.id)
		}
	}
}

func (cl *call) isCancelled() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.cancelled
}

// send writes a message to the child (once it is started).
func (c *poolChild) send(b []byte) error {
	<-c.started
	if c.proc == nil {
		return errSessionClosed
	}
	return c.proc.Send(b, c.pool.t.settings.Load().writeTimeout)
}

// answer sends the child a response to one of its requests.
func (c *poolChild) answer(id json.RawMessage, result json.RawMessage) {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
	_ = c.send(b)
}

func (c *poolChild) answerError(id json.RawMessage, code int, message string) {
	_ = c.send(encodeError(id, &rpcError{Code: code, Message: message}))
}

// ChildMessage routes a message from the child (childproc.Sink).
func (c *poolChild) ChildMessage(line []byte) {
	e, err := parseEnvelope(line)
	if err != nil {
		if c.invalidWarned.CompareAndSwap(false, true) { // once per child, then debug
			c.logger.Warn("server process wrote invalid JSON-RPC; skipped (further ones at debug)", zap.Error(err))
		} else if ce := c.logger.Check(zap.DebugLevel, "server process wrote invalid JSON-RPC; skipped"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return
	}
	switch {
	case e.isResponse():
		id, err := strconv.ParseUint(string(e.ID), 10, 64)
		if err != nil {
			return
		}
		if cl := c.finish(id); cl != nil {
			cl.final <- append([]byte(nil), line...)
		}
	case e.isRequest():
		b := append([]byte(nil), line...)
		switch e.Method {
		case "ping":
			go c.answer(e.ID, json.RawMessage(`{}`))
		case "roots/list":
			if cfg := c.pool.t.settings.Load(); !cfg.rootsForward {
				// answered from the route's roots setting, never the client's
				answer := cfg.answerRoots(append(json.RawMessage(nil), e.ID...))
				go func() { _ = c.send(answer) }()
				return
			}
			fallthrough
		case "elicitation/create", "sampling/createMessage":
			c.mu.Lock()
			a := c.asker
			certain := a != nil && a.child != nil && c.onlyOwnerLocked(a.owner)
			c.mu.Unlock()
			if a == nil || a.child == nil || a.isCancelled() {
				go c.answerError(e.ID, codeInternalError, "no client request is waiting for this "+e.Method)
				return
			}
			if !certain {
				// another principal's call is in flight on this child:
				// the question could be about either
				c.logger.Debug("a question of the server was refused: calls of more than one principal are in flight on its child",
					zap.String("method", e.Method))
				go c.answerError(e.ID, codeInternalError, "this "+e.Method+" cannot be attributed to one request")
				return
			}
			select {
			case a.asks <- b:
			default:
				go c.answerError(e.ID, codeInternalError, "too many questions at once")
			}
		default:
			go c.answerError(e.ID, codeMethodNotFound, "method not found: "+e.Method)
		}
	default:
		c.notification(e, line)
	}
}

// notification routes a notification from the child: progress to its
// call, log messages to the asking call if it asked for them, change
// notifications to the pool's listeners.
func (c *poolChild) notification(e *envelope, line []byte) {
	if c.modern && c.routeSubscription(e) {
		return
	}
	switch e.Method {
	case "notifications/progress":
		var p map[string]json.RawMessage
		if json.Unmarshal(e.Params, &p) != nil {
			return
		}
		var tok string
		_ = json.Unmarshal(p["progressToken"], &tok)
		c.mu.Lock()
		cl := c.tokens[tok]
		c.mu.Unlock()
		if cl == nil {
			return
		}
		p["progressToken"] = cl.clientToken
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": e.Method, "params": p})
		cl.event(b)
	case "notifications/message":
		var p struct {
			Level string `json:"level"`
		}
		_ = json.Unmarshal(e.Params, &p)
		c.mu.Lock()
		cl := c.soleCallLocked()
		c.mu.Unlock()
		lvl, ok := logLevels[p.Level]
		if cl != nil && cl.logLevel >= 0 && ok && lvl >= cl.logLevel {
			cl.event(append([]byte(nil), line...))
		}
	case "notifications/tools/list_changed", "notifications/prompts/list_changed",
		"notifications/resources/list_changed", "notifications/resources/updated":
		c.pool.broadcast(e.Method, e.Params)
	}
}

// clientCall reports whether cl serves a client's request that a child's
// unaddressed message could belong to: not the bridge's own calls and not
// a subscriptions/listen stream (its notifications name it).
func (cl *call) clientCall() bool {
	return cl.owner != "" && cl.subID == nil && cl.method != "subscriptions/listen"
}

// soleCallLocked is the only client call in flight on c, or nil (none, or
// more than one: a log message could be either's). c.mu held.
func (c *poolChild) soleCallLocked() *call {
	var sole *call
	for _, cl := range c.calls {
		if !cl.clientCall() {
			continue
		}
		if sole != nil {
			return nil
		}
		sole = cl
	}
	return sole
}

// onlyOwnerLocked reports whether every client call in flight on c is
// owner's. c.mu held.
func (c *poolChild) onlyOwnerLocked(owner string) bool {
	for _, cl := range c.calls {
		if cl.clientCall() && cl.owner != owner {
			return false
		}
	}
	return true
}

// routeSubscription delivers a modern child's notification tagged with a
// subscription id (the bridge's id of a subscriptions/listen call) to that
// call, with the client's id.
func (c *poolChild) routeSubscription(e *envelope) bool {
	var p map[string]json.RawMessage
	if json.Unmarshal(e.Params, &p) != nil {
		return false
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(p["_meta"], &meta) != nil || meta[metaSubID] == nil {
		return false
	}
	id, err := strconv.ParseUint(string(meta[metaSubID]), 10, 64)
	if err != nil {
		return false
	}
	c.mu.Lock()
	cl := c.calls[id]
	c.mu.Unlock()
	if cl == nil || cl.subID == nil {
		return true
	}
	meta[metaSubID] = cl.subID
	p["_meta"], _ = json.Marshal(meta)
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": e.Method, "params": p})
	cl.event(b)
	return true
}

// pendingEvents takes the notifications already queued for cl without
// waiting. The child's reader queues them before the final response, so
// once that has been received every earlier one is in the buffer; a select
// over both channels may pick the final first, and they would be lost.
func (cl *call) pendingEvents() [][]byte {
	var out [][]byte
	for {
		select {
		case b := <-cl.events:
			out = append(out, b)
		default:
			return out
		}
	}
}

func (cl *call) event(b []byte) {
	select {
	case cl.events <- b:
	default: // the client is not reading; progress and logs are hints
	}
}

func (c *poolChild) ChildOversized(id []byte, size int) {
	c.logger.Warn("server process wrote a message larger than max_message_size; dropped",
		zap.Int("size", size), zap.Int("max_message_size", c.pool.t.settings.Load().maxMessageSize))
	n, err := strconv.ParseUint(string(id), 10, 64)
	if err != nil {
		return
	}
	if cl := c.finish(n); cl != nil {
		cl.final <- encodeError(id, &rpcError{Code: codeInternalError, Message: "the server's response of " +
			strconv.Itoa(size) + " bytes exceeded max_message_size (" + strconv.Itoa(c.pool.t.maxMessageSize()) + " bytes)"})
	}
}

// ChildExited answers every call and removes the child from its pool.
func (c *poolChild) ChildExited(err error) {
	desc := childproc.ExitDescription(err)
	c.mu.Lock()
	expected := c.closed
	c.closed = true
	evicted := c.evicted
	c.exitCause = childproc.ExitCause(err)
	c.mu.Unlock()
	close(c.exited)
	countExit(c.pool.t.settings.Load(), expected, err) // before any client hears of it
	c.failCalls("MCP server process exited (" + desc + ")")
	c.pool.remove(c)
	if !evicted { // an evicted child's slot was released then
		c.pool.t.release(c.limit)
	}
	if expected {
		c.logger.Info("pool child ended", zap.String("status", desc))
	} else {
		c.logger.Warn("pool child exited", zap.String("status", desc))
	}
}

// limitCause is the sandbox limit that ended c, once it has exited.
func (c *poolChild) limitCause() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exitCause
}

// failCalls answers every call in flight with a JSON-RPC error.
func (c *poolChild) failCalls(message string) {
	c.mu.Lock()
	ids := make([]uint64, 0, len(c.calls))
	for id := range c.calls {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		if cl := c.finish(id); cl != nil {
			cl.final <- encodeError(json.RawMessage(strconv.FormatUint(id, 10)), &rpcError{Code: codeInternalError, Message: message})
		}
	}
}

// end closes the child and terminates its process (in the background,
// counted in table.ending so that Caddy's stop waits for it).
func (c *poolChild) end(reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.logger.Info("pool child ending", zap.String("reason", reason))
	t := c.pool.t
	t.ending.Add(1)
	go func() {
		defer t.ending.Done()
		c.proc.Terminate(t.settings.Load().shutdownTimeout)
	}()
}

// handshake initializes the child as the bridge's own 2025 client,
// declaring what the bridge can translate into input_required rounds.
func (c *poolChild) handshake(version string) error {
	defer close(c.ready)
	if c.modern {
		return c.discoverModern()
	}
	caps := c.pool.t.settings.Load().childCapabilities(json.RawMessage(`{"elicitation":{"form":{},"url":{}},"sampling":{},"roots":{}}`))
	if err := c.opening("initialize", initializeParams(version, caps, "caddymcp")); err != nil {
		return err
	}
	c.initErr = c.send(initializedNotification)
	if c.initErr == nil {
		c.askHints()
	}
	return c.initErr
}

// The 2025 handshake the bridge does as a child's client, alike for a
// stateless session's child and a pool child: initialize with these
// params, within handshakeTimeout, then initializedNotification.
const handshakeTimeout = 30 * time.Second

var initializedNotification = []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)

// initializeParams are the params of the bridge's own initialize.
func initializeParams(version string, caps json.RawMessage, client string) map[string]json.RawMessage {
	params := map[string]json.RawMessage{"capabilities": caps}
	params["protocolVersion"], _ = json.Marshal(version)
	params["clientInfo"], _ = json.Marshal(map[string]string{"name": client, "version": "1"})
	return params
}

// discoverModern asks a modern child server/discover (its "handshake": it
// needs none, and the answer serves clients' server/discover).
func (c *poolChild) discoverModern() error {
	return c.opening("server/discover", map[string]json.RawMessage{"_meta": bridgeMeta})
}

// opening sends the child's first request and keeps its result.
func (c *poolChild) opening(method string, params map[string]json.RawMessage) error {
	cl, err := c.start(method, params, false, "", -1)
	if err != nil {
		c.initErr = err
		return err
	}
	timeout := time.NewTimer(handshakeTimeout)
	defer timeout.Stop()
	select {
	case b := <-cl.final:
		e, err := parseEnvelope(b)
		if err != nil || e.Result == nil {
			c.initErr = errors.New("the server process refused " + method + ": " + string(truncate(b, 200)))
			return c.initErr
		}
		c.initResult = append(json.RawMessage(nil), e.Result...)
		return nil
	case <-timeout.C:
		c.initErr = errors.New("no " + method + " response within " + handshakeTimeout.String())
		c.finish(cl.id)
		return c.initErr
	}
}

// setLogLevel makes the child send log messages down to level (one
// logging/setLevel when it is lower than the level set before).
func (c *poolChild) setLogLevel(ctx context.Context, level string) {
	lvl := logLevels[level]
	c.mu.Lock()
	if c.logLevel >= 0 && c.logLevel <= lvl {
		c.mu.Unlock()
		return
	}
	c.logLevel = lvl
	c.mu.Unlock()
	params := map[string]json.RawMessage{}
	params["level"], _ = json.Marshal(level)
	cl, err := c.start("logging/setLevel", params, false, "", -1)
	if err != nil {
		return
	}
	select {
	case <-cl.final:
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
}

// reapPools ends pool children idle for longer than idle, and children
// whose cancelled asking call never ended (they do not honour
// cancellation; the slot would be lost for good).
func (t *table) reapPools(now time.Time, idle, stuck time.Duration) {
	for _, p := range t.poolList() {
		for _, c := range p.snapshot() {
			c.mu.Lock()
			idleFor := time.Duration(0)
			if !c.idleSince.IsZero() && len(c.calls) == 0 && c.taskHolds == 0 {
				idleFor = now.Sub(c.idleSince)
			}
			stuckFor := time.Duration(0)
			if !c.stuckAt.IsZero() {
				stuckFor = now.Sub(c.stuckAt)
			}
			c.mu.Unlock()
			switch {
			case idleFor > idle:
				c.end("idle for longer than session_idle_timeout")
			case stuckFor > stuck:
				c.end("a cancelled call was not answered within " + stuck.String())
			}
		}
	}
}

// endPools ends every pool child (the route goes away).
func (t *table) endPools(reason string) {
	for _, p := range t.poolList() {
		p.closeListeners()
		for _, c := range p.snapshot() {
			c.failCalls(reason)
			c.end(reason)
		}
	}
}
