package stdiobridge

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// BenchmarkMessagePath is the bridge's own work for one tools/call: take
// the client's message as mcpreq read it (mcpreq's parse is
// BenchmarkParse there), rewrite its id and register it, then route the
// child's answer back (restore the id, append it to the stream) and hand it
// to the SSE writer's buffer. No process and no HTTP: just the bridge.
func BenchmarkMessagePath(b *testing.B) {
	cfg := &settings{idleTimeout: time.Hour, shutdownTimeout: time.Second, maxMessageSize: 4 << 20, writeTimeout: time.Second}
	s := newSession(nil, "", "", cfg, zap.NewNop())
	request := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"test_simple_text","arguments":{}}}`)
	r := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(request))
	r.Header.Set("Mcp-Session-Id", "s")
	parsed := mcpreq.Get(r, 4<<20).Parsed()
	if len(parsed) != 1 {
		b.Fatal("mcpreq did not read the message")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		e, rerr := envelopeOf(parsed[0])
		if rerr != nil {
			b.Fatal(rerr)
		}
		s.mu.Lock()
		st := s.newStreamLocked(false)
		s.mu.Unlock()
		kick, _ := s.attachWriter(st) // the POST's SSE writer
		msg, err := s.startRequest(e, st)
		if err != nil {
			b.Fatal(err)
		}
		var sent struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(msg, &sent)
		answer := `{"jsonrpc":"2.0","id":` + string(sent.ID) + `,"result":{"content":[{"type":"text","text":"This is a simple text response for testing."}]}}`
		s.ChildMessage([]byte(answer))
		s.mu.Lock()
		evs, _ := st.since(0)
		if len(evs) != 1 || !st.done {
			b.Fatalf("stream: %d events, done %v", len(evs), st.done)
		}
		var sw sseWriter
		sw.add(eventID(st.id, evs[0].seq), evs[0].data)
		s.mu.Unlock()
		s.detachWriter(st, kick)
		if i%1000 == 0 {
			// completed streams are retained (bounded); keep the map small
			s.mu.Lock()
			s.finished = nil
			s.streams = map[string]*stream{s.standalone.id: s.standalone}
			s.mu.Unlock()
		}
	}
}
