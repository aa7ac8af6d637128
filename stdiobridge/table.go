package stdiobridge

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddymcp/caddymcp/internal/childproc"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// The locks, what each guards and the order they are taken in are
// written once, in doc.go (# Locks).

// tables holds session tables by process configuration, so that a reload
// that leaves a route's process config unchanged keeps its sessions (the
// new handler loads the same table before the old one releases it).
var tables = caddy.NewUsagePool()

var errSessionClosed = errors.New("session closed")

// settings are the knobs of the handler whose config runs (see
// table.publish); they may change on reload without ending sessions.
type settings struct {
	idleTimeout     time.Duration
	shutdownTimeout time.Duration
	maxSessions     int
	maxPerUser      int
	initRate        float64 // initialize requests per second and principal; 0: unlimited
	maxMessageSize  int
	writeTimeout    time.Duration
	prewarm         int
	inputTimeout    time.Duration   // how long a parked MRTR round waits for the retry
	callTimeout     time.Duration   // the bound on a forwarded call while the child works (0: none)
	cacheTTL        time.Duration   // ttlMs on cacheable 2026-07-28 results
	command         string          // the command's label in metrics
	rootsForward    bool            // roots forward: the client's roots reach the child
	rootsResult     json.RawMessage // the answer to a child's roots/list (nil: refused unless forwarded)
	newID           func() string   // a session id naming this instance (nil: random)

	taskAfter      time.Duration // a declaring client's tools/call becomes a task after this (<0: no tasks)
	taskTTL        time.Duration // a task's life from creation (ttlMs)
	taskPoll       time.Duration // pollIntervalMs
	taskMaxPerUser int           // tasks held (running or kept) per principal
	taskMaxBytes   int64         // bytes of kept results per principal
	taskRouteMax   int           // tasks held by the route
	taskRouteBytes int64         // bytes of kept results of the route
}

// maxMessageSize is the max_message_size of the config that runs: a
// reload that changes it reaches running children too.
func (t *table) maxMessageSize() int { return t.settings.Load().maxMessageSize }

// sessionID is a new session's id.
func (c *settings) sessionID() string {
	if c != nil && c.newID != nil {
		return c.newID()
	}
	return randomID(20)
}

// table is what one route holds, shared by the configs that keep the
// route unchanged across reloads: the settings and spawner of the newest
// config, prewarmed children, and four parts with their own locks.
type table struct {
	logger    *zap.Logger
	settings  atomic.Pointer[settings]
	spawner   atomic.Pointer[spawner] // the newest published config's (startChild)
	gen       atomic.Uint64           // generation of the handler whose settings are published
	pubMu     sync.Mutex              // serializes publish
	pool      *warmPool               // prewarmed children (none while settings.prewarm is 0)
	retained  atomic.Int64            // bytes of finished streams kept for resumption, all sessions
	warnEvery *rate.Limiter           // client-triggerable refusals logged at warn (Handler.limitLog)
	tools     toolLabels              // tool names for metric labels (metrics.go)

	sessionTable // 2025 sessions and the limits both eras count against
	poolTable    // the 2026-07-28 pools (pool.go)
	roundTable   // parked MRTR rounds (mrtr.go)
	serverFacts  // what the route's server is: its era and discovery answers (probe.go)
	taskTable    // tasks (tasks.go)
}

// sessionTable holds the 2025 sessions and the limits (max_sessions,
// max_sessions_per_user, initialize_rate), which count sessions, stateless
// children and pool children alike. mu guards all of it.
type sessionTable struct {
	mu       sync.Mutex
	sessions map[string]*Session
	reserved int            // sessions (or stateless children) being set up
	perUser  map[string]int // sessions, reservations and stateless children by principal
	rates    map[string]*rate.Limiter
	rateKeys []string // insertion order of rates, for eviction
	reaping  bool
	stop     chan struct{}
	stopped  bool
	ending   pendingSet // children of ended sessions still being terminated
}

// poolTable holds the 2026-07-28 pools by key (table.poolFor); poolsMu
// guards the map.
type poolTable struct {
	poolsMu sync.Mutex
	pools   map[string]*childPool
}

// roundTable holds parked MRTR rounds and the single-use ids of wrapped
// child requestStates; roundsMu guards it.
type roundTable struct {
	roundsMu sync.Mutex
	rounds   map[string]*call     // parked MRTR rounds by round id
	passes   map[string]time.Time // unused ids of wrapped child requestStates: their expiry
	passIDs  []string             // the same ids, oldest first (bounds passes)
}

// serverFacts is what the route's server is, learned once per process
// config.
type serverFacts struct {
	init     atomic.Pointer[json.RawMessage] // a child's InitializeResult (server/discover)
	discover atomic.Pointer[json.RawMessage] // a modern child's DiscoverResult
	info     atomic.Pointer[json.RawMessage] // serverInfo read from init (set once, as init is)
	childEra atomic.Int32                    // what the route's server speaks: eraUnknown until probed (probe.go)
	probeMu  sync.Mutex                      // one probe at a time; guards the three below
	guessed  bool                            // the era is a guess: the probe got no answer (probe.go)
	reprobe  time.Time                       // no re-probe of a guess before this
	backoff  time.Duration                   // the wait after the next re-probe
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

// newTable makes the table of a process configuration, with the settings
// of the handler that first needs it (no other config uses it yet).
func newTable(logger *zap.Logger, gen uint64, cfg *settings, sp *spawner) *table {
	t := &table{logger: logger,
		sessionTable: sessionTable{sessions: map[string]*Session{}, perUser: map[string]int{},
			rates: map[string]*rate.Limiter{}, stop: make(chan struct{})},
		poolTable:  poolTable{pools: map[string]*childPool{}},
		roundTable: roundTable{rounds: map[string]*call{}, passes: map[string]time.Time{}}}
	t.warnEvery = rate.NewLimiter(rate.Every(time.Minute), 1)
	t.pool = &warmPool{t: t, logger: logger, limit: rate.NewLimiter(4, 4)}
	t.publish(gen, cfg, sp)
	return t
}

// publish makes a handler's settings the table's, unless a handler of a
// newer config already did. Handlers call it once their config runs (first
// connection or request), never in Provision: a config that fails to load
// must not change a running route.
func (t *table) publish(gen uint64, cfg *settings, sp *spawner) {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	if gen < t.gen.Load() {
		return
	}
	t.gen.Store(gen)
	t.settings.Store(cfg)
	t.spawner.Store(sp)
	t.pool.configure(cfg.prewarm)
}

// startChild starts one of the route's children (spawner.start) with the
// newest published spawner; env nil is the environment of no request.
func (t *table) startChild(env []string, sink childproc.Sink, logger *zap.Logger) (*childproc.Process, error) {
	sp := t.spawner.Load()
	if sp == nil {
		return nil, errors.New("the route has no process config") // tables made by unit tests
	}
	return sp.start(env, t.maxMessageSize, sink, logger)
}

// refusal says why a new session may not start.
type refusal int

const (
	admitted refusal = iota
	refusedStopped
	refusedMax
	refusedPerUser
	refusedRate
)

// maxRateEntries bounds the per-principal initialize limiters.
const maxRateEntries = 10000

// reserve claims a slot for a new session of user, within max_sessions,
// max_sessions_per_user and the initialize rate. At max_sessions_per_user
// it first ends the user's least recently used idle session or pool child
// (clients that never send DELETE must not lock their user out until
// session_idle_timeout).
func (t *table) reserve(user string) refusal {
	why := t.reserveOnce(user)
	if why == refusedPerUser && t.evictIdle(user) {
		why = t.reserveOnce(user)
	}
	return why
}

func (t *table) reserveOnce(user string) refusal {
	cfg := t.settings.Load()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return refusedStopped
	}
	if cfg.maxSessions > 0 && len(t.sessions)+t.reserved >= cfg.maxSessions {
		return refusedMax
	}
	if cfg.maxPerUser > 0 && t.perUser[user] >= cfg.maxPerUser {
		return refusedPerUser
	}
	if cfg.initRate > 0 {
		l := t.rates[user]
		if l == nil {
			for len(t.rateKeys) >= maxRateEntries {
				delete(t.rates, t.rateKeys[0])
				t.rateKeys = t.rateKeys[1:]
			}
			l = rate.NewLimiter(rate.Limit(cfg.initRate), max(1, int(2*cfg.initRate)))
			t.rates[user] = l
			t.rateKeys = append(t.rateKeys, user)
		}
		if !l.Allow() {
			return refusedRate
		}
	}
	t.reserved++
	t.perUser[user]++
	if !t.reaping {
		t.reaping = true
		go t.reap()
	}
	return admitted
}

// add turns a reservation into a live session; false (and the reservation
// released) if the table was stopped meanwhile: the caller must end s.
func (t *table) add(s *Session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reserved--
	if t.stopped {
		t.dropUserLocked(s.limitKey)
		return false
	}
	t.sessions[s.id] = s
	return true
}

// isStopped says whether the route was removed or changed (Destruct ran):
// a child's failure after that is the route's end, not the child's fault.
func (t *table) isStopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopped
}

// release gives back a reservation that did not become a session (or the
// slot of a stateless child that has exited).
func (t *table) release(user string) {
	t.mu.Lock()
	t.reserved--
	t.dropUserLocked(user)
	t.mu.Unlock()
}

func (t *table) dropUserLocked(user string) {
	if t.perUser[user] <= 1 {
		delete(t.perUser, user)
	} else {
		t.perUser[user]--
	}
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
		t.dropUserLocked(s.limitKey)
	}
	t.mu.Unlock()
}

func (t *table) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sessions) + t.reserved
}

// list copies the live sessions.
func (t *table) list() []*Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Session, 0, len(t.sessions))
	for _, s := range t.sessions {
		out = append(out, s)
	}
	return out
}

// reap ends sessions that saw no client request for session_idle_timeout,
// whether or not a GET stream is open, and drops delivered streams past
// the resume window. It never holds table.mu while taking a session's lock.
func (t *table) reap() {
	for {
		idle := t.settings.Load().idleTimeout
		tick := min(max(idle/10, 10*time.Millisecond), 5*time.Second)
		select {
		case <-t.stop:
			return
		case <-time.After(tick):
		}
		cfg := t.settings.Load()
		idle = cfg.idleTimeout
		now := time.Now()
		t.reapPools(now, idle, 2*cfg.shutdownTimeout+cfg.writeTimeout)
		for _, s := range t.list() {
			if s.idleSince(now) > idle {
				s.end("idle for longer than session_idle_timeout")
			} else {
				s.prune(now)
			}
		}
	}
}

// failInFlight answers every pending request of every session with a
// JSON-RPC error, so that clients waiting on a route that goes away learn
// it at once.
func (t *table) failInFlight(reason string) {
	for _, s := range t.list() {
		s.failPending(reason)
	}
}

// Destruct ends every session and child; it runs when no loaded config
// uses this route any more. At Caddy's stop it waits for the children to
// exit; on a reload it does not.
func (t *table) Destruct() error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return nil
	}
	t.stopped = true
	close(t.stop)
	liveTables.Delete(t)
	sessions := make([]*Session, 0, len(t.sessions))
	for _, s := range t.sessions {
		sessions = append(sessions, s)
	}
	t.mu.Unlock()
	grace := t.settings.Load().shutdownTimeout
	t.pool.stop()
	t.endRounds()
	t.endTasks()
	t.endPools("the mcp_stdio route was removed or changed")
	for _, s := range sessions {
		t.ending.Add(1)
		go func() {
			defer t.ending.Done()
			s.failPending("the mcp_stdio route was removed or changed")
			s.closeWith("route removed or changed")
			if s.proc != nil {
				s.proc.Terminate(grace)
			}
		}()
	}
	// Caddy's stop waits until every child has exited, so that none
	// outlives it; a reload does not (a child that ignores stdin's end and
	// SIGTERM would hold it up for twice shutdown_timeout): its children
	// end in the background, counted in t.ending.
	if stopping() {
		t.ending.Wait()
	}
	if len(sessions) > 0 {
		t.logger.Info("ended sessions of a removed or changed mcp_stdio route", zap.Int("sessions", len(sessions)))
	}
	return nil
}

// stopping reports whether Caddy is stopping (no config runs), rather than
// replacing a config: caddy.Stop clears the active context first.
func stopping() bool { return caddy.ActiveContext().Context == nil }

// discovered caches the first InitializeResult of a child (server/discover).
func (t *table) discovered(init json.RawMessage) {
	if init != nil && t.init.Load() == nil {
		v := append(json.RawMessage(nil), init...)
		t.init.CompareAndSwap(nil, &v)
	}
}

func (t *table) initResult() json.RawMessage {
	if p := t.init.Load(); p != nil {
		return *p
	}
	return nil
}

// discoveredModern caches a modern child's DiscoverResult.
func (t *table) discoveredModern(res json.RawMessage) {
	if res != nil && t.discover.Load() == nil {
		v := append(json.RawMessage(nil), res...)
		t.discover.CompareAndSwap(nil, &v)
	}
}

// serverInfo is the children's serverInfo, for result _meta. What it reads
// from the first InitializeResult is kept: init is set once and wins over a
// discover result, so that answer never changes (it was decoded on every
// translated call).
func (t *table) serverInfo() json.RawMessage {
	if p := t.info.Load(); p != nil {
		return *p
	}
	var ir struct {
		ServerInfo json.RawMessage `json:"serverInfo"`
	}
	if init := t.initResult(); init != nil && json.Unmarshal(init, &ir) == nil {
		t.info.CompareAndSwap(nil, &ir.ServerInfo)
		return ir.ServerInfo
	}
	var dr struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if p := t.discover.Load(); p != nil && json.Unmarshal(*p, &dr) == nil {
		return dr.Meta["io.modelcontextprotocol/serverInfo"]
	}
	return nil
}

// parkRound keeps a call that waits for its client's retry.
func (t *table) parkRound(round string, cl *call) {
	t.roundsMu.Lock()
	t.rounds[round] = cl
	t.roundsMu.Unlock()
}

// takeRound removes and returns a parked call (nil if expired or taken).
func (t *table) takeRound(round string) *call {
	t.roundsMu.Lock()
	defer t.roundsMu.Unlock()
	cl := t.rounds[round]
	delete(t.rounds, round)
	return cl
}

// expireRound ends a round whose client did not retry within input_timeout:
// the child's questions are answered with an error, its call cancelled.
func (t *table) expireRound(round string) {
	if cl := t.takeRound(round); cl != nil {
		t.logger.Info("input_required round expired: the client did not retry within input_timeout; call cancelled",
			zap.String("method", cl.method))
		cl.cancel("the client did not answer within input_timeout")
	}
}

// maxPasses bounds the wrapped child requestStates a route keeps unused
// (about 50 bytes each); beyond it the oldest one is dropped, and its
// retry refused as expired.
const maxPasses = 1 << 16

// issuePass records the single-use id of a wrapped child requestState.
func (t *table) issuePass(id string, expires time.Time) {
	now := time.Now()
	dropped := false
	t.roundsMu.Lock()
	for len(t.passIDs) > 0 {
		first := t.passIDs[0]
		exp, unused := t.passes[first]
		live := unused && now.Before(exp)
		if live && len(t.passIDs) < maxPasses {
			break
		}
		dropped = dropped || live
		delete(t.passes, first)
		t.passIDs = t.passIDs[1:]
	}
	t.passes[id] = expires
	t.passIDs = append(t.passIDs, id)
	t.roundsMu.Unlock()
	if dropped {
		t.logger.Warn("a wrapped requestState was dropped unused: a route keeps at most this many", zap.Int("max", maxPasses))
	}
}

// takePass consumes the id of a wrapped child requestState: true the
// first time it is presented, before it expires.
func (t *table) takePass(id string, now time.Time) bool {
	t.roundsMu.Lock()
	defer t.roundsMu.Unlock()
	exp, ok := t.passes[id]
	delete(t.passes, id)
	return ok && now.Before(exp)
}

// endRounds cancels every parked round (the route goes away).
func (t *table) endRounds() {
	t.roundsMu.Lock()
	calls := make([]*call, 0, len(t.rounds))
	for _, cl := range t.rounds {
		calls = append(calls, cl)
	}
	clear(t.rounds)
	clear(t.passes)
	t.passIDs = nil
	t.roundsMu.Unlock()
	for _, cl := range calls {
		cl.cancel("the mcp_stdio route was removed or changed")
	}
}

// userSessions copies the live sessions that count against user.
func (t *table) userSessions(user string) []*Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Session
	for _, s := range t.sessions {
		if s.limitKey == user {
			out = append(out, s)
		}
	}
	return out
}

// evictIdle ends user's least recently used idle session or pool child
// (no call in flight, no open stream); false if there is none. Its slot is
// free when evictIdle returns; the child is ended in the background.
func (t *table) evictIdle(user string) bool {
	type candidate struct {
		since time.Time
		s     *Session
		c     *poolChild
	}
	var cands []candidate
	for _, s := range t.userSessions(user) {
		if since, ok := s.idleAt(); ok {
			cands = append(cands, candidate{since: since, s: s})
		}
	}
	for _, p := range t.poolList() {
		for _, c := range p.snapshot() {
			if since, ok := c.idleAt(user); ok {
				cands = append(cands, candidate{since: since, c: c})
			}
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int { return a.since.Compare(b.since) })
	reason := "max_sessions_per_user reached: ended the user's least recently used idle session for a new one"
	for _, cd := range cands {
		if cd.s != nil && cd.s.evict(reason) {
			t.logger.Info("max_sessions_per_user reached; ended the user's least recently used idle session",
				zap.String("user", userForLog(user)), zap.String("session", cd.s.id),
				zap.Duration("age", time.Since(cd.s.created)), zap.Duration("idle", time.Since(cd.since)))
			return true
		}
		if cd.c != nil && cd.c.evict(reason) {
			t.logger.Info("max_sessions_per_user reached; ended the user's least recently used idle pool child",
				zap.String("user", userForLog(user)), zap.Duration("idle", time.Since(cd.since)))
			return true
		}
	}
	return false
}

// retryAfter is when a slot of user's is likely to free (Retry-After at
// max_sessions_per_user, when nothing could be evicted): a session or pool
// child that only holds an open stream is ended at session_idle_timeout;
// one with a call in flight becomes evictable once the call ends, which
// is not known, so then a short wait (5s) is said.
func (t *table) retryAfter(user string) time.Duration {
	cfg := t.settings.Load()
	now := time.Now()
	soonest := cfg.idleTimeout
	if soonest <= 0 {
		soonest = 30 * time.Minute
	}
	for _, s := range t.userSessions(user) {
		busy, last := s.activity()
		if busy {
			soonest = min(soonest, 5*time.Second)
		} else {
			soonest = min(soonest, cfg.idleTimeout-now.Sub(last))
		}
	}
	for _, p := range t.poolList() {
		for _, c := range p.snapshot() {
			c.mu.Lock()
			mine, busy := c.limit == user && !c.closed, len(c.calls) > 0
			c.mu.Unlock()
			if mine && busy {
				soonest = min(soonest, 5*time.Second)
			}
		}
	}
	return max(soonest, time.Second)
}

// childCapabilities is what the child is told its client can do: the
// client's capabilities, with roots replaced by the route's (table
// settings: roots forward keeps the client's).
func (c *settings) childCapabilities(client json.RawMessage) json.RawMessage {
	if c == nil || c.rootsForward {
		return client
	}
	var caps map[string]json.RawMessage
	if json.Unmarshal(client, &caps) != nil || caps == nil {
		caps = map[string]json.RawMessage{}
	}
	delete(caps, "roots")
	if c.rootsResult != nil {
		caps["roots"] = json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(caps)
	return b
}

// answerRoots is the bridge's answer to a child's roots/list when roots
// are not forwarded: the configured roots, or an error.
func (c *settings) answerRoots(id json.RawMessage) []byte {
	if c.rootsResult != nil {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": c.rootsResult})
		return b
	}
	return encodeError(id, &rpcError{Code: codeMethodNotFound,
		Message: "roots are not available: this mcp_stdio route does not forward its clients' roots (roots none)"})
}
