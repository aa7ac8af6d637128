package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// faultStorage is Caddy's file storage (the real files on disk) whose Load
// can be made to fail (not "not found": an I/O error) or to block until the
// test releases it, as a remote storage that hangs would.
type faultStorage struct {
	*certmagic.FileStorage

	mu      sync.Mutex
	loadErr error         // Load fails with it
	gate    chan struct{} // non-nil: Load waits until it is closed
	entered chan struct{} // told (without blocking) when a Load waits at gate
}

func (s *faultStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	err, gate, entered := s.loadErr, s.gate, s.entered
	s.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate // like certmagic.FileStorage, it does not watch ctx
	}
	if err != nil {
		return nil, err
	}
	return s.FileStorage.Load(ctx, key)
}

func newFaultStorage(t *testing.T) *faultStorage {
	t.Helper()
	// For finds a ring by the storage's kind: every subtest starts anew
	rings.Clear()
	t.Cleanup(rings.Clear)
	return &faultStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
}

// knobs sets the package's tunables for one test and restores them.
func knobs(t *testing.T) {
	t.Helper()
	rot, ret, re, lw := Rotation, Retain, ReloadEvery, LookupWait
	t.Cleanup(func() { Rotation, Retain, ReloadEvery, LookupWait = rot, ret, re, lw })
	// a lookup waits for the refresh it causes, however slow the machine
	Rotation, Retain, ReloadEvery, LookupWait = 7*24*time.Hour, 4, time.Hour, time.Minute
}

func newStoredKey(t *testing.T, id string, age time.Duration) storedKey {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	return storedKey{ID: id, Secret: secret, Created: time.Now().Add(-age).UTC().Round(0)}
}

func writeRing(t *testing.T, s *faultStorage, content []byte) {
	t.Helper()
	if err := s.FileStorage.Store(context.Background(), StorageKey, content); err != nil {
		t.Fatal(err)
	}
}

func marshal(t *testing.T, ks ...storedKey) []byte {
	t.Helper()
	b, err := json.Marshal(ks)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onDisk is the file as it is on disk (not through the faults).
func onDisk(t *testing.T, s *faultStorage) []byte {
	t.Helper()
	b, err := s.FileStorage.Load(context.Background(), StorageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ids(t *testing.T, b []byte) []string {
	t.Helper()
	var ks []storedKey
	if err := json.Unmarshal(b, &ks); err != nil {
		t.Fatalf("the ring on disk is not a key ring: %v: %s", err, b)
	}
	out := []string{}
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

func warnings(logs *observer.ObservedLogs) []string {
	out := []string{}
	for _, e := range logs.All() {
		if e.Level >= zapcore.WarnLevel {
			out = append(out, e.Message)
		}
	}
	return out
}

// refresh makes the ring read storage again (and rotate, if it is due),
// as an id naming a key it does not know does.
func refresh(t *testing.T, r *Ring) {
	t.Helper()
	ReloadEvery = 0
	defer func() { ReloadEvery = time.Hour }()
	if k := r.Lookup(context.Background(), "UNKNOWN2"); k != nil {
		t.Fatalf("a key id that no ring has was found: %s", k.ID)
	}
}

// sameKey says whether two keys derive the same secrets.
func sameKey(a, b *Key) bool {
	return a != nil && b != nil && a.ID == b.ID && bytes.Equal(a.Derive("t"), b.Derive("t"))
}

const (
	warnLacks     = "the shared key ring in storage lacks keys this process knows; writing them back"
	warnMalformed = "ignored a malformed key of the shared key ring"
	warnUnread    = "could not read the shared key ring; keeping the keys known"
	warnMissing   = "the shared key ring is missing from storage; keeping the keys known (the next rotation writes them back)"
)

// A ring that reads storage gone wrong (the file missing, empty, an empty
// list, truncated, keys that are not keys, a storage that fails) keeps
// every key it knows, never writes a ring with fewer keys, writes the
// known keys back where storage was readable, and refuses malformed keys
// with a warning. A rotation merges the same way.
func TestStorageFaults(t *testing.T) {
	knobs(t)
	malformed := func(id string, secret []byte, created time.Time) string {
		b, _ := json.Marshal([]map[string]any{{"id": id, "secret": secret, "created": created}})
		return string(b)
	}
	now := time.Now().UTC()
	const keep = "\x00" // the file stays as it was seeded
	faults := []struct {
		name    string
		content string // keys.json on disk after the fault ("" with remove: deleted)
		remove  bool
		loadErr error
		heals   bool     // storage was readable: the known keys are written back
		warns   []string // Warn-level messages of the refresh
		// a rotation writes the ring, and warns that storage lacked the
		// known key, where heals or rotationHeals
		rotationHeals bool
	}{
		{name: "missing", remove: true, warns: []string{warnMissing}, rotationHeals: true},
		{name: "empty", content: "", heals: true, warns: []string{warnLacks}},
		{name: "empty list", content: "[]", heals: true, warns: []string{warnLacks}},
		{name: "null", content: "null", heals: true, warns: []string{warnLacks}},
		{name: "truncated", content: `[{"id":"TRUNCATED","secret":"`, warns: []string{warnUnread}},
		{name: "not a list", content: `{"id":"NOTALIST"}`, warns: []string{warnUnread}},
		{name: "short secret", content: malformed("SHORTKEY", make([]byte, 16), now), heals: true,
			warns: []string{warnMalformed, warnLacks}},
		{name: "no secret", content: `[{"id":"NOSECRET","created":"` + now.Format(time.RFC3339) + `"}]`, heals: true,
			warns: []string{warnMalformed, warnLacks}},
		{name: "secret not base64", content: `[{"id":"BADBASE6","secret":"!!","created":"` + now.Format(time.RFC3339) + `"}]`, heals: true,
			warns: []string{warnMalformed, warnLacks}},
		{name: "empty id", content: malformed("", make([]byte, 32), now), heals: true,
			warns: []string{warnMalformed, warnLacks}},
		{name: "id with separator", content: malformed("BAD~ID", make([]byte, 32), now), heals: true,
			warns: []string{warnMalformed, warnLacks}},
		{name: "zero time", content: malformed("ZEROTIME", make([]byte, 32), time.Time{}), heals: true,
			warns: []string{warnMalformed, warnLacks}},
		{name: "unreadable", content: keep, loadErr: &fs.PathError{Op: "read", Path: StorageKey, Err: syscall.EIO},
			warns: []string{warnUnread}},
	}
	for _, f := range faults {
		for _, rotation := range []bool{false, true} {
			name := f.name + "/reload"
			if rotation {
				name = f.name + "/rotation"
			}
			heals, warns := f.heals, f.warns
			if rotation && f.rotationHeals {
				heals, warns = true, []string{warnLacks}
			}
			t.Run(name, func(t *testing.T) {
				Rotation = 7 * 24 * time.Hour
				s := newFaultStorage(t)
				known := newStoredKey(t, "KNOWNKEY", 6*24*time.Hour) // older than Grace: new ids use it
				writeRing(t, s, marshal(t, known))
				core, logs := observer.New(zapcore.InfoLevel)
				r, err := For(context.Background(), s, zap.New(core))
				if err != nil {
					t.Fatal(err)
				}
				k0 := r.Current()
				if k0 == nil || k0.ID != known.ID {
					t.Fatalf("Current() = %v, want %s", k0, known.ID)
				}

				switch {
				case f.remove:
					if err := s.FileStorage.Delete(context.Background(), StorageKey); err != nil {
						t.Fatal(err)
					}
				case f.content != keep:
					writeRing(t, s, []byte(f.content))
				}
				s.mu.Lock()
				s.loadErr = f.loadErr
				s.mu.Unlock()
				before := onDisk(t, s)
				if rotation {
					Rotation = 24 * time.Hour // the known key is due for rotation
				}
				refresh(t, r)

				if k := r.Current(); !sameKey(k, k0) {
					t.Fatalf("Current() = %v after the refresh, want the known key %s", k, k0.ID)
				}
				if k := r.Lookup(context.Background(), known.ID); !sameKey(k, k0) {
					t.Fatalf("Lookup(%s) = %v after the refresh, want the known key", known.ID, k)
				}
				after := onDisk(t, s)
				switch {
				case !heals:
					if !bytes.Equal(after, before) {
						t.Errorf("storage that could not be read was overwritten:\n%s\nwas\n%s", after, before)
					}
				case rotation:
					got := ids(t, after)
					if len(got) != 2 || got[1] != known.ID || got[0] == known.ID {
						t.Fatalf("ring on disk after rotation = %v, want [<new> %s]", got, known.ID)
					}
					if k := r.Lookup(context.Background(), got[0]); k == nil {
						t.Errorf("the new key %s is not in the ring", got[0])
					}
				default:
					if got := ids(t, after); !slices.Equal(got, []string{known.ID}) {
						t.Errorf("ring on disk = %v, want [%s]", got, known.ID)
					}
				}
				if heals {
					var ks []storedKey
					_ = json.Unmarshal(after, &ks)
					if i := slices.IndexFunc(ks, func(k storedKey) bool { return k.ID == known.ID }); i < 0 ||
						!bytes.Equal(ks[i].Secret, known.Secret) || !ks[i].Created.Equal(known.Created) {
						t.Errorf("the known key was not written back as it was: %s", after)
					}
				}
				if got := warnings(logs); !slices.Equal(got, warns) {
					t.Errorf("warnings = %q, want %q", got, warns)
				}
			})
		}
	}
}

// A ring merges what storage holds with what it knows, newest first, and
// keeps Retain keys: another instance's ring (written over this one's)
// adds its keys and drops none of this one's but by age.
func TestMerge(t *testing.T) {
	knobs(t)
	day := 24 * time.Hour
	for _, c := range []struct {
		name    string
		retain  int
		known   []storedKey // the ring at start
		written []storedKey // what another instance then wrote
		want    []string    // the ring after, in memory and on disk
	}{
		{name: "another ring", retain: 4,
			known:   []storedKey{newStoredKey(t, "AAAAAAAA", 2*day), newStoredKey(t, "BBBBBBBB", 9*day)},
			written: []storedKey{newStoredKey(t, "CCCCCCCC", day)},
			want:    []string{"CCCCCCCC", "AAAAAAAA", "BBBBBBBB"}},
		{name: "interleaved", retain: 4,
			known:   []storedKey{newStoredKey(t, "AAAAAAAA", 2*day), newStoredKey(t, "BBBBBBBB", 9*day)},
			written: []storedKey{newStoredKey(t, "CCCCCCCC", day), newStoredKey(t, "DDDDDDDD", 5*day)},
			want:    []string{"CCCCCCCC", "AAAAAAAA", "DDDDDDDD", "BBBBBBBB"}},
		{name: "beyond retain", retain: 2,
			known:   []storedKey{newStoredKey(t, "AAAAAAAA", 2*day), newStoredKey(t, "BBBBBBBB", 9*day)},
			written: []storedKey{newStoredKey(t, "CCCCCCCC", day)},
			want:    []string{"CCCCCCCC", "AAAAAAAA"}},
		{name: "a subset", retain: 4,
			known:   []storedKey{newStoredKey(t, "AAAAAAAA", 2*day), newStoredKey(t, "BBBBBBBB", 9*day)},
			written: []storedKey{newStoredKey(t, "BBBBBBBB", 9*day)}, // same id, other secret: the known one stays
			want:    []string{"AAAAAAAA", "BBBBBBBB"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			Retain = c.retain
			s := newFaultStorage(t)
			writeRing(t, s, marshal(t, c.known...))
			r, err := For(context.Background(), s, nil)
			if err != nil {
				t.Fatal(err)
			}
			writeRing(t, s, marshal(t, c.written...))
			refresh(t, r)
			var got []string
			for _, k := range r.current() {
				got = append(got, k.ID)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("ring in memory = %v, want %v", got, c.want)
			}
			if got := ids(t, onDisk(t, s)); !slices.Equal(got, c.want) {
				t.Errorf("ring on disk = %v, want %v", got, c.want)
			}
			for _, k := range c.known {
				if !slices.Contains(c.want, k.ID) {
					continue
				}
				if got := r.find(k.ID); got == nil || !bytes.Equal(got.secret, k.Secret) {
					t.Errorf("key %s: the secret this process knew was replaced", k.ID)
				}
			}
		})
	}
}

// A storage whose Load hangs holds up no request: keys the ring knows
// verify at once, and an unknown key's lookup ends with its context.
func TestSlowStorage(t *testing.T) {
	knobs(t)
	s := newFaultStorage(t)
	known := newStoredKey(t, "KNOWNKEY", 6*24*time.Hour)
	writeRing(t, s, marshal(t, known))
	r, err := For(context.Background(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	k0 := r.Current()
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	s.mu.Lock()
	s.gate, s.entered = gate, entered
	s.mu.Unlock()
	released := false
	release := func() {
		if !released {
			released = true
			close(gate)
		}
	}
	defer release()

	ReloadEvery = 0 // every call finds a reload due
	ctx, cancel := context.WithCancel(context.Background())
	unknown := make(chan *Key, 1)
	go func() { unknown <- r.Lookup(ctx, "UNKNOWN2") }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the lookup of an unknown key did not read storage")
	}

	for _, c := range []struct {
		name string
		call func() *Key
	}{
		{"Lookup of the known key", func() *Key { return r.Lookup(context.Background(), known.ID) }},
		{"Current", r.Current},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := make(chan *Key, 1)
			go func() { got <- c.call() }()
			select {
			case k := <-got:
				if !sameKey(k, k0) {
					t.Errorf("%v, want the known key %s", k, known.ID)
				}
			case <-time.After(10 * time.Second):
				release()
				t.Fatal("blocked on the slow storage")
			}
		})
	}

	cancel()
	select {
	case k := <-unknown:
		if k != nil {
			t.Errorf("unknown key found: %s", k.ID)
		}
	case <-time.After(10 * time.Second):
		t.Error("the lookup of an unknown key waited on the slow storage past its context")
		release()
		<-unknown
	}

	// without a deadline of its own, it waits LookupWait at most
	LookupWait = 50 * time.Millisecond
	got := make(chan *Key, 1)
	go func() { got <- r.Lookup(context.Background(), "UNKNOWN3") }()
	select {
	case k := <-got:
		if k != nil {
			t.Errorf("unknown key found: %s", k.ID)
		}
	case <-time.After(10 * time.Second):
		t.Error("the lookup of an unknown key waited on the slow storage past LookupWait")
		release()
		<-got
	}
	LookupWait = time.Minute

	release()
	refresh(t, r) // the refresh that waited ends
	if k := r.Lookup(context.Background(), known.ID); !sameKey(k, k0) {
		t.Errorf("after the storage answered: %v, want the known key", k)
	}
}
