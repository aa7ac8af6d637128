package stdiobridge

import (
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestLockPanicSafe panics inside the locked region of each function that
// also defers flushAudit (a corrupt pending entry makes finishLocked or
// failPendingLocked dereference nil): the panic must reach the caller with
// the session's lock released, never deadlock in the deferred flushAudit.
func TestLockPanicSafe(t *testing.T) {
	cases := map[string]func(s *Session){
		"rewriteCancel": func(s *Session) {
			s.pending[1] = &pending{clientID: []byte("7")} // no stream: finishLocked panics
			s.byClientID[idKey([]byte("7"))] = 1
			e, err := parseEnvelope([]byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}`))
			if err != nil {
				t.Fatal(err)
			}
			s.rewriteCancel(e)
		},
		"cancelStream": func(s *Session) {
			s.pending[1] = nil // p.stream panics
			s.cancelStream(s.standalone, "test")
		},
		"childExited": func(s *Session) {
			s.pending[1] = nil // p.audit panics
			s.ChildExited(nil)
		},
	}
	for name, run := range cases {
		t.Run(name, func(t *testing.T) {
			s := newSession(nil, "", "", &settings{}, zap.NewNop())
			done := make(chan any, 1)
			go func() {
				defer func() { done <- recover() }()
				run(s)
			}()
			select {
			case v := <-done:
				if v == nil {
					t.Fatal("no panic: the test did not reach the locked region")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("deadlock: the deferred flushAudit waits for the lock the panicking code holds")
			}
			// the session still locks and ends
			locked := make(chan struct{})
			go func() {
				s.closeWith("test")
				close(locked)
			}()
			select {
			case <-locked:
			case <-time.After(10 * time.Second):
				t.Fatal("the session's lock was left held")
			}
		})
	}
}
