package stdiobridge

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"
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
// cannot hold up a reload or stop. A variable so tests can shorten it.
var streamWriteTimeout = 10 * time.Second

// sseWriter writes Server-Sent Events and flushes after each batch.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
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
	w.WriteHeader(http.StatusOK)
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
	if s.buf.Len() > 0 {
		if _, err := s.w.Write(s.buf.Bytes()); err != nil {
			return err
		}
		s.buf.Reset()
	}
	return s.rc.Flush()
}
