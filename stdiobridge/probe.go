package stdiobridge

// Which protocol a route's stdio server speaks, found out once per process
// config: a throwaway sibling process is asked server/discover (2026-07-28,
// stateless); an answer that lists 2026-07-28 makes the route's pool
// children modern (requests passed through), and so does a recognized
// modern error (-32022, unsupported protocol version: a modern server,
// which the spec says not to fall back from; basic/versioning). Any other
// error or an exit makes them legacy (the bridge does the 2025 handshake
// and translates). The verdict lives in the table, so it holds until the
// process config changes, but for a probe that got no answer within
// probeTimeout (a cold npx fetching its package): that legacy verdict is a
// guess, probed again when a legacy handshake fails, at most once per
// backoff (reprobeMin, doubling up to reprobeMax).

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// probeTimeout bounds how long a sibling may take to answer server/discover
// (its start-up included: npx may fetch a package first).
// An atomic so that a test may change it while a route runs.
var probeTimeout atomic.Int64

func init() { probeTimeout.Store(int64(10 * time.Second)) }

// The backoff between re-probes of a guessed era.
const (
	reprobeMin = 10 * time.Second
	reprobeMax = 5 * time.Minute
)

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

func (s *probeSink) ChildMessage(line []byte) {
	e, err := parseEnvelope(line)
	if err != nil || !e.isResponse() || string(e.ID) != `"caddymcp-probe"` {
		return
	}
	b := append([]byte(nil), line...)
	s.once.Do(func() { s.got <- b })
}
func (s *probeSink) ChildOversized([]byte, int) {}
func (s *probeSink) ChildExited(error)          { s.once.Do(func() { close(s.got) }) }

var probeRequest = []byte(`{"jsonrpc":"2.0","id":"caddymcp-probe","method":"server/discover","params":{"_meta":{` +
	`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},` +
	`"io.modelcontextprotocol/clientInfo":{"name":"caddymcp-probe","version":"1"}}}}`)

// childEra is what the route's server speaks (eraLegacy, eraModern; not
// the client's era: clientModern), probing on first use. Concurrent first
// requests wait for one probe.
func (h poolServer) childEra(r *http.Request) int32 {
	switch h.ChildEra {
	case "legacy":
		return eraLegacy
	case "modern":
		return eraModern
	}
	t := h.table
	if v := t.childEra.Load(); v != eraUnknown {
		return v
	}
	t.probeMu.Lock()
	defer t.probeMu.Unlock()
	if v := t.childEra.Load(); v != eraUnknown {
		return v
	}
	v, guess := h.probe(r)
	t.guessed = guess
	t.childEra.Store(v)
	return v
}

// assumptionFailed is told that a legacy child refused the 2025 handshake:
// where the legacy verdict was a guess, the next request probes again
// (within the backoff).
func (h poolServer) assumptionFailed() {
	t := h.table
	if h.ChildEra != "" && h.ChildEra != "auto" {
		return
	}
	if !t.probeMu.TryLock() {
		return // a probe is deciding now
	}
	defer t.probeMu.Unlock()
	now := time.Now()
	if !t.guessed || t.childEra.Load() != eraLegacy || now.Before(t.reprobe) {
		return
	}
	t.backoff = min(max(2*t.backoff, reprobeMin), reprobeMax)
	t.reprobe = now.Add(t.backoff)
	t.childEra.Store(eraUnknown)
	h.logger.Info("the stdio server refused the 2025 handshake after a probe that got no answer; probing again",
		zap.String("command", h.Command), zap.Duration("next_reprobe_after", t.backoff))
}

// probe asks a sibling process server/discover; guess is true where no
// answer came (the verdict is legacy then).
func (h poolServer) probe(r *http.Request) (verdict int32, guess bool) {
	sink := &probeSink{got: make(chan []byte, 1)}
	proc, err := h.table.startChild(h.spawner.environ(r), sink, h.logger.With(zap.String("probe", h.Command)))
	if err != nil {
		h.logger.Warn("could not start a probe process; treating the server as 2025-era", zap.Error(err))
		return eraLegacy, true
	}
	defer func() {
		t := h.table
		t.ending.Add(1)
		go func() {
			defer t.ending.Done()
			proc.Terminate(time.Second)
		}()
	}()
	verdict, guess = eraLegacy, true
	wait := time.Duration(probeTimeout.Load())
	if proc.Send(probeRequest, wait) == nil {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case b, ok := <-sink.got:
			guess = false
			if ok {
				verdict = probeVerdict(b, h.logger)
			}
		case <-timer.C:
		case <-h.shutdown:
		}
	}
	name := map[int32]string{eraLegacy: "2025 (the bridge translates)", eraModern: "2026-07-28 (requests passed through)"}[verdict]
	h.logger.Info("probed the stdio server with server/discover", zap.String("command", h.Command), zap.String("speaks", name), zap.Bool("guess", guess))
	return verdict, guess
}

// probeVerdict reads the sibling's answer to server/discover.
func probeVerdict(b []byte, logger *zap.Logger) int32 {
	e, err := parseEnvelope(b)
	if err != nil {
		return eraLegacy
	}
	if e.Result != nil {
		var res struct {
			Versions []string `json:"supportedVersions"`
		}
		if json.Unmarshal(e.Result, &res) == nil && slices.Contains(res.Versions, modernVersion) {
			return eraModern
		}
		return eraLegacy
	}
	var re struct {
		Code int `json:"code"`
		Data struct {
			Supported []string `json:"supported"`
		} `json:"data"`
	}
	if json.Unmarshal(e.Error, &re) == nil && re.Code == codeUnsupportedProtocolVers {
		// a modern server that does not speak 2026-07-28: no fallback to
		// initialize (basic/versioning); its requests fail with its own
		// error, which names what it speaks
		logger.Warn("the stdio server is a modern MCP server that does not support "+modernVersion,
			zap.Strings("supported", re.Data.Supported))
		return eraModern
	}
	return eraLegacy
}
