package stdiobridge

// The 2025 session transport (MCP 2025-03-26, 2025-06-18, 2025-11-25):
// initialize starts a session with a child of its own, Mcp-Session-Id
// names it, GET opens its standalone stream, DELETE ends it, batches are
// served where the version has them, and `stateless` gives each message a
// child of its own. Streams (sse.go) carry the answers and resume with
// Last-Event-ID.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"go.uber.org/zap"
)

// serveMessage serves one POSTed 2025 message (not a batch): an
// initialize starts a session, a stateless route's message gets a child of
// its own, any other goes to its session.
func (h sessionServer) serveMessage(w http.ResponseWriter, r *http.Request, e *envelope, version string) {
	if version != "" && !versionSupported(version) {
		// a newer client probing (server/discover) learns what we speak
		// and falls back to initialize; nothing is spawned
		writeRPCError(w, http.StatusBadRequest, e.ID, unsupportedVersion(version))
		return
	}
	if e.Method == "initialize" {
		if !e.isRequest() {
			badRequest(w, nil, "initialize must be a request")
			return
		}
		if r.Header.Get("Mcp-Session-Id") != "" {
			badRequest(w, e.ID, "initialize must not carry an Mcp-Session-Id")
			return
		}
		h.initialize(w, r, e)
		return
	}
	if h.Stateless {
		h.serveStateless(w, r, e, version)
		return
	}
	s := h.lookup(w, r, e.ID)
	if s == nil {
		return
	}
	h.forward(w, r, s, e)
}

// lookup finds the request's session; it writes the error itself.
func (h sessionServer) lookup(w http.ResponseWriter, r *http.Request, id json.RawMessage) *Session {
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		badRequest(w, id, "Mcp-Session-Id header is required")
		return nil
	}
	s := h.table.get(sid)
	if s == nil || s.subject != principal(r) {
		if s != nil {
			h.logger.Warn("session id presented by another user; answered as unknown",
				zap.String("session", sid), zap.String("user", userForLog(principal(r))))
		}
		sessionNotFound(w, id)
		return nil
	}
	s.touch()
	return s
}

// forward sends one non-initialize message of a live session to its child.
func (h sessionServer) forward(w http.ResponseWriter, r *http.Request, s *Session, e *envelope) {
	if tc := traceContext(r.Context()); tc != nil && e.isRequest() {
		// only with tracing on: it costs a decode of the params
		name, _ := nameOf(e.Method, paramsMap(e.Params))
		annotateSpan(r, e.Method, name)
		if params, ok := withTraceMeta(e.Params, tc); ok {
			out := *e
			out.Params, out.raw, out.idSpan = params, nil, span{}
			e = &out
		}
	}
	switch {
	case e.isRequest():
		s.mu.Lock()
		st := s.newStreamLocked(false)
		s.mu.Unlock()
		msg, err := s.outgoing(e, st)
		if err != nil {
			sessionNotFound(w, e.ID)
			return
		}
		if a := h.newAudit(r, "2025", e.Method, e.ID, e.Params); a != nil {
			a.pid = s.proc.Pid()
			s.setAudit(e.ID, a)
		}
		if err := s.proc.Send(msg, s.cfg.writeTimeout); err != nil {
			s.abandon(e)
			h.childUnavailable(w, e.ID, err)
			return
		}
		h.writeStream(w, r, s, st, 0, "")
	case e.Method == "notifications/roots/list_changed" && !s.cfg.rootsForward:
		w.WriteHeader(http.StatusAccepted) // the child never saw the client's roots
	default:
		msg, _ := s.outgoing(e, nil)
		if err := s.proc.Send(msg, s.cfg.writeTimeout); err != nil {
			h.childUnavailable(w, nil, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// spawn starts a session's child with the per-request environment.
func (h sessionServer) spawn(r *http.Request, s *Session) error {
	proc, err := h.table.startChild(h.spawner.environ(r), s, s.logger)
	if err != nil {
		return err
	}
	s.proc = proc
	return nil
}

func (h sessionServer) initialize(w http.ResponseWriter, r *http.Request, e *envelope) {
	h.warmUp()
	user := principal(r)
	key := mcpreq.LimitKey(r, user)
	if why := h.table.reserve(key); why != admitted {
		h.refuse(w, e.ID, why, key)
		return
	}
	table := h.table
	if h.Stateless {
		table = nil
	}
	s := newSession(table, user, key, h.cfg, h.logger)
	s.observe = h.observe
	s.ending = &h.table.ending
	prewarmed := false
	if !h.Stateless {
		if c := h.table.pool.take(); c != nil && c.sink.adopt(s) {
			s.proc, prewarmed = c.proc, true
		}
	}
	if !prewarmed {
		if err := h.spawn(r, s); err != nil {
			h.table.release(key)
			h.spawnFailed(w, e.ID, err)
			return
		}
	}
	if h.Stateless {
		// the slot is held until the child has exited
		s.onExit = func() { h.table.release(key) }
		defer s.end("stateless request answered")
	} else {
		if !h.table.add(s) {
			// the route was removed or changed meanwhile
			s.end("route removed or changed during initialize")
			h.refuse(w, e.ID, refusedStopped, key)
			return
		}
		s.mu.Lock()
		if s.closed {
			h.table.remove(s)
		}
		s.mu.Unlock()
		s.logger.Info("session started", zap.Int("pid", s.proc.Pid()), zap.String("user", userForLog(s.subject)),
			zap.String("command", h.Command), zap.Bool("prewarmed", prewarmed), h.sandboxField(s.proc))
	}
	var p struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	_ = json.Unmarshal(e.Params, &p)
	if !s.cfg.rootsForward {
		e = withChildCapabilities(e, s.cfg)
	}
	s.mu.Lock()
	s.protocolVersion = p.ProtocolVersion // until the child answers
	st := s.newStreamLocked(false)
	s.initStream = st
	s.mu.Unlock()
	msg, err := s.startRequest(e, st)
	if err == nil {
		err = s.proc.Send(msg, s.cfg.writeTimeout)
	}
	if err != nil {
		s.end("initialize could not be sent")
		if errors.Is(err, errSessionClosed) || h.table.isStopped() {
			// ended meanwhile (route removed or changed, server stopping)
			h.refuse(w, e.ID, refusedStopped, key)
			return
		}
		h.logger.Error("initialize could not be sent to the server process; answered 500", zap.Error(err))
		writeRPCError(w, http.StatusInternalServerError, e.ID, &rpcError{Code: codeInternalError, Message: "MCP server process is not accepting messages"})
		return
	}
	s.markStarted()
	sid := s.id
	if h.Stateless {
		sid = ""
	}
	h.writeStream(w, r, s, st, 0, sid)
}

// serveStateless answers one message with a child of its own: the bridge
// initializes the child itself, then forwards the message. The child holds
// its max_sessions slot until it has exited.
func (h sessionServer) serveStateless(w http.ResponseWriter, r *http.Request, e *envelope, version string) {
	user := principal(r)
	key := mcpreq.LimitKey(r, user)
	if why := h.table.reserve(key); why != admitted {
		h.refuse(w, e.ID, why, key)
		return
	}
	s := newSession(nil, user, key, h.cfg, h.logger)
	s.observe = h.observe
	s.ending = &h.table.ending
	if err := h.spawn(r, s); err != nil {
		h.table.release(key)
		h.spawnFailed(w, e.ID, err)
		return
	}
	s.onExit = func() { h.table.release(key) }
	defer s.end("stateless request answered")
	if version == "" {
		version = defaultVersion
	}
	if err := s.handshake(r, version); err != nil {
		h.logger.Warn("stateless handshake with server process failed; answered 502", zap.Error(err))
		writeRPCError(w, http.StatusBadGateway, e.ID, &rpcError{Code: codeInternalError, Message: "MCP server process did not initialize"})
		return
	}
	h.forward(w, r, s, e)
}

// handshake initializes a stateless child on the client's behalf.
func (s *Session) handshake(r *http.Request, version string) error {
	params, _ := json.Marshal(initializeParams(version, s.cfg.childCapabilities(json.RawMessage(`{}`)), "caddymcp-stateless"))
	e := envelope{JSONRPC: "2.0", ID: json.RawMessage(`"caddymcp-init"`), Method: "initialize", Params: params}
	s.mu.Lock()
	st := s.newStreamLocked(false)
	s.mu.Unlock()
	msg, err := s.startRequest(&e, st)
	if err != nil {
		return err
	}
	if err := s.proc.Send(msg, s.cfg.writeTimeout); err != nil {
		return err
	}
	timeout := time.NewTimer(handshakeTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		done, closed := st.done, s.closed
		s.mu.Unlock()
		if done {
			break
		}
		if closed {
			return errSessionClosed
		}
		select {
		case <-st.notify:
		case <-s.closedCh:
		case <-r.Context().Done():
			return r.Context().Err()
		case <-timeout.C:
			return fmt.Errorf("no initialize response within %s", handshakeTimeout)
		}
	}
	return s.proc.Send(initializedNotification, s.cfg.writeTimeout)
}

// serveBatch handles a JSON-RPC batch (its messages as mcpreq read them;
// none for an empty one): allowed only for protocol versions
// that have batching (2025-03-26 and before).
func (h sessionServer) serveBatch(w http.ResponseWriter, r *http.Request, raws []mcpreq.Message, version string) {
	if h.Stateless {
		badRequest(w, nil, "JSON-RPC batches are not supported on a stateless endpoint")
		return
	}
	s := h.lookup(w, r, nil)
	if s == nil {
		return
	}
	if version == "" {
		s.mu.Lock()
		version = s.protocolVersion
		s.mu.Unlock()
	}
	if version > "2025-03-26" {
		badRequest(w, nil, "JSON-RPC batches are not supported in protocol version "+version)
		return
	}
	if len(raws) == 0 {
		badRequest(w, nil, "empty JSON-RPC batch")
		return
	}
	if len(raws) > maxBatchLength {
		badRequest(w, nil, "JSON-RPC batch of "+strconv.Itoa(len(raws))+" messages; at most "+strconv.Itoa(maxBatchLength))
		return
	}
	envs := make([]*envelope, 0, len(raws))
	for _, raw := range raws {
		e, rerr := envelopeOf(raw)
		if rerr != nil {
			writeRPCError(w, http.StatusBadRequest, nil, rerr)
			return
		}
		if e.Method == "initialize" {
			badRequest(w, nil, "initialize must not be part of a batch")
			return
		}
		envs = append(envs, e)
	}
	s.mu.Lock()
	st := s.newStreamLocked(false)
	s.mu.Unlock()
	// every request is registered on the stream before any is sent: a
	// child that answers the first at once must not find the stream owing
	// nothing (it would end before the other answers)
	requests := 0
	msgs := make([][]byte, len(envs))
	for i, e := range envs {
		if e.isRequest() {
			requests++
		}
		msg, err := s.outgoing(e, st)
		if err != nil {
			for _, sent := range envs[:i] {
				s.abandon(sent)
			}
			sessionNotFound(w, nil)
			return
		}
		msgs[i] = msg
	}
	for i, msg := range msgs {
		if err := s.proc.Send(msg, s.cfg.writeTimeout); err != nil {
			for _, e := range envs[i:] {
				s.abandon(e)
			}
			h.childUnavailable(w, nil, err)
			return
		}
	}
	if requests == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	h.writeStream(w, r, s, st, 0, "")
}

func (h sessionServer) serveGET(w http.ResponseWriter, r *http.Request) {
	if _, sseOK := accepts(r.Header.Values("Accept")); !sseOK {
		writeRPCError(w, http.StatusNotAcceptable, nil, &rpcError{Code: codeInvalidRequest, Message: "Not Acceptable: Accept must include text/event-stream"})
		return
	}
	s := h.lookup(w, r, nil)
	if s == nil {
		return
	}
	s.mu.Lock()
	st, after := s.standalone, s.standalone.delivered
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		sid, seq, ok := parseEventID(last)
		if st = s.streams[sid]; !ok || st == nil {
			s.mu.Unlock()
			badRequest(w, nil, "Last-Event-ID names a stream this session does not have (any more)")
			return
		}
		if seq >= st.next {
			s.mu.Unlock()
			badRequest(w, nil, "Last-Event-ID names an event this stream has not sent")
			return
		}
		after = seq
	}
	s.mu.Unlock()
	h.writeStream(w, r, s, st, after, "")
}

func (h sessionServer) serveDELETE(w http.ResponseWriter, r *http.Request) {
	s := h.lookup(w, r, nil)
	if s == nil {
		return
	}
	s.end("client sent DELETE")
	w.WriteHeader(http.StatusNoContent)
}

func sessionNotFound(w http.ResponseWriter, id json.RawMessage) {
	writeRPCError(w, http.StatusNotFound, id, &rpcError{Code: -32001, Message: "Session not found"})
}

// withChildCapabilities gives the child the client's initialize with the
// route's roots in its capabilities (see settings.childCapabilities).
func withChildCapabilities(e *envelope, cfg *settings) *envelope {
	var params map[string]json.RawMessage
	if json.Unmarshal(e.Params, &params) != nil || params == nil {
		return e
	}
	params["capabilities"] = cfg.childCapabilities(params["capabilities"])
	out := *e
	out.Params, _ = json.Marshal(params)
	out.raw, out.idSpan = nil, span{}
	return &out
}
