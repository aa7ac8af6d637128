package mcpauth

// Rate limits per principal, and per principal and tool: `rate <n>/<window>
// [tool <glob...>]`. Each (principal[, tool]) has a token bucket that holds
// n requests and refills n per window (golang.org/x/time/rate). The buckets
// of one limit live in a table bounded by maxRateKeys: when it is full, the
// least recently used bucket is dropped if it has refilled (a full bucket
// carries no state), else the new principal is refused (429) rather than
// anyone's bucket reset. Lock: limiter.mu, taken alone, never across I/O.

import (
	"container/list"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// RateLimit limits how often one principal may call (a tool).
type RateLimit struct {
	// Requests allowed per window (the bucket's size). Required.
	Requests int `json:"requests,omitempty"`

	// The window in which Requests refill. Required.
	Window caddy.Duration `json:"window,omitempty"`

	// Globs of tool names: the limit counts each matching tools/call per
	// principal and tool. Empty: every request of the principal counts.
	Tools []string `json:"tools,omitempty"`
}

// maxRateKeys bounds the buckets one limit keeps.
const maxRateKeys = 100_000

// limiter is one RateLimit's buckets.
type limiter struct {
	cfg     RateLimit
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*list.Element // key -> element of lru (value *bucket)
	lru     *list.List               // front: most recently used
}

type bucket struct {
	key string
	lim *rate.Limiter
}

func newLimiter(cfg RateLimit) *limiter {
	return &limiter{cfg: cfg, maxKeys: maxRateKeys, buckets: map[string]*list.Element{}, lru: list.New()}
}

// take spends one request of key's bucket; when it cannot, wait says how
// long until it could (0 and full: the table is full of active buckets).
func (l *limiter) take(key string, now time.Time) (ok bool, wait time.Duration, full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.buckets[key]
	if el == nil {
		if l.lru.Len() >= l.maxKeys {
			oldest := l.lru.Back()
			b := oldest.Value.(*bucket)
			if b.lim.TokensAt(now) < float64(l.cfg.Requests) {
				return false, time.Duration(l.cfg.Window), true
			}
			l.lru.Remove(oldest)
			delete(l.buckets, b.key)
		}
		every := time.Duration(l.cfg.Window) / time.Duration(l.cfg.Requests)
		el = l.lru.PushFront(&bucket{key: key, lim: rate.NewLimiter(rate.Every(every), l.cfg.Requests)})
		l.buckets[key] = el
	} else {
		l.lru.MoveToFront(el)
	}
	lim := el.Value.(*bucket).lim
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d, false
	}
	return true, 0, false
}

func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// checkRates spends the request against every limit that counts it; the
// first that refuses answers 429.
func (h *Handler) checkRates(w http.ResponseWriter, q *mcpreq.Request, principal string) bool {
	now := time.Now()
	for _, l := range h.limiters {
		keys := []string{principal}
		if len(l.cfg.Tools) > 0 {
			keys = keys[:0]
			for _, m := range q.Messages {
				if m.Method != "tools/call" {
					continue
				}
				for _, g := range l.cfg.Tools {
					if mcpreq.Glob(g, m.Name) {
						keys = append(keys, principal+"\x00"+m.Name)
						break
					}
				}
			}
		}
		for _, key := range keys {
			ok, wait, full := l.take(key, now)
			if ok {
				continue
			}
			what := fmt.Sprintf("%d requests per %s", l.cfg.Requests, shortDuration(time.Duration(l.cfg.Window)))
			if len(l.cfg.Tools) > 0 {
				what += " for tool " + strconv.Quote(q.First().Name)
			}
			if full {
				h.logger.Warn("rate limit table full of active principals; a new one was refused",
					zap.String("limit", what), zap.Int("keys", l.size()))
			}
			writeRateLimited(w, q, what, wait)
			return false
		}
	}
	return true
}

// writeRateLimited answers 429 with Retry-After and a JSON-RPC error an MCP
// client shows.
func writeRateLimited(w http.ResponseWriter, q *mcpreq.Request, what string, wait time.Duration) {
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	id := json.RawMessage("null")
	if m := q.First(); len(m.ID) > 0 && !q.Batch {
		id = m.ID
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{
		"code": -32000, "message": "rate limit exceeded: " + what + "; retry in " + strconv.Itoa(secs) + "s",
	}})
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(body)
}

// shortDuration renders 1m rather than 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
