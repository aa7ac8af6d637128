package mcpauth

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// take spends plan if it fits: checkRates for one limit.
func (l *limiter) take(plan []charge, now time.Time) (ok bool, refused charge, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok, refused, wait = l.fits(plan, now); ok {
		l.spend(plan, now)
	}
	return ok, refused, wait
}

func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

func one(principal string) []charge { return []charge{{bucketKey{principal: principal}, 1}} }

// Exact counts: n requests per window pass from a fresh bucket, the next
// waits window/n; buckets are per key.
func TestLimiterCounts(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 5, Window: caddy.Duration(time.Minute)})
	now := time.Unix(1_000_000, 0)
	for i := 0; i < 5; i++ {
		if ok, _, _ := l.take(one("ann"), now); !ok {
			t.Fatalf("request %d of 5 refused", i+1)
		}
	}
	ok, _, wait := l.take(one("ann"), now)
	if ok || wait != 12*time.Second {
		t.Fatalf("6th request: ok=%v wait=%s, want refused for 12s", ok, wait)
	}
	if ok, _, _ := l.take(one("bob"), now); !ok {
		t.Fatal("another principal shares ann's bucket")
	}
	if ok, _, _ := l.take(one("ann"), now.Add(12*time.Second)); !ok {
		t.Fatal("no refill after window/n")
	}
	if ok, _, _ := l.take(one("ann"), now.Add(12*time.Second)); ok {
		t.Fatal("more than one refill after window/n")
	}
	// over a whole window: exactly 5 more
	passed := 0
	for s := 13; s <= 72; s++ {
		if ok, _, _ := l.take(one("ann"), now.Add(time.Duration(s)*time.Second)); ok {
			passed++
		}
	}
	if passed != 5 {
		t.Fatalf("%d requests passed in the next minute, want 5", passed)
	}
	// a charge of several is all or nothing: 3 of the 2 left fail and
	// take nothing, 2 pass
	later := now.Add(time.Hour)
	l.take(one("cy"), later)
	l.take(one("cy"), later)
	l.take(one("cy"), later)
	if ok, _, wait := l.take([]charge{{bucketKey{principal: "cy"}, 3}}, later); ok || wait != 12*time.Second {
		t.Fatalf("3 of 2 left: ok=%v wait=%s", ok, wait)
	}
	if ok, _, _ := l.take([]charge{{bucketKey{principal: "cy"}, 2}}, later); !ok {
		t.Fatal("the refused charge spent tokens")
	}
	if ok, _, wait := l.take([]charge{{bucketKey{principal: "cy"}, 6}}, later); ok || wait != time.Minute {
		t.Fatalf("6 in a bucket of 5: ok=%v wait=%s, want refused for the window", ok, wait)
	}
}

// 10 000 distinct principals leave the table within its bound, and memory
// with it; a full table refuses no one: it drops its least recently used
// bucket for the new one (that principal starts afresh).
func TestLimiterMemoryBounded(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 2, Window: caddy.Duration(time.Minute)})
	l.maxKeys = 1000
	now := time.Unix(1_000_000, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 10_000; i++ {
		if ok, _, _ := l.take(one("p"+strconv.Itoa(i)), now); !ok {
			t.Fatalf("principal %d refused by a full table", i)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if l.size() != 1000 || l.resets != 9000 {
		t.Fatalf("%d buckets kept (bound 1000), %d active ones dropped (want 9000)", l.size(), l.resets)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Fatalf("heap grew %d bytes for 1000 buckets", grew)
	}
	// the most recent 1000 kept their state; p0 was dropped
	if ok, _, _ := l.take(one("p9999"), now); !ok {
		t.Fatal("p9999's second request refused")
	}
	if ok, _, _ := l.take(one("p9999"), now); ok {
		t.Fatal("p9999's bucket was reset")
	}
	t.Logf("10 000 principals: %d buckets kept; heap %+d bytes", l.size(), int64(after.HeapAlloc)-int64(before.HeapAlloc))
}

// In a per-tool limit, one principal's invented names take at most
// maxToolKeys buckets of their own and one shared; a table full of many
// principals' buckets still refuses no principal's first call.
func TestLimiterToolKeysPerPrincipal(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 1, Window: caddy.Duration(time.Hour), Tools: []string{"*"}})
	l.maxKeys = 200
	now := time.Unix(1_000_000, 0)
	callOf := func(name string) *mcpreq.Request {
		return &mcpreq.Request{Messages: []mcpreq.Message{{Method: "tools/call", Name: name}}}
	}
	passed := 0
	for i := 0; i < 1000; i++ {
		l.mu.Lock()
		plan := l.plan(callOf("t"+strconv.Itoa(i)), "mallory")
		l.mu.Unlock()
		if ok, _, _ := l.take(plan, now); ok {
			passed++
		}
	}
	if passed != maxToolKeys+1 || l.size() != maxToolKeys+1 || l.named["mallory"] != maxToolKeys {
		t.Fatalf("1000 names of one principal: %d passed, %d buckets (%d named), want %d, %d (%d)",
			passed, l.size(), l.named["mallory"], maxToolKeys+1, maxToolKeys+1, maxToolKeys)
	}
	for p := 0; p < 50; p++ {
		for i := 0; i < 10; i++ {
			l.mu.Lock()
			plan := l.plan(callOf("t"+strconv.Itoa(i)), "user"+strconv.Itoa(p))
			l.mu.Unlock()
			if ok, _, _ := l.take(plan, now); !ok {
				t.Fatalf("user%d's first call of t%d refused (table %d of %d)", p, i, l.size(), l.maxKeys)
			}
		}
	}
	total := 0
	for _, n := range l.named {
		total += n
	}
	if l.size() != 200 || total+l.otherBuckets() != 200 {
		t.Fatalf("table %d, named %d + other %d", l.size(), total, l.otherBuckets())
	}
}

func (l *limiter) otherBuckets() int {
	n := 0
	for k := range l.buckets {
		if k.other {
			n++
		}
	}
	return n
}

// With the default bound, 10 000 principals all get buckets, in bounded memory.
func TestLimiterTenThousandPrincipals(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 10, Window: caddy.Duration(time.Minute)})
	now := time.Unix(1_000_000, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 10_000; i++ {
		if ok, _, _ := l.take(one("https://issuer.example\x00user-"+strconv.Itoa(i)), now); !ok {
			t.Fatalf("principal %d refused", i)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if l.size() != 10_000 || grew > 8<<20 {
		t.Fatalf("%d buckets, heap +%d bytes", l.size(), grew)
	}
	t.Logf("10 000 principals: heap +%d bytes (%d per bucket); bound %d buckets", grew, grew/10_000, maxRateKeys)
}
