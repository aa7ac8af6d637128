package stdiobridge

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// tables holds session tables by process configuration, so that a reload
// that leaves a route's process config unchanged keeps its sessions (the
// new handler loads the same table before the old one releases it).
var tables = caddy.NewUsagePool()

var errSessionClosed = errors.New("session closed")

// settings are the knobs of the most recently provisioned handler that
// uses a table; they may change on reload without ending sessions.
type settings struct {
	idleTimeout     time.Duration
	shutdownTimeout time.Duration
	maxSessions     int
	maxMessageSize  int
	writeTimeout    time.Duration
}

// table is the set of live sessions of one process configuration.
type table struct {
	logger   *zap.Logger
	settings atomic.Pointer[settings]

	mu       sync.Mutex
	sessions map[string]*Session
	reserved int // sessions being set up
	reaping  bool
	stop     chan struct{}
	stopped  bool
	ending   pendingSet               // children of ended sessions still being terminated
	pool     atomic.Pointer[warmPool] // prewarmed children, if the route asks for them
}

// pendingSet counts work in flight; unlike sync.WaitGroup, adding while
// someone waits is allowed.
type pendingSet struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int
}

func (p *pendingSet) Add(d int) {
	p.mu.Lock()
	p.n += d
	if p.n == 0 && p.cond != nil {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

func (p *pendingSet) Done() { p.Add(-1) }

func (p *pendingSet) Wait() {
	p.mu.Lock()
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
	for p.n > 0 {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

func newTable(logger *zap.Logger) *table {
	return &table{logger: logger, sessions: map[string]*Session{}, stop: make(chan struct{})}
}

// reserve claims a slot for a new session, within max_sessions.
func (t *table) reserve() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	if max := t.settings.Load().maxSessions; max > 0 && len(t.sessions)+t.reserved >= max {
		return false
	}
	t.reserved++
	if !t.reaping {
		t.reaping = true
		go t.reap()
	}
	return true
}

// add turns a reservation into a live session.
func (t *table) add(s *Session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reserved--
	if t.stopped {
		return false
	}
	t.sessions[s.id] = s
	return true
}

func (t *table) release() {
	t.mu.Lock()
	t.reserved--
	t.mu.Unlock()
}

func (t *table) get(id string) *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sessions[id]
}

func (t *table) remove(s *Session) {
	t.mu.Lock()
	if t.sessions[s.id] == s {
		delete(t.sessions, s.id)
	}
	t.mu.Unlock()
}

func (t *table) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sessions)
}

// reap ends sessions that saw no client request for session_idle_timeout,
// whether or not a GET stream is open.
func (t *table) reap() {
	for {
		idle := t.settings.Load().idleTimeout
		tick := min(max(idle/10, 10*time.Millisecond), 5*time.Second)
		select {
		case <-t.stop:
			return
		case <-time.After(tick):
		}
		idle = t.settings.Load().idleTimeout
		now := time.Now()
		t.mu.Lock()
		var expired []*Session
		for _, s := range t.sessions {
			s.mu.Lock()
			if now.Sub(s.lastActive) > idle {
				expired = append(expired, s)
			}
			s.mu.Unlock()
		}
		t.mu.Unlock()
		for _, s := range expired {
			s.end("idle for longer than session_idle_timeout")
		}
	}
}

// Destruct ends every session and waits for the children to exit; it runs
// when no loaded config uses this process configuration any more.
func (t *table) Destruct() error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return nil
	}
	t.stopped = true
	close(t.stop)
	pool := t.pool.Load()
	sessions := make([]*Session, 0, len(t.sessions))
	for _, s := range t.sessions {
		sessions = append(sessions, s)
	}
	t.mu.Unlock()
	if pool != nil {
		pool.stop(t.settings.Load().shutdownTimeout)
	}
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.mu.Lock()
			s.closeLocked("route removed or changed")
			s.mu.Unlock()
			if s.proc != nil {
				s.proc.terminate(t.settings.Load().shutdownTimeout)
			}
		}()
	}
	wg.Wait()
	t.ending.Wait()
	if len(sessions) > 0 {
		t.logger.Info("ended sessions of a removed or changed mcp_stdio route", zap.Int("sessions", len(sessions)))
	}
	return nil
}
