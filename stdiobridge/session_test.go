package stdiobridge

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

func testSettings() *settings {
	return &settings{idleTimeout: time.Hour, shutdownTimeout: time.Second, maxMessageSize: 4 << 20,
		writeTimeout: time.Second, maxSessions: 100000}
}

// answered registers a request on a new stream of s and answers it with a
// result of size bytes, as the child would; the stream's writer came and
// went before the answer (its client is gone).
func answered(t testing.TB, s *Session, id int, size int) *stream {
	st := answeredPinned(t, s, id, size, true)
	return st
}

// answeredPinned is answered; with gone false the stream's first writer is
// still to come.
func answeredPinned(t testing.TB, s *Session, id int, size int, gone bool) *stream {
	e, rerr := decodeMessage([]byte(`{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call"}`))
	if rerr != nil {
		t.Fatal(rerr)
	}
	s.mu.Lock()
	st := s.newStreamLocked(false)
	s.mu.Unlock()
	if gone {
		s.detachWriter(st, nil)
	}
	msg, err := s.startRequest(e, st)
	if err != nil {
		t.Fatal(err)
	}
	sent, _ := parseEnvelope(msg)
	result, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(sent.ID),
		"result": map[string]string{"text": strings.Repeat("x", size)}})
	s.ChildMessage(result)
	return st
}

// A stream's since() is safe for any seq a client can send (a Last-Event-ID).
func TestSinceAnySeq(t *testing.T) {
	s := newSession(nil, "", "", testSettings(), zap.NewNop())
	st := answered(t, s, 1, 10)
	for _, seq := range []uint64{0, 1, 2, 3, math.MaxInt64, math.MaxInt64 + 1, math.MaxUint64 - 1, math.MaxUint64} {
		evs, _ := st.since(seq)
		for _, e := range evs {
			if e.seq <= seq {
				t.Fatalf("since(%d) returned seq %d", seq, e.seq)
			}
		}
	}
}

// FuzzLastEventID parses any Last-Event-ID and replays from it: never a
// panic, only events after the id, and only ids the stream has sent.
func FuzzLastEventID(f *testing.F) {
	f.Add("AAAA_0")
	f.Add("AAAA_9223372036854775808")
	f.Add("AAAA_18446744073709551615")
	f.Add("_1")
	f.Add("AAAA_-1")
	f.Add("A_B_3")
	f.Add("AAAA_00000000000000000000001")
	s := newSession(nil, "", "", testSettings(), zap.NewNop())
	st := answered(f, s, 1, 10)
	s.mu.Lock()
	for i := 0; i < 5000; i++ { // past the event bound: the front is evicted
		st.append([]byte(`{"n":` + strconv.Itoa(i) + `}`))
	}
	s.mu.Unlock()
	f.Fuzz(func(t *testing.T, last string) {
		_, seq, ok := parseEventID(last)
		if !ok {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		evs, evicted := st.since(seq)
		if seq >= st.next && (len(evs) > 0 || evicted) {
			t.Fatalf("since(%d) past next %d: %d events, evicted %v", seq, st.next, len(evs), evicted)
		}
		for _, e := range evs {
			if e.seq <= seq || e.seq >= st.next {
				t.Fatalf("since(%d) gave seq %d (next %d)", seq, e.seq, st.next)
			}
		}
	})
}

// The reaper, DELETE and child exits take the table's and the
// sessions' locks in one order; with the old order this deadlocked.
func TestReaperEndAndExitDoNotDeadlock(t *testing.T) {
	cfg := testSettings()
	cfg.idleTimeout = time.Millisecond
	tb := newTable(zap.NewNop(), 1, cfg, nil)
	defer tb.Destruct()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for round := 0; round < 40; round++ {
			var wg sync.WaitGroup
			for i := 0; i < 400; i++ { // many sessions: a reaper pass is long
				if tb.reserve("u") != admitted {
					t.Error("reserve refused")
					return
				}
				s := newSession(tb, "", "u", cfg, zap.NewNop())
				tb.add(s)
				s.markStarted()
				if i%2 == 0 {
					continue // left to the reaper
				}
				wg.Add(2)
				go func() { defer wg.Done(); s.end("DELETE") }()
				go func() { defer wg.Done(); s.ChildExited(nil) }()
			}
			wg.Wait()
			for tb.count() > 0 { // the reaper ends the rest, while others end theirs
				time.Sleep(time.Millisecond)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("deadlock: reaper, end and childExited did not finish")
	}
	if n := tb.count(); n != 0 {
		t.Fatalf("%d sessions left in the table", n)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.perUser) != 0 || tb.reserved != 0 {
		t.Fatalf("per-user counts %v, reserved %d: slots leaked", tb.perUser, tb.reserved)
	}
}

// The same, deterministically: while a session's lock is held (as end() and
// ChildExited() hold it before they take the table's), a reaper pass that
// waits for that lock must not hold the table's lock meanwhile.
func TestReaperHoldsNoTableLockWhileWaitingForASession(t *testing.T) {
	cfg := testSettings()
	cfg.idleTimeout = time.Millisecond // a reaper pass every 10ms
	tb := newTable(zap.NewNop(), 1, cfg, nil)
	defer tb.Destruct()
	if tb.reserve("u") != admitted {
		t.Fatal("reserve refused")
	}
	s := newSession(tb, "", "u", cfg, zap.NewNop())
	tb.add(s)
	s.markStarted()
	s.mu.Lock() // the reaper's next pass blocks on this session
	// let passes start (they come every 10ms); this wait can only make the
	// check miss a wrong order, never fail a right one
	time.Sleep(100 * time.Millisecond)
	free := false
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if tb.mu.TryLock() {
			tb.mu.Unlock()
			free = true
			break
		}
		time.Sleep(time.Millisecond)
	}
	s.mu.Unlock()
	if !free {
		t.Fatal("the reaper holds table.mu while it waits for a session's lock: end() or childExited() would deadlock")
	}
	s.end("DELETE") // takes the session's lock, then the table's
}

// Finished streams are kept within the session's and the route's
// byte bounds, and dropped once delivered and past the resume window.
func TestSoakRetentionIsBounded(t *testing.T) {
	caddyrun.Soak(t, "1.25 GiB of finished streams (40 sessions × 32 × 1 MiB) stay within the session's and the route's retention bounds")
	cfg := testSettings()
	tb := newTable(zap.NewNop(), 1, cfg, nil)
	defer tb.Destruct()
	var sessions []*Session
	for i := 0; i < 40; i++ { // 40 sessions × 32 streams × 1 MiB would be 1.25 GiB
		if tb.reserve("u") != admitted {
			t.Fatal("reserve refused")
		}
		s := newSession(tb, "", "u", cfg, zap.NewNop())
		tb.add(s)
		sessions = append(sessions, s)
		for j := 0; j < 32; j++ {
			answered(t, s, j, 1<<20)
		}
		s.mu.Lock()
		if s.retained > maxSessionRetained || len(s.finished) > maxRetainedStreams {
			t.Fatalf("session keeps %d bytes in %d streams", s.retained, len(s.finished))
		}
		s.mu.Unlock()
		if r := tb.retained.Load(); r > maxRouteRetained+2<<20 {
			t.Fatalf("route keeps %d bytes", r)
		}
	}
	t.Logf("route keeps %d MiB of finished streams", tb.retained.Load()>>20)
	// delivered and past the window: all dropped
	later := time.Now().Add(resumeGrace + time.Second)
	for _, s := range sessions {
		s.mu.Lock()
		for _, st := range s.finished {
			st.delivered = st.next - 1
		}
		s.mu.Unlock()
		s.prune(later)
	}
	if r := tb.retained.Load(); r != 0 {
		t.Fatalf("%d bytes retained after delivery and the resume window", r)
	}
	// an answer whose POST has not attached its writer yet is never dropped,
	// however large
	s := sessions[0]
	big := answeredPinned(t, s, 98, maxSessionRetained+1, false)
	s.prune(time.Now())
	s.mu.Lock()
	if evs, _ := big.since(0); s.streams[big.id] == nil || len(evs) != 1 {
		s.mu.Unlock()
		t.Fatal("an answer was dropped before its client got it")
	}
	s.mu.Unlock()
	// undelivered streams stay for resumption (within bounds)
	s = sessions[1]
	st := answered(t, s, 99, 100)
	s.prune(later)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[st.id] == nil {
		t.Fatal("an undelivered stream was dropped before its client could resume")
	}
}

// A client sending 10 000 distinct tool names adds at most
// metrics_max_tools + 1 label values: only listed names count, up to the
// bound, and everything else is "other".
func TestToolLabelsBounded(t *testing.T) {
	l := &toolLabels{max: 100}
	listed := make([]string, 150)
	for i := range listed {
		listed[i] = "tool_" + strconv.Itoa(i)
	}
	l.learn(listed)
	values := map[string]bool{}
	for i := 0; i < 10_000; i++ {
		values[l.label("tool_"+strconv.Itoa(i))] = true
		values[l.label("made_up_"+strconv.Itoa(i))] = true
	}
	if len(values) != 101 || !values["other"] || !values["tool_99"] || values["tool_100"] {
		t.Fatalf("%d label values for 20 000 names (want 100 listed + other)", len(values))
	}
}
