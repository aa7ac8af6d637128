package stdiobridge

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// event is one message on a stream, numbered within it.
type event struct {
	seq  uint64
	data []byte
}

// eventID renders the SSE id of an event: <stream id>_<sequence>.
func eventID(streamID string, seq uint64) string {
	return streamID + "_" + strconv.FormatUint(seq, 10)
}

// parseEventID splits a Last-Event-ID into stream id and sequence.
func parseEventID(s string) (streamID string, seq uint64, ok bool) {
	i := strings.LastIndexByte(s, '_')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return s[:i], seq, true
}

// streamWriteTimeout bounds every write of an SSE stream: a client that
// stops reading (a zero receive window) cannot pin the handler, and so
// cannot hold up a reload or stop.
var streamWriteTimeout = 10 * time.Second

// sseWriter writes Server-Sent Events and flushes after each batch. The
// status line and headers go out with the first flush (or finish), so an
// answer at hand by then leaves in one write.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	buf     bytes.Buffer
	started bool // the headers were written
}

func newSSEWriter(w http.ResponseWriter, sessionID string) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	if sessionID != "" {
		h.Set("Mcp-Session-Id", sessionID)
	}
	// a stream outlives the server's write timeout; each write has its own
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	return &sseWriter{w: w, rc: rc}
}

// add queues one event; data must not contain newlines (JSON lines don't).
func (s *sseWriter) add(id string, data []byte) {
	if id != "" {
		s.buf.WriteString("id: ")
		s.buf.WriteString(id)
		s.buf.WriteString("\n")
	}
	s.buf.WriteString("data: ")
	s.buf.Write(data)
	s.buf.WriteString("\n\n")
}

// comment queues an SSE comment (a keep-alive).
func (s *sseWriter) comment(text string) {
	s.buf.WriteString(": ")
	s.buf.WriteString(text)
	s.buf.WriteString("\n\n")
}

// flush writes what is queued, within streamWriteTimeout.
func (s *sseWriter) flush() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if !s.started {
		s.started = true
		s.w.WriteHeader(http.StatusOK)
	}
	if s.buf.Len() > 0 {
		if _, err := s.w.Write(s.buf.Bytes()); err != nil {
			return err
		}
		s.buf.Reset()
	}
	return s.rc.Flush()
}

// finish writes what is queued as the whole stream: when nothing was
// written yet, with a Content-Length, so that status line, headers and
// events leave in one write and no chunk framing follows.
func (s *sseWriter) finish() error {
	if !s.started {
		s.w.Header().Set("Content-Length", strconv.Itoa(s.buf.Len()))
	}
	return s.flush()
}

// firstEventWait is how long a POST's stream waits for its first events
// before sending its headers (and priming event) alone: a child that
// answers within it has its answer sent with the headers in one write,
// while a client of a long call still sees the stream open at once, well
// within any client's header timeout.
const firstEventWait = 50 * time.Millisecond

// writeStream sends a stream's events after seq `after` as SSE until the
// stream is complete, the client goes away, another writer takes the
// stream over (resumption), the session ends, the token that opened the
// stream expires, or the server shuts down (then what is already there is
// still delivered, within the write deadline). Every write has a deadline.
func (h sessionServer) writeStream(w http.ResponseWriter, r *http.Request, s *Session, st *stream, after uint64, sessionID string) {
	sw := newSSEWriter(w, sessionID)
	kick, prime := s.attachWriter(st)
	defer s.detachWriter(st, kick)
	if prime {
		// lets the client resume from here if the stream breaks (SEP-1699)
		sw.add(eventID(st.id, after), nil)
	}
	// a POST's stream waits briefly for its answer before sending headers
	// (see firstEventWait); a GET's opens at once
	var firstWait <-chan time.Time
	if r.Method == http.MethodPost {
		t := time.NewTimer(firstEventWait)
		defer t.Stop()
		firstWait = t.C
	} else if err := sw.flush(); err != nil {
		return
	}
	var expired <-chan time.Time
	if exp := tokenExpiry(r); !exp.IsZero() {
		t := time.NewTimer(time.Until(exp))
		defer t.Stop()
		expired = t.C
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	var batch []event
	shuttingDown := false
	for {
		var evicted, done, closed bool
		batch, evicted, done, closed = s.snapshot(st, after, batch)
		if evicted {
			s.logger.Warn("stream fell behind its buffer (client not reading); closed", zap.String("stream", st.id))
			return
		}
		for _, ev := range batch {
			sw.add(eventID(st.id, ev.seq), ev.data)
			after = ev.seq
		}
		if !sw.started && (done || closed || shuttingDown) {
			// the whole stream is at hand: one write
			if err := sw.finish(); err != nil {
				h.detached(s, st)
				return
			}
			s.delivered(st, after)
			return
		}
		if len(batch) > 0 {
			if err := sw.flush(); err != nil {
				h.detached(s, st)
				return
			}
			s.delivered(st, after)
		}
		if done || closed || shuttingDown {
			return
		}
		select {
		case <-firstWait:
			firstWait = nil
			if err := sw.flush(); err != nil { // headers and the priming event
				h.detached(s, st)
				return
			}
		case <-st.notify:
		case <-s.closedCh:
		case <-kick:
			return
		case <-h.shutdown:
			shuttingDown = true // one more pass delivers what endStreams settled
		case <-expired:
			s.logger.Info("stream ended: the token that opened it expired", zap.String("stream", st.id))
			return
		case <-r.Context().Done():
			h.detached(s, st)
			return
		case <-keepalive.C:
			sw.comment("keep-alive")
			if err := sw.flush(); err != nil {
				h.detached(s, st)
				return
			}
		}
	}
}

// attachWriter makes the caller the stream's writer, evicting another one
// (a resumption takes over), and reports whether to send a priming event.
func (s *Session) attachWriter(st *stream) (kick chan struct{}, prime bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kick = make(chan struct{})
	if st.writer != nil {
		close(st.writer)
	}
	st.writer = kick
	return kick, s.protocolVersion >= "2025-11-25"
}

func (s *Session) detachWriter(st *stream, kick chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.writer == kick {
		st.writer = nil
	}
	st.pinned = false
}

func (s *Session) delivered(st *stream, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.delivered = max(st.delivered, seq)
}

// detached handles a client that went away from an unfinished request
// stream: a client that can resume gets resumeGrace to do so, others'
// requests are cancelled at once.
func (h sessionServer) detached(s *Session, st *stream) {
	if st.standalone {
		return
	}
	s.mu.Lock()
	resumable := s.protocolVersion >= "2025-11-25"
	done := st.done
	s.mu.Unlock()
	if done {
		return
	}
	if !resumable {
		s.cancelStream(st, "client disconnected")
		return
	}
	time.AfterFunc(resumeGrace, func() {
		s.mu.Lock()
		abandoned := st.writer == nil && !st.done && !s.closed
		s.mu.Unlock()
		if abandoned {
			s.cancelStream(st, "client disconnected and did not resume")
		}
	})
}
