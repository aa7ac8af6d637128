//go:build unix

package childproc

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// recorder is a Sink that keeps what it was told.
type recorder struct {
	mu        sync.Mutex
	lines     []string
	oversized []string
	exited    chan error
}

func newRecorder() *recorder { return &recorder{exited: make(chan error, 1)} }

func (r *recorder) ChildMessage(line []byte) {
	r.mu.Lock()
	r.lines = append(r.lines, string(line))
	r.mu.Unlock()
}
func (r *recorder) ChildOversized(id []byte, size int) {
	r.mu.Lock()
	r.oversized = append(r.oversized, string(id)+" "+strconv.Itoa(size))
	r.mu.Unlock()
}
func (r *recorder) ChildExited(err error) { r.exited <- err }

func start(t *testing.T, script string, max int, sink Sink) *Process {
	t.Helper()
	p, err := Start(Config{Command: "sh", Args: []string{"-c", script}, Env: []string{"PATH=" + os.Getenv("PATH")},
		MaxMessageSize: func() int { return max }}, sink, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitExit bounds how long a child that must end may take.
func waitExit(t *testing.T, r *recorder) error {
	t.Helper()
	select {
	case err := <-r.exited:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the child was never reported exited")
		return nil
	}
}

// stdout is framed into JSON lines: blank lines and lines that are not
// JSON are skipped, a line over the bound is reported by its top-level id
// and size, and the exit comes after every line.
func TestFraming(t *testing.T) {
	r := newRecorder()
	long := `{"jsonrpc":"2.0","id":7,"result":"` + strings.Repeat("x", 200) + `"}`
	start(t, `printf '%s\n\n%s\n%s\n  {"id":2}  \n' '{"id":1}' 'not json' '`+long+`'; exit 3`, 100, r)
	err := waitExit(t, r)
	if ExitDescription(err) != "exit status 3" {
		t.Errorf("exit: %q", ExitDescription(err))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Join(r.lines, "|") != `{"id":1}|{"id":2}` {
		t.Errorf("lines: %q", r.lines)
	}
	if len(r.oversized) != 1 || r.oversized[0] != "7 "+strconv.Itoa(len(long)+1) {
		t.Errorf("oversized: %q", r.oversized)
	}
}

// Send reaches stdin; after the child has exited it fails.
func TestSend(t *testing.T) {
	r := newRecorder()
	p := start(t, `read line; printf '%s\n' "$line"`, 1<<20, r)
	if err := p.Send([]byte(`{"id":"a"}`), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, r); err != nil {
		t.Fatal(err)
	}
	if p.Send([]byte(`{}`), time.Second) == nil {
		t.Error("Send to an exited child succeeded")
	}
	if len(r.lines) != 1 || r.lines[0] != `{"id":"a"}` {
		t.Errorf("echoed: %q", r.lines)
	}
}

// Terminate ends a child that ignores the end of stdin and SIGTERM
// (SIGKILL to its group) and returns once it has exited; a second call
// returns at once.
func TestTerminateStubborn(t *testing.T) {
	r := newRecorder()
	p := start(t, `trap '' TERM; echo '{"ready":1}'; while :; do sleep 1; done`, 1<<20, r)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.lines)
		r.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Terminate(50 * time.Millisecond)
	if d := ExitDescription(waitExit(t, r)); d != "signal: killed" {
		t.Errorf("ended by %q, want SIGKILL", d)
	}
	p.Terminate(time.Hour) // already ended: must not wait
}

// A descendant that leaves the child's process group (setsid) is ended
// with the child (Linux: found by its marker variable).
func TestDescendantSwept(t *testing.T) {
	if !sweepSupported {
		t.Skip("descendants that leave the group are not found on this platform")
	}
	r := newRecorder()
	pidFile := t.TempDir() + "/pid"
	p := start(t, `setsid sh -c 'echo $$ > `+pidFile+`; exec sleep 600' & while [ ! -s `+pidFile+` ]; do sleep 0.01; done; echo '{"ready":1}'; read x`, 1<<20, r)
	deadline := time.Now().Add(30 * time.Second)
	for len(snapshot(r)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	p.Terminate(time.Second)
	waitExit(t, r)
	// the sweep ran before ChildExited; the killed sleep may await its reaper (init), so test for a zombie or nothing
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the setsid descendant %d outlived its child: %s", pid, st)
	}
}

func snapshot(r *recorder) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}
