package stdiobridge

// Which protocol a route's stdio server speaks, found out once per process
// config: a throwaway sibling process is asked server/discover (2026-07-28,
// stateless); an answer that lists 2026-07-28 makes the route's pool
// children modern (requests passed through), anything else within
// probeTimeout (an error, silence, an exit) legacy (the bridge does the
// 2025 handshake and translates). The verdict lives in the table, so it
// holds until the process config changes.

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// probeTimeout bounds how long a sibling may take to answer server/discover
// (its start-up included: npx may fetch a package first).
var probeTimeout = 10 * time.Second

const (
	eraUnknown int32 = iota
	eraLegacy
	eraModern
)

// probeSink collects the sibling's answer.
type probeSink struct {
	once sync.Once
	got  chan []byte
}

func (s *probeSink) childMessage(line []byte) {
	e, err := parseEnvelope(line)
	if err != nil || !e.isResponse() || string(e.ID) != `"caddymcp-probe"` {
		return
	}
	b := append([]byte(nil), line...)
	s.once.Do(func() { s.got <- b })
}
func (s *probeSink) childOversized([]byte, int) {}
func (s *probeSink) childExited(error)          { s.once.Do(func() { close(s.got) }) }

var probeRequest = []byte(`{"jsonrpc":"2.0","id":"caddymcp-probe","method":"server/discover","params":{"_meta":{` +
	`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},` +
	`"io.modelcontextprotocol/clientInfo":{"name":"caddymcp-probe","version":"1"}}}}`)

// era returns the route's verdict, probing on first use. Concurrent first
// requests wait for one probe.
func (h *Handler) era(r *http.Request) int32 {
	switch h.ChildEra {
	case "legacy":
		return eraLegacy
	case "modern":
		return eraModern
	}
	t := h.table
	if v := t.era.Load(); v != eraUnknown {
		return v
	}
	t.probeMu.Lock()
	defer t.probeMu.Unlock()
	if v := t.era.Load(); v != eraUnknown {
		return v
	}
	v := h.probe(r)
	t.era.Store(v)
	return v
}

func (h *Handler) probe(r *http.Request) int32 {
	sink := &probeSink{got: make(chan []byte, 1)}
	proc, err := h.startChild(r, sink, h.logger.With(zap.String("probe", h.Command)))
	if err != nil {
		h.logger.Warn("could not start a probe process; treating the server as 2025-era", zap.Error(err))
		return eraLegacy
	}
	defer func() {
		t := h.table
		t.ending.Add(1)
		go func() {
			defer t.ending.Done()
			proc.terminate(time.Second)
		}()
	}()
	verdict := eraLegacy
	if proc.send(probeRequest, probeTimeout) == nil {
		timer := time.NewTimer(probeTimeout)
		defer timer.Stop()
		select {
		case b, ok := <-sink.got:
			if ok {
				e, err := parseEnvelope(b)
				var res struct {
					Versions []string `json:"supportedVersions"`
				}
				if err == nil && e.Result != nil && json.Unmarshal(e.Result, &res) == nil && slices.Contains(res.Versions, modernVersion) {
					verdict = eraModern
				}
			}
		case <-timer.C:
		case <-h.shutdown:
		}
	}
	name := map[int32]string{eraLegacy: "2025 (the bridge translates)", eraModern: "2026-07-28 (requests passed through)"}[verdict]
	h.logger.Info("probed the stdio server with server/discover", zap.String("command", h.Command), zap.String("speaks", name))
	return verdict
}
