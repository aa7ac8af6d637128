package mcpauth

// Rate limits per principal, and per principal and tool: `rate <n>/<window>
// [tool <glob...>]`. Each (principal[, tool]) has a token bucket that holds
// n requests and refills n per window (golang.org/x/time/rate).
//
// What a request spends: every JSON-RPC message counts as it would sent
// alone (a batch of 50 spends 50; a GET or DELETE spends 1), and each
// tools/call of a per-tool limit spends from its tool's bucket. A request
// spends from every limit at once or from none: one that some limit
// refuses takes nothing from the others, and mcp_auth charges only what
// its scope rules let through.
//
// Bounds: the buckets of one limit live in a table of maxRateKeys. In a
// per-tool limit one principal holds at most maxToolKeys buckets of named
// tools; its calls of any further name share one "other" bucket of its
// own, so no principal can take more than maxToolKeys+1 of the table, and
// invented names cost their inventor only. A full table drops its least
// recently used bucket to make room (it is reset: generous to one
// principal, never a refusal of another; the table fills only from
// thousands of principals, each of whom already has a budget of its own).
//
// Lock: limiter.mu, never across I/O; checkRates holds a handler's
// limiters' locks together, taken in config order.

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
	"github.com/caddymcp/caddymcp/internal/rpccode"
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

// maxToolKeys bounds the named tool buckets one principal holds in a
// per-tool limit; its calls of further names share its "other" bucket.
const maxToolKeys = 32

// limiter is one RateLimit's buckets.
type limiter struct {
	cfg     RateLimit
	maxKeys int

	mu       sync.Mutex
	buckets  map[bucketKey]*list.Element // -> element of lru (value *bucket)
	lru      *list.List                  // front: most recently used
	named    map[string]int              // principal -> its named tool buckets in the table
	resets   int                         // active buckets dropped for room since the last warning
	warnedAt time.Time
}

// bucketKey names a bucket: a principal's (tool ""), a principal's for one
// tool, or a principal's shared bucket for tools beyond maxToolKeys.
type bucketKey struct {
	principal string
	tool      string
	other     bool
}

type bucket struct {
	key bucketKey
	lim *rate.Limiter
}

// charge is what a request spends of one bucket.
type charge struct {
	key bucketKey
	n   int
}

func newLimiter(cfg RateLimit) *limiter {
	return &limiter{cfg: cfg, maxKeys: maxRateKeys, buckets: map[bucketKey]*list.Element{}, lru: list.New(), named: map[string]int{}}
}

// plan is what q spends of l's buckets (nothing: l does not count q).
// Called with l.mu held.
func (l *limiter) plan(q *mcpreq.Request, principal string) []charge {
	if len(l.cfg.Tools) == 0 {
		return []charge{{bucketKey{principal: principal}, max(1, len(q.Messages))}}
	}
	// at most maxToolKeys+1 distinct keys: found by looking through out
	var out []charge
	find := func(k bucketKey) int {
		for i := range out {
			if out[i].key == k {
				return i
			}
		}
		return -1
	}
	fresh := 0 // named buckets this plan would add
	for _, m := range q.Messages {
		if m.Method != "tools/call" || !l.counts(m.Name) {
			continue
		}
		key := bucketKey{principal: principal, tool: m.Name}
		i := find(key)
		if _, held := l.buckets[key]; !held && i < 0 {
			if l.named[principal]+fresh >= maxToolKeys {
				key = bucketKey{principal: principal, other: true}
				i = find(key)
			} else {
				fresh++
			}
		}
		if i >= 0 {
			out[i].n++
			continue
		}
		out = append(out, charge{key, 1})
	}
	return out
}

// every is how often a bucket of l gains a request.
func (l *limiter) every() time.Duration {
	return time.Duration(l.cfg.Window) / time.Duration(l.cfg.Requests)
}

func (l *limiter) counts(name string) bool {
	for _, g := range l.cfg.Tools {
		if mcpreq.Glob(g, name) {
			return true
		}
	}
	return false
}

// fits reports whether every charge can be spent now; if not, the first
// that cannot and how long until it could (the window, if it never can:
// more than the bucket holds). Called with l.mu held; changes nothing.
func (l *limiter) fits(plan []charge, now time.Time) (ok bool, refused charge, wait time.Duration) {
	every := l.every()
	for _, c := range plan {
		if c.n > l.cfg.Requests {
			return false, c, time.Duration(l.cfg.Window)
		}
		avail := float64(l.cfg.Requests)
		if el := l.buckets[c.key]; el != nil {
			avail = el.Value.(*bucket).lim.TokensAt(now)
		}
		if short := float64(c.n) - avail; short > 0 {
			return false, c, time.Duration(math.Ceil(short * float64(every)))
		}
	}
	return true, charge{}, 0
}

// spend takes what fits said fits. Called with l.mu held.
func (l *limiter) spend(plan []charge, now time.Time) {
	for _, c := range plan {
		el := l.buckets[c.key]
		if el == nil {
			el = l.add(c.key, now)
		} else {
			l.lru.MoveToFront(el)
		}
		el.Value.(*bucket).lim.AllowN(now, c.n)
	}
}

// add makes key's bucket, dropping the least recently used one if the
// table is full.
func (l *limiter) add(key bucketKey, now time.Time) *list.Element {
	if l.lru.Len() >= l.maxKeys {
		oldest := l.lru.Back()
		b := oldest.Value.(*bucket)
		if b.lim.TokensAt(now) < float64(l.cfg.Requests) {
			l.resets++ // it carried state: its principal gets a fresh bucket
		}
		l.lru.Remove(oldest)
		delete(l.buckets, b.key)
		if len(l.cfg.Tools) > 0 && !b.key.other {
			if l.named[b.key.principal]--; l.named[b.key.principal] <= 0 {
				delete(l.named, b.key.principal)
			}
		}
	}
	if len(l.cfg.Tools) > 0 && !key.other {
		l.named[key.principal]++
	}
	every := l.every()
	el := l.lru.PushFront(&bucket{key: key, lim: rate.NewLimiter(rate.Every(every), l.cfg.Requests)})
	l.buckets[key] = el
	return el
}

// checkRates spends q against every limit that counts it, all or nothing;
// when one refuses, it answers 429 and nothing is spent.
func (h *Handler) checkRates(w http.ResponseWriter, q *mcpreq.Request, principal string) bool {
	for _, l := range h.limiters {
		l.mu.Lock()
	}
	now := time.Now() // under the locks: each bucket sees time go forward
	plans := make([][]charge, len(h.limiters))
	var refusedBy *limiter
	var refused charge
	var wait time.Duration
	for i, l := range h.limiters {
		plans[i] = l.plan(q, principal)
		var ok bool
		if ok, refused, wait = l.fits(plans[i], now); !ok {
			refusedBy = l
			break
		}
	}
	var resets, size int
	for i, l := range h.limiters {
		if refusedBy == nil {
			l.spend(plans[i], now)
		}
		if l.resets > 0 && now.Sub(l.warnedAt) >= time.Minute {
			resets, size = resets+l.resets, max(size, l.lru.Len())
			l.resets, l.warnedAt = 0, now
		}
	}
	for _, l := range h.limiters {
		l.mu.Unlock()
	}
	if resets > 0 {
		h.logger.Warn("rate limit table full: least recently used buckets were dropped for new ones (their principals start afresh)",
			zap.Int("dropped", resets), zap.Int("keys", size))
	}
	if refusedBy == nil {
		return true
	}
	what := fmt.Sprintf("%d requests per %s", refusedBy.cfg.Requests, shortDuration(time.Duration(refusedBy.cfg.Window)))
	if len(refusedBy.cfg.Tools) > 0 {
		if refused.key.other {
			what += " for tools beyond the " + strconv.Itoa(maxToolKeys) + " this principal called first"
		} else {
			what += " for tool " + strconv.Quote(refused.key.tool)
		}
	}
	if refused.n > refusedBy.cfg.Requests {
		what = "a batch of " + strconv.Itoa(refused.n) + " requests exceeds " + what
	}
	writeRateLimited(w, q, what, wait)
	return false
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
		"code": rpccode.RateLimited, "message": "rate limit exceeded: " + what + "; retry in " + strconv.Itoa(secs) + "s",
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
