package mcpauth

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Exact counts: n requests per window pass from a fresh bucket, the next
// waits window/n; buckets are per key.
func TestLimiterCounts(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 5, Window: caddy.Duration(time.Minute)})
	now := time.Unix(1_000_000, 0)
	for i := 0; i < 5; i++ {
		if ok, _, _ := l.take("ann", now); !ok {
			t.Fatalf("request %d of 5 refused", i+1)
		}
	}
	ok, wait, _ := l.take("ann", now)
	if ok || wait != 12*time.Second {
		t.Fatalf("6th request: ok=%v wait=%s, want refused for 12s", ok, wait)
	}
	if ok, _, _ := l.take("bob", now); !ok {
		t.Fatal("another principal shares ann's bucket")
	}
	if ok, _, _ := l.take("ann", now.Add(12*time.Second)); !ok {
		t.Fatal("no refill after window/n")
	}
	if ok, _, _ := l.take("ann", now.Add(12*time.Second)); ok {
		t.Fatal("more than one refill after window/n")
	}
	// over a whole window: exactly 5 more
	passed := 0
	for s := 13; s <= 72; s++ {
		if ok, _, _ := l.take("ann", now.Add(time.Duration(s)*time.Second)); ok {
			passed++
		}
	}
	if passed != 5 {
		t.Fatalf("%d requests passed in the next minute, want 5", passed)
	}
}

// 10 000 distinct principals leave the table within its bound, and memory
// with it; a full table of active buckets refuses new principals instead of
// resetting anyone's bucket, and drops refilled ones.
func TestLimiterMemoryBounded(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 2, Window: caddy.Duration(time.Minute)})
	l.maxKeys = 1000
	now := time.Unix(1_000_000, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	refused := 0
	for i := 0; i < 10_000; i++ {
		if ok, _, full := l.take("p"+strconv.Itoa(i), now); !ok && full {
			refused++
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if l.size() > 1000 {
		t.Fatalf("%d buckets kept, bound 1000", l.size())
	}
	if refused != 9000 {
		t.Fatalf("%d new principals refused while the table was full of active buckets, want 9000", refused)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Fatalf("heap grew %d bytes for 1000 buckets", grew)
	}
	// a minute later every bucket has refilled: new principals displace
	// them, until the table is full of active ones again
	for i := 0; i < 1000; i++ {
		if ok, _, _ := l.take("q"+strconv.Itoa(i), now.Add(time.Minute)); !ok {
			t.Fatalf("new principal %d refused though the table holds refilled buckets", i)
		}
	}
	if ok, _, full := l.take("q1000", now.Add(time.Minute)); ok || !full {
		t.Fatal("a new principal displaced an active bucket")
	}
	if l.size() != 1000 {
		t.Fatalf("%d buckets kept, want 1000", l.size())
	}
	t.Logf("10 000 principals: %d buckets kept; heap %+d bytes", l.size(), int64(after.HeapAlloc)-int64(before.HeapAlloc))
}

// With the default bound, 10 000 principals all get buckets, in bounded memory.
func TestLimiterTenThousandPrincipals(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 10, Window: caddy.Duration(time.Minute)})
	now := time.Unix(1_000_000, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 10_000; i++ {
		if ok, _, _ := l.take("https://issuer.example\x00user-"+strconv.Itoa(i), now); !ok {
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
