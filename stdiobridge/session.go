package stdiobridge

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddymcp/caddymcp/internal/childproc"

	"go.uber.org/zap"
)

// Stream bounds: what a session keeps for delivery and resumption. A
// finished stream is kept for resumption until it was delivered and the
// resume window passed, and within per-session and per-route byte bounds.
const (
	maxStreamEvents    = 4096
	maxStreamBytes     = 16 << 20
	maxRetainedStreams = 32
	maxSessionRetained = 8 << 20
	maxRouteRetained   = 256 << 20
	maxBatchLength     = 1000
)

// Session is one MCP session: a child process and the streams that carry
// its messages to the client.
type Session struct {
	id       string
	subject  string // the principal the session is bound to ("" unauthenticated)
	limitKey string // whom the session counts against for max_sessions_per_user
	table    *table
	proc     *childproc.Process
	// exitCause is the sandbox limit that ended the child (ChildExited), s.mu
	exitCause string
	logger    *zap.Logger
	cfg       *settings

	mu              sync.Mutex
	nextID          uint64
	pending         map[uint64]*pending // by the id the child sees
	byClientID      map[string]uint64   // client id key -> child id
	progress        map[string]*stream  // progress token -> stream of its request
	streams         map[string]*stream  // by stream id
	finished        []*stream           // completed streams kept for resumption, oldest first
	retained        int                 // bytes of the finished streams' events
	standalone      *stream             // the GET stream's messages
	protocolVersion string
	lastActive      time.Time
	created         time.Time // for logs
	started         bool      // initialize reached the child (see idleSince)
	initStream      *stream   // the stream of the initialize answer
	closed          bool
	closedCh        chan struct{}
	closeReason     string
	streamSeq       uint64
	ending          *pendingSet                                                                     // children being ended in the background; Caddy's stop waits for them
	auditDone       []*auditRecord                                                                  // settled, to be written once the lock is released
	observe         func(method, name, version string, code int, toolError bool, started time.Time) // metrics (metrics.go)
	onExit          func()                                                                          // called once the child has exited after end (stateless slots)
	exitOnce        sync.Once
	invalidWarned   atomic.Bool // an invalid line of the child was logged at warn
}

// pending is a client request the child has not answered yet.
type pending struct {
	clientID      json.RawMessage
	stream        *stream
	method        string
	progressToken string
	audit         *auditRecord // audited operations (audit.go)
	started       time.Time
	bound         *time.Timer // call_timeout (nil: none)
}

// stream is the ordered, bounded log of messages for one SSE stream: the
// answer to one POST, or the standalone GET stream. A writer drains it; a
// resuming client replays it from its Last-Event-ID.
type stream struct {
	id         string
	standalone bool
	events     []event
	first      uint64 // seq of events[0]; seqs start at 1, 0 is the priming event
	next       uint64
	size       int
	owed       int  // responses still to come (POST streams)
	done       bool // no more events will be added
	notify     chan struct{}
	writer     chan struct{} // closed to evict the attached writer
	order      uint64        // creation order within the session
	delivered  uint64        // last seq a writer flushed
	evicted    int           // events dropped from the front (bounds)
	warned     bool          // the eviction was logged
	finishedAt time.Time     // when the stream was retired
	pinned     bool          // its first writer has not detached yet (see busy)
}

// busy reports whether a writer holds the stream, or its first writer is
// still to come (for at most resumeGrace after the answer: a POST that
// never attached, e.g. one whose message could not be sent, lets go).
func (st *stream) busy(now time.Time) bool {
	return st.writer != nil || (st.pinned && now.Sub(st.finishedAt) < resumeGrace)
}

// newStreamLocked creates a stream of this session.
func (s *Session) newStreamLocked(standalone bool) *stream {
	s.streamSeq++
	st := &stream{id: randomID(8), standalone: standalone, first: 1, next: 1,
		notify: make(chan struct{}, 1), order: s.streamSeq, pinned: !standalone}
	s.streams[st.id] = st
	return st
}

// append adds an event, evicting the oldest beyond the bounds; it reports
// whether it evicted any. Caller holds the session lock.
func (st *stream) append(data []byte) (evicted bool) {
	st.events = append(st.events, event{seq: st.next, data: data})
	st.next++
	st.size += len(data)
	for len(st.events) > maxStreamEvents || (st.size > maxStreamBytes && len(st.events) > 1) {
		st.size -= len(st.events[0].data)
		st.events[0] = event{}
		st.events = st.events[1:]
		st.first++
		st.evicted++
		evicted = true
	}
	st.signal()
	return evicted
}

func (st *stream) signal() {
	select {
	case st.notify <- struct{}{}:
	default:
	}
}

// since returns the events after seq, and whether some were evicted. seq
// may be anything a client sent: at or past next there is nothing after it
// (serveGET refuses such ids before), and the arithmetic cannot overflow.
func (st *stream) since(seq uint64) ([]event, bool) {
	if seq >= st.next {
		return nil, false
	}
	if seq+1 < st.first { // seq < next, so seq+1 cannot overflow
		return nil, true
	}
	i := seq + 1 - st.first
	if i >= uint64(len(st.events)) {
		return nil, false
	}
	return st.events[i:], false
}

// snapshot reads what a writer needs under the session lock (released in a
// defer, so a panic cannot leave it held).
func (s *Session) snapshot(st *stream, after uint64, buf []event) (evs []event, evicted, done, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, evicted := st.since(after)
	return append(buf[:0], got...), evicted, st.done, s.closed
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// randomID returns n random bytes as base32 (crypto/rand).
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)
}

func newSession(t *table, subject, limitKey string, cfg *settings, logger *zap.Logger) *Session {
	s := &Session{
		id:         cfg.sessionID(),
		subject:    subject,
		limitKey:   limitKey,
		table:      t,
		cfg:        cfg,
		pending:    map[uint64]*pending{},
		byClientID: map[string]uint64{},
		progress:   map[string]*stream{},
		streams:    map[string]*stream{},
		lastActive: time.Now(),
		created:    time.Now(),
		closedCh:   make(chan struct{}),
	}
	s.standalone = s.newStreamLocked(true)
	s.logger = logger.With(zap.String("session", s.id))
	return s
}

func (s *Session) touch() {
	s.mu.Lock()
	s.lastActive = time.Now()
	s.mu.Unlock()
}

// idleSince is how long the session has had no client request. A session
// is not idle before its initialize reached the child, however long
// starting the child took, nor while its client waits on the initialize
// answer (a slow server's start-up is not the client's idleness).
func (s *Session) idleSince(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || (s.initStream != nil && !s.initStream.done && s.initStream.writer != nil) {
		return 0
	}
	return now.Sub(s.lastActive)
}

// idleAt reports when the session's last client request came, if it is
// idle now: started, not closed, no request in flight, no stream held by a
// writer (an open GET or POST stream).
func (s *Session) idleAt() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastActive, s.idleLocked()
}

func (s *Session) idleLocked() bool {
	if !s.started || s.closed || len(s.pending) > 0 {
		return false
	}
	for _, st := range s.streams {
		if st.writer != nil {
			return false
		}
	}
	return true
}

// activity reports whether a request is in flight and when the last
// client request came.
func (s *Session) activity() (busy bool, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0 || !s.started, s.lastActive
}

// evict ends the session if it is still idle (checked and closed under one
// lock, so that a request that arrived meanwhile keeps it).
func (s *Session) evict(reason string) bool {
	closed := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.idleLocked() && s.closeLocked(reason)
	}()
	if closed {
		s.end(reason) // already closed: terminates the child
	}
	return closed
}

// markStarted starts the idle clock: initialize reached the child.
func (s *Session) markStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	s.lastActive = time.Now()
}

// startRequest registers a client request and returns the message to send
// to the child, with the id replaced by one the bridge controls: clients may
// use any string or number, and two clients' ids never meet in one child.
func (s *Session) startRequest(e *envelope, st *stream) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errSessionClosed
	}
	s.nextID++
	childID := s.nextID
	p := &pending{clientID: append(json.RawMessage(nil), e.ID...), stream: st, method: e.Method, started: time.Now()}
	if tok := progressToken(e.Params); tok != "" {
		p.progressToken = tok
		s.progress[tok] = st
	}
	s.pending[childID] = p
	s.byClientID[idKey(e.ID)] = childID
	st.owed++
	cfg := s.cfg
	if s.table != nil {
		if c := s.table.settings.Load(); c != nil {
			cfg = c // the running config: a reload changes call_timeout
		}
	}
	if limit := cfg.callTimeout; limit > 0 && e.Method != "initialize" {
		p.bound = time.AfterFunc(limit, func() { s.callTimedOut(childID, limit) })
	}
	return e.withID(strconv.AppendUint(nil, childID, 10)), nil
}

// outgoing renders a client message for the child: a request is registered
// on st with an id of the bridge's, a cancellation is mapped to that id,
// anything else goes as it came.
func (s *Session) outgoing(e *envelope, st *stream) ([]byte, error) {
	switch {
	case e.isRequest():
		return s.startRequest(e, st)
	case e.Method == "notifications/cancelled":
		if msg := s.rewriteCancel(e); msg != nil {
			return msg, nil
		}
	}
	return e.line(), nil
}

// abandon forgets a request whose message could not be sent.
func (s *Session) abandon(e *envelope) {
	defer s.flushAudit() // after the lock is released
	s.mu.Lock()
	defer s.mu.Unlock()
	if childID, ok := s.byClientID[idKey(e.ID)]; ok {
		s.finishLocked(childID)
	}
}

// finishLocked removes a pending request and settles its stream.
func (s *Session) finishLocked(childID uint64) *pending {
	p := s.pending[childID]
	if p == nil {
		return nil
	}
	delete(s.pending, childID)
	if p.bound != nil {
		p.bound.Stop()
	}
	if p.audit != nil {
		if p.audit.outcome == "" {
			p.audit.outcome = "cancelled"
		}
		s.auditDone = append(s.auditDone, p.audit)
	}
	if s.byClientID[idKey(p.clientID)] == childID {
		delete(s.byClientID, idKey(p.clientID))
	}
	if p.progressToken != "" && s.progress[p.progressToken] == p.stream {
		delete(s.progress, p.progressToken)
	}
	p.stream.owed--
	if p.stream.owed <= 0 {
		p.stream.done = true
		p.stream.signal()
		s.retireLocked(p.stream)
	}
	return p
}

// retireLocked keeps a completed stream for resumption, within bounds.
func (s *Session) retireLocked(st *stream) {
	if st.standalone {
		return
	}
	st.finishedAt = time.Now()
	s.finished = append(s.finished, st)
	s.retained += st.size
	if s.table != nil {
		s.table.retained.Add(int64(st.size))
	}
	s.pruneLocked(st.finishedAt)
}

// pruneLocked drops finished streams that were delivered and are past the
// resume window, then the oldest ones beyond the count and byte bounds of
// the session and of the route. A stream that a writer holds, or whose
// first writer is still to come (the POST that asked has not attached yet),
// is never dropped: its client has not had its answer.
func (s *Session) pruneLocked(now time.Time) {
	keep := s.finished[:0]
	for _, st := range s.finished {
		if !st.busy(now) && st.delivered+1 >= st.next && now.Sub(st.finishedAt) > resumeGrace {
			s.dropLocked(st)
			continue
		}
		keep = append(keep, st)
	}
	clear(s.finished[len(keep):])
	s.finished = keep
	over := func() bool {
		return len(s.finished) > maxRetainedStreams || s.retained > maxSessionRetained ||
			(s.table != nil && s.table.retained.Load() > maxRouteRetained)
	}
	for i := 0; i < len(s.finished) && over(); {
		if st := s.finished[i]; !st.busy(now) {
			s.dropLocked(st)
			s.finished = append(s.finished[:i], s.finished[i+1:]...)
			continue
		}
		i++
	}
}

// dropLocked forgets a finished stream and its events.
func (s *Session) dropLocked(st *stream) {
	delete(s.streams, st.id)
	s.retained -= st.size
	if s.table != nil {
		s.table.retained.Add(-int64(st.size))
	}
	st.events, st.size = nil, 0
}

// prune is pruneLocked for the reaper.
func (s *Session) prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
}

// rewriteCancel maps the requestId of a client's notifications/cancelled
// to the id the child knows, and settles the request's stream.
func (s *Session) rewriteCancel(e *envelope) []byte {
	defer s.flushAudit() // after the lock is released
	var params map[string]json.RawMessage
	if json.Unmarshal(e.Params, &params) != nil || params["requestId"] == nil {
		return nil
	}
	childID, ok := func() (uint64, bool) {
		s.mu.Lock()
		defer s.mu.Unlock() // before the deferred flushAudit, also on a panic
		childID, ok := s.byClientID[idKey(params["requestId"])]
		if ok {
			s.finishLocked(childID)
		}
		return childID, ok
	}()
	if !ok {
		return nil
	}
	params["requestId"] = json.RawMessage(strconv.FormatUint(childID, 10))
	out := *e
	out.Params, _ = json.Marshal(params)
	b, _ := json.Marshal(&out)
	return b
}

// callTimedOut ends a request the child did not answer within
// call_timeout: the client gets an error, the child notifications/cancelled.
func (s *Session) callTimedOut(childID uint64, limit time.Duration) {
	defer s.flushAudit() // after the lock is released
	method, ok := func() (string, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		p := s.pending[childID]
		if p == nil {
			return "", false
		}
		if p.audit != nil {
			p.audit.outcome, p.audit.errorCode = "error", codeInternalError
		}
		p.stream.append(encodeError(p.clientID, &rpcError{Code: codeInternalError,
			Message: "the call exceeded call_timeout (" + limit.String() + "); the server was sent notifications/cancelled"}))
		s.finishLocked(childID)
		return p.method, true
	}()
	if !ok {
		return
	}
	s.logger.Warn("call ended: it exceeded call_timeout", zap.String("method", method), zap.Duration("call_timeout", limit))
	msg, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"method":  "notifications/cancelled",
		"params":  map[string]any{"requestId": childID, "reason": "the call exceeded call_timeout"},
	})
	_ = s.proc.Send(msg, s.cfg.writeTimeout)
}

// cancelStream tells the child that the requests of a stream whose client
// went away are cancelled (MCP notifications/cancelled).
func (s *Session) cancelStream(st *stream, reason string) {
	defer s.flushAudit() // after the lock is released
	ids := func() []uint64 {
		s.mu.Lock()
		defer s.mu.Unlock() // before the deferred flushAudit, also on a panic
		var ids []uint64
		for id, p := range s.pending {
			if p.stream == st {
				ids = append(ids, id)
			}
		}
		for _, id := range ids {
			s.finishLocked(id)
		}
		return ids
	}()
	for _, id := range ids {
		msg, _ := json.Marshal(map[string]any{
			"jsonrpc": "2.0",
			"method":  "notifications/cancelled",
			"params":  map[string]any{"requestId": id, "reason": reason},
		})
		if err := s.proc.Send(msg, s.cfg.writeTimeout); err != nil {
			return
		}
		s.logger.Debug("request cancelled: client went away", zap.Uint64("child_id", id))
	}
}

// ChildMessage routes one message from the child (childproc.Sink). line is
// valid JSON and only valid during the call.
func (s *Session) ChildMessage(line []byte) {
	defer s.flushAudit() // after the lock is released
	e, err := parseEnvelope(line)
	if err != nil {
		if s.invalidWarned.CompareAndSwap(false, true) { // once per child, then debug
			s.logger.Warn("server process wrote invalid JSON-RPC; skipped (further ones at debug)", zap.Error(err))
		} else if ce := s.logger.Check(zap.DebugLevel, "server process wrote invalid JSON-RPC; skipped"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return
	}
	if e.isRequest() && e.Method == "roots/list" && s.cfg != nil && !s.cfg.rootsForward {
		// the bridge answers (roots setting); the client is never asked
		answer := s.cfg.answerRoots(append(json.RawMessage(nil), e.ID...))
		go func() { _ = s.proc.Send(answer, s.cfg.writeTimeout) }()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.isResponse() {
		childID, err := strconv.ParseUint(string(e.ID), 10, 64)
		p := s.pending[childID]
		if err != nil || p == nil {
			s.logger.Debug("response for a request that is not pending (cancelled or unknown); dropped",
				zap.ByteString("id", truncate(e.ID, 64)))
			return
		}
		if p.method == "initialize" && e.Result != nil && s.cfg != nil {
			observeStart(s.cfg.command, p.started)
		}
		if p.method == "initialize" && e.Result != nil {
			var r struct {
				ProtocolVersion string `json:"protocolVersion"`
			}
			if json.Unmarshal(e.Result, &r) == nil {
				s.protocolVersion = r.ProtocolVersion
			}
		}
		if p.audit != nil {
			p.audit.settle(e)
		}
		if s.observe != nil && p.method != "initialize" {
			code := 0
			if e.Error != nil {
				var re struct {
					Code int `json:"code"`
				}
				_ = json.Unmarshal(e.Error, &re)
				code = re.Code
			}
			name := ""
			if p.audit != nil {
				name = p.audit.name
			}
			s.observe(p.method, name, s.protocolVersion, code, bytes.Contains(e.Result, []byte(`"isError":true`)), p.started)
		}
		if p.method == "tools/list" && e.Result != nil && s.table != nil {
			var res struct {
				Tools []struct {
					Name string `json:"name"`
				} `json:"tools"`
			}
			if json.Unmarshal(e.Result, &res) == nil {
				names := make([]string, 0, len(res.Tools))
				for _, t := range res.Tools {
					names = append(names, t.Name)
				}
				s.table.tools.learn(names)
			}
		}
		p.stream.append(e.withID(p.clientID)) // a new slice: line is not kept
		s.finishLocked(childID)
		return
	}
	st := s.routeLocked(e)
	if st.append(append([]byte(nil), line...)) && !st.warned {
		st.warned = true
		s.logger.Warn("a stream's buffer is full (its client is not reading); its oldest messages are dropped",
			zap.String("stream", st.id), zap.Int("max_events", maxStreamEvents), zap.Int("max_bytes", maxStreamBytes))
	}
}

// routeLocked picks the stream for a request or notification from the
// child: progress goes to the stream of the request that asked for it;
// anything else to the newest open request stream (stdio carries no
// relation, and a client reads that stream now), else to the GET stream.
func (s *Session) routeLocked(e *envelope) *stream {
	if e.Method == "notifications/progress" {
		if st := s.progress[progressToken(e.Params)]; st != nil && !st.done {
			return st
		}
	}
	var newest *stream
	for _, p := range s.pending {
		if !p.stream.done && (newest == nil || p.stream.order > newest.order) {
			newest = p.stream
		}
	}
	if newest != nil {
		return newest
	}
	return s.standalone
}

// maxMessageSize is the bound in force: the running config's.
func (s *Session) maxMessageSize() int {
	if s.table != nil {
		return s.table.maxMessageSize()
	}
	return s.cfg.maxMessageSize
}

// ChildOversized answers the request whose response was too large.
func (s *Session) ChildOversized(id []byte, size int) {
	defer s.flushAudit() // after the lock is released
	s.logger.Warn("server process wrote a message larger than max_message_size; dropped",
		zap.Int("size", size), zap.Int("max_message_size", s.maxMessageSize()))
	if id == nil {
		return
	}
	childID, err := strconv.ParseUint(string(id), 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pending[childID]; p != nil {
		p.stream.append(encodeError(p.clientID, &rpcError{Code: codeInternalError,
			Message: "the server's response of " + strconv.Itoa(size) + " bytes exceeded max_message_size (" +
				strconv.Itoa(s.maxMessageSize()) + " bytes)"}))
		s.finishLocked(childID)
	}
}

// ChildExited settles every pending request and ends the session.
func (s *Session) ChildExited(err error) {
	defer s.flushAudit() // after the lock is released
	desc := childproc.ExitDescription(err)
	expected := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock() // before the deferred flushAudit, also on a panic
		expected := s.closed
		s.exitCause = childproc.ExitCause(err)
		// counted before any client hears of it (a counter, no lock)
		countExit(s.cfg, expected, err)
		s.failPendingLocked("MCP server process exited (" + desc + ")")
		for _, st := range s.streams {
			st.done = true
			st.signal()
		}
		s.closeLocked("server process exited (" + desc + ")")
		return expected
	}()
	if expected {
		s.logger.Info("server process ended", zap.String("status", desc))
	} else {
		s.logger.Warn("server process exited; session ended", zap.String("status", desc))
	}
}

// failPending answers every pending request with a JSON-RPC error.
func (s *Session) failPending(message string) {
	defer s.flushAudit() // after the lock is released
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failPendingLocked(message)
}

func (s *Session) failPendingLocked(message string) {
	for id, p := range s.pending {
		if p.audit != nil {
			p.audit.outcome, p.audit.errorCode = "error", codeInternalError
			p.audit.exitCause = s.exitCause
		}
		p.stream.append(encodeError(p.clientID, &rpcError{Code: codeInternalError, Message: message}))
		s.finishLocked(id)
	}
}

// closeLocked marks the session closed and removes it from its table.
func (s *Session) closeLocked(reason string) bool {
	if s.closed {
		return false
	}
	s.closed = true
	s.closeReason = reason
	close(s.closedCh)
	if s.table != nil {
		s.table.remove(s)
	}
	for _, st := range s.finished {
		if s.table != nil {
			s.table.retained.Add(-int64(st.size))
		}
	}
	s.finished, s.retained = nil, 0
	return true
}

// closeWith is closeLocked for callers without the lock.
func (s *Session) closeWith(reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked(reason)
}

// end closes the session and terminates its child in the background, so
// that neither DELETE nor expiry waits for the child to exit; onExit (if
// set) runs once the child has exited.
func (s *Session) end(reason string) {
	if s.closeWith(reason) {
		s.logger.Info("session ended", zap.String("reason", reason))
	}
	if s.proc != nil && s.ending != nil {
		s.ending.Add(1)
		go func() {
			defer s.ending.Done()
			s.proc.Terminate(s.cfg.shutdownTimeout)
			s.exited()
		}()
	} else {
		s.exited()
	}
}

func (s *Session) exited() {
	if s.onExit != nil {
		s.exitOnce.Do(s.onExit)
	}
}

// progressToken extracts params._meta.progressToken as a map key.
func progressToken(params json.RawMessage) string {
	if len(params) == 0 || !bytes.Contains(params, []byte("progressToken")) {
		return ""
	}
	var p struct {
		Meta struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
		ProgressToken json.RawMessage `json:"progressToken"`
	}
	if json.Unmarshal(params, &p) != nil {
		return ""
	}
	if p.Meta.ProgressToken != nil {
		return idKey(p.Meta.ProgressToken)
	}
	if p.ProgressToken != nil {
		return idKey(p.ProgressToken)
	}
	return ""
}

// setAudit attaches an audit record to a request just started.
func (s *Session) setAudit(clientID json.RawMessage, a *auditRecord) {
	if a == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if childID, ok := s.byClientID[idKey(clientID)]; ok {
		if p := s.pending[childID]; p != nil {
			p.audit = a
		}
	}
}

// flushAudit writes the audit entries settled under the lock (callers
// hold no lock).
func (s *Session) flushAudit() {
	s.mu.Lock()
	done := s.auditDone
	s.auditDone = nil
	s.mu.Unlock()
	if len(done) == 0 {
		return
	}
	// the answers were just handed to their streams' writers: let them
	// go out before the entries (a sequential client waits for them)
	runtime.Gosched()
	for _, a := range done {
		a.write()
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[:n]
}
