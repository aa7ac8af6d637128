package stdiobridge

import (
	"sync"
	"time"

	"github.com/caddymcp/caddymcp/internal/childproc"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// A prewarmed child is started before any session needs it, so that a new
// session's initialize costs the child's initialize round trip instead of
// its start-up (seconds for npx servers). Only for routes whose child
// environment does not depend on the request.

// switchSink holds a warm child's output until a session adopts it.
type switchSink struct {
	mu      sync.Mutex
	target  childproc.Sink
	early   [][]byte // lines written before adoption (bounded)
	exited  bool
	exitErr error
	onIdle  func(err error) // exit before adoption
}

const maxEarlyLines = 64

func (w *switchSink) ChildMessage(line []byte) {
	w.mu.Lock()
	if t := w.target; t != nil {
		w.mu.Unlock()
		t.ChildMessage(line)
		return
	}
	if len(w.early) < maxEarlyLines {
		w.early = append(w.early, append([]byte(nil), line...))
	}
	w.mu.Unlock()
}

func (w *switchSink) ChildOversized(id []byte, size int) {
	w.mu.Lock()
	t := w.target
	w.mu.Unlock()
	if t != nil {
		t.ChildOversized(id, size)
	}
}

func (w *switchSink) ChildExited(err error) {
	w.mu.Lock()
	t := w.target
	if t == nil {
		w.exited, w.exitErr = true, err
	}
	idle := w.onIdle
	w.mu.Unlock()
	if t != nil {
		t.ChildExited(err)
	} else if idle != nil {
		idle(err)
	}
}

// adopt hands the child's output to a session; false if it already exited.
func (w *switchSink) adopt(s childproc.Sink) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.exited {
		return false
	}
	w.target = s
	for _, line := range w.early {
		s.ChildMessage(line)
	}
	w.early = nil
	return true
}

// warmChild is a started, not yet initialized child.
type warmChild struct {
	proc *childproc.Process
	sink *switchSink
}

// warmPool keeps up to n children started for a table.
type warmPool struct {
	t      *table
	logger *zap.Logger
	limit  *rate.Limiter // refills after a warm child died, so a crashing child cannot loop hot

	mu       sync.Mutex
	n        int
	ready    []*warmChild
	starting int
	stopped  bool
}

// configure sets the pool's size (from the settings of the config that
// runs); children beyond a smaller size are ended.
func (p *warmPool) configure(n int) {
	p.mu.Lock()
	p.n = n
	var surplus []*warmChild
	if len(p.ready) > n {
		surplus = append(surplus, p.ready[n:]...)
		p.ready = p.ready[:n]
	}
	p.mu.Unlock()
	for _, c := range surplus {
		p.t.ending.Add(1) // Caddy's stop waits for them (table.Destruct)
		go func() {
			defer p.t.ending.Done()
			p.end(c)
		}()
	}
}

// take returns a warm child, or nil, and starts a refill.
func (p *warmPool) take() *warmChild {
	p.mu.Lock()
	var c *warmChild
	if len(p.ready) > 0 {
		c = p.ready[0]
		p.ready = p.ready[1:]
	}
	p.mu.Unlock()
	p.fill()
	return c
}

// size is the number of children started or starting.
func (p *warmPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready) + p.starting
}

// fill starts children until n are ready, within max_sessions (a warm child
// is a session to be) and the spawn rate limit.
func (p *warmPool) fill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.stopped && p.t.spawner.Load() != nil && len(p.ready)+p.starting < p.n {
		max := p.t.settings.Load().maxSessions
		if max > 0 && p.t.count()+len(p.ready)+p.starting >= max {
			return
		}
		p.starting++
		go p.start()
	}
}

func (p *warmPool) start() {
	sink := &switchSink{}
	proc, err := p.t.startChild(nil, sink, p.logger)
	p.mu.Lock()
	p.starting--
	if err != nil {
		p.mu.Unlock()
		p.logger.Error("could not prewarm an MCP server process", zap.Error(err))
		return
	}
	c := &warmChild{proc: proc, sink: sink}
	if p.stopped || len(p.ready) >= p.n {
		p.mu.Unlock()
		proc.Terminate(p.t.settings.Load().shutdownTimeout)
		return
	}
	sink.mu.Lock()
	sink.onIdle = func(err error) { p.lost(c, err) }
	exited := sink.exited
	sink.mu.Unlock()
	if exited {
		p.mu.Unlock()
		p.lost(c, sink.exitErr)
		return
	}
	p.ready = append(p.ready, c)
	p.mu.Unlock()
	p.logger.Debug("prewarmed an MCP server process", zap.Int("pid", proc.Pid()))
}

// lost removes a warm child that exited before any session used it.
func (p *warmPool) lost(c *warmChild, err error) {
	p.mu.Lock()
	for i, r := range p.ready {
		if r == c {
			p.ready = append(p.ready[:i], p.ready[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	p.logger.Warn("a prewarmed MCP server process exited before use", zap.String("status", childproc.ExitDescription(err)))
	if p.limit.Allow() {
		p.fill()
	} else {
		// a child that keeps dying must not be restarted in a hot loop
		time.AfterFunc(time.Second, p.fill)
	}
}

// end terminates a warm child that no session will use.
func (p *warmPool) end(c *warmChild) {
	c.sink.mu.Lock()
	c.sink.onIdle = nil
	c.sink.mu.Unlock()
	c.proc.Terminate(p.t.settings.Load().shutdownTimeout)
}

// stop ends every warm child and waits for them, including any still
// starting.
func (p *warmPool) stop() {
	p.mu.Lock()
	p.stopped = true
	ready := p.ready
	p.ready = nil
	p.mu.Unlock()
	defer func() {
		for p.size() > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for _, c := range ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.end(c)
		}()
	}
	wg.Wait()
}
