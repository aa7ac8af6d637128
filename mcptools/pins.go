package mcptools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Pin holds back definitions that change: a digest of each tool's
// definition (name, title, description, input and output schema,
// annotations), each prompt's (name, title, description, arguments) and
// each resource template's (URI template, name, title, description, MIME
// type) is kept in Caddy's storage under the pin set's name. A definition
// whose digest is not approved, a changed one or a new one, is hidden and
// its calls refused until an operator approves it (admin API
// /mcp_tools/pins, or caddy mcp-pins).
type Pin struct {
	// Name names the pin set in storage (every instance on the same
	// storage shares it, and several routes may).
	Name string `json:"name"`
	// Mode is "tofu" (trust on first use, default: the definitions of the
	// first list the set ever sees are approved; after that, new and
	// changed ones are held) or "approved" (only approved definitions are
	// shown: Approve, or the admin API).
	Mode string `json:"mode,omitempty"`
	// Approve lists digests approved in the config, by key
	// ("tool:<name>", "prompt:<name>", "template:<uri template>", the
	// server's names): "sha256:<hex>".
	Approve map[string]string `json:"approve,omitempty"`
}

// pinFile is what storage keeps for a pin set.
type pinFile struct {
	// Seeded: the kinds (tool, prompt, template) whose first list was
	// seen (tofu approves only that one).
	Seeded   map[string]bool   `json:"seeded,omitempty"`
	Approved map[string]pinned `json:"approved"`
	Pending  map[string]pinned `json:"pending,omitempty"`
	Rejected map[string]pinned `json:"rejected,omitempty"`
}

// pinned is one definition: its digest, the definition itself (for the
// diff an operator reads) and when it was recorded.
type pinned struct {
	Digest     string          `json:"digest"`
	Definition json.RawMessage `json:"definition"`
	At         time.Time       `json:"at"`
}

// pinSet is one pin set in this process, shared by every handler (and
// reload) that names it. Lock order: mu alone; it is never held across
// storage I/O (loads and stores run outside it, and swap the file in).
type pinSet struct {
	name    string
	storage certmagic.Storage
	mu      sync.Mutex
	file    pinFile
	seen    map[string]string // key -> the digest last listed
	loaded  time.Time
	forced  time.Time // the last reload a refused call caused
}

// pinRefresh is how often a set re-reads storage when something it holds
// could have been approved elsewhere (another instance, the admin API).
const pinRefresh = time.Second

var pinSets struct {
	mu   sync.Mutex
	sets map[string]*pinSet // storage key -> set
}

// storageKey is where a pin set lives in storage.
func storageKey(name string) string { return "mcp_tools/pins/" + name + ".json" }

// openPinSet is the process's set of that name on that storage, loaded.
func openPinSet(ctx context.Context, storage certmagic.Storage, p *Pin) (*pinSet, error) {
	pinSets.mu.Lock()
	if pinSets.sets == nil {
		pinSets.sets = map[string]*pinSet{}
	}
	// a storage that names itself (FileStorage:<path>) is the same one
	// across reloads: its sets are kept, not made again per config
	where := fmt.Sprintf("%p", storage)
	if st, ok := storage.(fmt.Stringer); ok {
		where = st.String()
	}
	id := where + "|" + p.Name
	s := pinSets.sets[id]
	if s == nil {
		s = &pinSet{name: p.Name, storage: storage, seen: map[string]string{}}
		pinSets.sets[id] = s
	}
	pinSets.mu.Unlock()
	return s, s.load(ctx)
}

// load reads the set from storage (absent: empty).
func (s *pinSet) load(ctx context.Context) error {
	f, err := readPinFile(ctx, s.storage, s.name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.file, s.loaded = f, time.Now()
	s.mu.Unlock()
	return nil
}

func readPinFile(ctx context.Context, storage certmagic.Storage, name string) (pinFile, error) {
	var f pinFile
	b, err := storage.Load(ctx, storageKey(name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return f, fmt.Errorf("mcp_tools: pin set %s: %w", name, err)
	default:
		if err := json.Unmarshal(b, &f); err != nil {
			return f, fmt.Errorf("mcp_tools: pin set %s in storage: %w", name, err)
		}
	}
	if f.Approved == nil {
		f.Approved = map[string]pinned{}
	}
	if f.Pending == nil {
		f.Pending = map[string]pinned{}
	}
	if f.Rejected == nil {
		f.Rejected = map[string]pinned{}
	}
	if f.Seeded == nil {
		f.Seeded = map[string]bool{}
	}
	return f, nil
}

// update changes the set in storage under storage's lock (every
// instance's writes are serialized), then takes the result in.
func (s *pinSet) update(ctx context.Context, change func(*pinFile) error) error {
	return updatePinFile(ctx, s.storage, s.name, func(f *pinFile) error {
		if err := change(f); err != nil {
			return err
		}
		s.mu.Lock()
		s.file, s.loaded = *f, time.Now()
		s.mu.Unlock()
		return nil
	})
}

func updatePinFile(ctx context.Context, storage certmagic.Storage, name string, change func(*pinFile) error) error {
	lock := storageKey(name) + ".lock"
	if err := storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("mcp_tools: pin set %s: lock: %w", name, err)
	}
	defer storage.Unlock(context.WithoutCancel(ctx), lock)
	f, err := readPinFile(ctx, storage, name)
	if err != nil {
		return err
	}
	if err := change(&f); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(f, "", "\t")
	return storage.Store(ctx, storageKey(name), b)
}

// refresh re-reads storage when the copy is older than pinRefresh.
func (s *pinSet) refresh(ctx context.Context) {
	s.mu.Lock()
	stale := time.Since(s.loaded) > pinRefresh
	s.mu.Unlock()
	if stale {
		_ = s.load(ctx)
	}
}

// seeded reports whether the set saw its first list of kind.
func (s *pinSet) seeded(kind string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.file.Seeded[kind]
}

// recheck re-reads storage for a call about to be refused, at most once
// per pinRecheck (the first time always): an approval elsewhere is seen
// by the next call, and a flood of refused calls reads storage rarely.
func (s *pinSet) recheck(ctx context.Context) {
	s.mu.Lock()
	due := time.Since(s.forced) > pinRecheck
	if due {
		s.forced = time.Now()
	}
	s.mu.Unlock()
	if due {
		_ = s.load(ctx)
	}
}

// pinRecheck bounds how often refused calls re-read storage.
const pinRecheck = 100 * time.Millisecond

// approvedDigest is the digest approved for key ("" none): in the route's
// config, or in storage.
func (s *pinSet) approvedDigest(key string, config map[string]string) string {
	if d := config[key]; d != "" {
		return d
	}
	return s.file.Approved[key].Digest
}

// callable reports whether a call of key may go to the server: an
// approved definition, and the one last listed (if one was) is it.
func (s *pinSet) callable(key string, config map[string]string) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	approved := s.approvedDigest(key, config)
	seen, listed := s.seen[key]
	switch {
	case approved == "":
		return false, "is not approved in pin set " + s.name
	case listed && seen != approved:
		return false, "is held by pin set " + s.name + ": its definition changed (" + seen + ") and awaits approval"
	}
	return true, ""
}

// templateOf is the resource template (as last listed) whose literal
// prefix is the longest that uri starts with ("" none).
func (s *pinSet) templateOf(uri string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	best, bestLen := "", -1
	for key := range s.seen {
		t, ok := strings.CutPrefix(key, "template:")
		if !ok {
			continue
		}
		prefix, _, _ := strings.Cut(t, "{")
		if strings.HasPrefix(uri, prefix) && len(prefix) > bestLen {
			best, bestLen = t, len(prefix)
		}
	}
	return best
}

// heldDefinition is a definition a list showed that is not approved.
type heldDefinition struct {
	key, digest string
	def         json.RawMessage
	was         *pinned // the approved one it replaces (nil: new)
}

// judge records what a list showed of key and reports whether it may be
// shown; held is set the first time a definition is held (to log, count
// and record).
func (s *pinSet) judge(key, digest string, def json.RawMessage, tofu bool, config map[string]string) (ok bool, held *heldDefinition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[key] = digest
	if s.approvedDigest(key, config) == digest {
		return true, nil
	}
	kind, _, _ := strings.Cut(key, ":")
	if tofu && !s.file.Seeded[kind] {
		return true, nil // approved with the whole first list (seed)
	}
	if s.file.Pending[key].Digest == digest || s.file.Rejected[key].Digest == digest {
		return false, nil // known, and already reported
	}
	h := &heldDefinition{key: key, digest: digest, def: def}
	if a, ok := s.file.Approved[key]; ok {
		h.was = &a
	}
	return false, h
}

// definitionFields are the members of each kind's definition that its
// digest covers.
var definitionFields = map[string][]string{
	"tool":     {"name", "title", "description", "inputSchema", "outputSchema", "annotations"},
	"prompt":   {"name", "title", "description", "arguments"},
	"template": {"uriTemplate", "name", "title", "description", "mimeType"},
}

// definition is an entry's pinned definition in canonical JSON (members
// sorted, as decoded: numbers exactly as sent) and its digest.
func definition(kind string, e map[string]json.RawMessage) (json.RawMessage, string) {
	def := map[string]any{}
	for _, f := range definitionFields[kind] {
		raw, ok := e[f]
		if !ok {
			continue
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var v any
		if d.Decode(&v) == nil {
			def[f] = v
		}
	}
	b, _ := json.Marshal(def)
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

// diff words how a definition changed, member by member.
func diff(was, now json.RawMessage) string {
	if was == nil {
		return "new: " + string(now)
	}
	var a, b map[string]json.RawMessage
	_ = json.Unmarshal(was, &a)
	_ = json.Unmarshal(now, &b)
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var lines []string
	for _, k := range names {
		switch {
		case a[k] == nil:
			lines = append(lines, k+": added "+string(b[k]))
		case b[k] == nil:
			lines = append(lines, k+": removed (was "+string(a[k])+")")
		case !bytes.Equal(a[k], b[k]):
			lines = append(lines, k+": "+string(a[k])+" -> "+string(b[k]))
		}
	}
	return strings.Join(lines, "; ")
}

// pinKind is the pin key's kind of a list's entries.
func pinKind(member string) string {
	switch member {
	case "tools":
		return "tool"
	case "prompts":
		return "prompt"
	case "resourceTemplates":
		return "template"
	}
	return ""
}

var pinMetrics struct {
	once    sync.Once
	held    *prometheus.CounterVec
	pending *prometheus.GaugeVec
}

func initPinMetrics(reg *prometheus.Registry) {
	pinMetrics.once.Do(func() {
		pinMetrics.held = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_tools_pins_held_total", Help: "Definitions held back by a pin set (changed or new), by kind.",
		}, []string{"pin", "kind"})
		pinMetrics.pending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mcp_tools_pins_pending", Help: "Definitions of a pin set awaiting approval.",
		}, []string{"pin"})
	})
	for _, c := range []prometheus.Collector{pinMetrics.held, pinMetrics.pending} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

// hold records held definitions: a warn line, the metric, the audit entry
// with the diff, and the pending entry in storage.
func (h *Handler) hold(ctx context.Context, held []*heldDefinition) {
	if len(held) == 0 {
		return
	}
	for _, d := range held {
		kind, name, _ := strings.Cut(d.key, ":")
		var was json.RawMessage
		approved := ""
		if d.was != nil {
			was, approved = d.was.Definition, d.was.Digest
		}
		change := diff(was, d.def)
		h.logger.Warn("a definition is held back by its pin: it changed or is new, and awaits approval",
			zap.String("pin", h.Pin.Name), zap.String("kind", kind), zap.String("name", name),
			zap.String("digest", d.digest), zap.String("approved_digest", approved), zap.String("diff", change))
		h.audit.Info("mcp pin held", zap.String("pin", h.Pin.Name), zap.String("kind", kind), zap.String("name", name),
			zap.String("digest", d.digest), zap.String("approved_digest", approved), zap.String("diff", change))
		if pinMetrics.held != nil {
			pinMetrics.held.WithLabelValues(h.Pin.Name, kind).Inc()
		}
	}
	err := h.pins.update(ctx, func(f *pinFile) error {
		for _, d := range held {
			f.Pending[d.key] = pinned{Digest: d.digest, Definition: d.def, At: time.Now().UTC()}
		}
		if pinMetrics.pending != nil {
			pinMetrics.pending.WithLabelValues(h.Pin.Name).Set(float64(len(f.Pending)))
		}
		return nil
	})
	if err != nil {
		h.logger.Error("could not record held definitions in storage", zap.String("pin", h.Pin.Name), zap.Error(err))
	}
}

// seed approves, in tofu mode, what the first list showed.
func (h *Handler) seed(ctx context.Context, kind string, defs map[string]pinned) {
	err := h.pins.update(ctx, func(f *pinFile) error {
		if f.Seeded[kind] {
			return nil
		}
		f.Seeded[kind] = true
		for k, d := range defs {
			if _, ok := f.Approved[k]; !ok {
				f.Approved[k] = d
			}
		}
		return nil
	})
	if err != nil {
		h.logger.Error("could not record the first definitions in storage", zap.String("pin", h.Pin.Name), zap.Error(err))
		return
	}
	keys := make([]string, 0, len(defs))
	for k := range defs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h.logger.Info("pin set seeded (trust on first use)", zap.String("pin", h.Pin.Name), zap.String("kind", kind), zap.Strings("approved", keys))
}
