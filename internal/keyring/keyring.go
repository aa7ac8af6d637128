// Package keyring keeps the secrets that every caddymcp instance of a
// deployment shares, in Caddy's configured storage (the file system by
// default; Redis or any other storage module in a cluster): the keys that
// authenticate instance-aware ids (2025 session ids) and seal requestState.
//
// The ring lives in storage as caddymcp/keys.json: a list of keys, the
// newest first. New ids are made with the newest key older than Grace (so
// that every process has read it before ids made with it arrive); an id
// names the key that made it, so every key still in the ring verifies. When the newest
// key is older than Rotation, the instance that notices adds a new one
// (under a storage lock, so that instances starting together agree) and
// drops keys beyond Retain: rotation never invalidates an id made within
// Retain × Rotation. An id naming a key this process has not seen makes it
// read the ring again (at most once per ReloadEvery): a key another
// instance added is learned on first use.
//
// Storage is not trusted to keep the ring. What a process reads is merged
// with the keys it knows (newest first, Retain of them), so a ring that
// reads as missing, empty or smaller never makes it forget a key, and every
// write (a rotation, or writing back the keys that storage lacks) is a
// read-merge-write under the storage lock that never writes over content it
// could not read. Keys that are not keys (a short secret, a malformed id,
// no creation time) are ignored with a warning. Requests never wait on
// storage for a key the process knows; a lookup of an unknown key waits for
// the read it causes at most LookupWait (and no longer than its context).
package keyring

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Storage key and lock name of the ring.
const (
	StorageKey = "caddymcp/keys.json"
	lockName   = "caddymcp_keys"
)

var (
	// Rotation is how old the newest key may grow before a new one is added.
	Rotation = 7 * 24 * time.Hour
	// Retain is how many keys the ring keeps (the newest first).
	Retain = 4
	// ReloadEvery bounds how often an unknown key id makes the ring be read
	// again, and how often it is read in any case.
	ReloadEvery = 5 * time.Second
	// Grace is how old a key must be before new ids are made with it: long
	// enough for every process of the deployment to have read it (they read
	// the ring every ReloadEvery while they serve), so that no id is made
	// with a key that another instance or the balancer does not know yet.
	Grace = 30 * time.Second
	// LookupWait bounds how long a lookup of a key id this process does not
	// know waits for the storage read it causes (a storage that hangs holds
	// up such a request this long, and no other request at all).
	LookupWait = 2 * time.Second
)

// minSecret is the shortest secret a key may have (HMAC-SHA256's block of
// entropy); maxID the longest key id (ids this package makes have 8).
const (
	minSecret = 32
	maxID     = 32
)

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding) // of idAlphabet

type storedKey struct {
	ID      string    `json:"id"`
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
}

// Key is one key of the ring, with what is derived from it.
type Key struct {
	ID      string
	created time.Time
	secret  []byte
}

// Derive is a key for one purpose (HMAC-SHA256 of the purpose under the
// secret): the MAC key of session ids and the AEAD key of requestState
// never coincide.
func (k *Key) Derive(purpose string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("caddymcp " + purpose))
	return m.Sum(nil)
}

// Ring is the shared key ring of one storage.
//
// Lock order: the storage lock (lockName, taken only by write) before mu;
// mu is a leaf, and no storage I/O happens under it.
type Ring struct {
	logger *zap.Logger

	mu         sync.Mutex
	storage    certmagic.Storage // the newest config's
	keys       []*Key            // newest first; never fewer once it has one
	lastReload time.Time
	refreshing chan struct{}     // closed when the refresh in flight ends; nil: none
	missing    bool              // storage had no ring at the last read (warned once)
	derived    map[string][]byte // key id + purpose -> derived key
}

var rings sync.Map // storage identity -> *Ring

// For returns the ring of storage, reading it (and creating its first key
// if there is none) on first use in this process. It fails when storage
// cannot be read (or holds something that is not a key ring: it is never
// overwritten) or the first key cannot be stored.
func For(ctx context.Context, storage certmagic.Storage, logger *zap.Logger) (*Ring, error) {
	// one ring per storage: a process has one configured storage, and a
	// config load makes a new storage value, so the ring is found by the
	// storage's kind (and a file storage's path) and takes the newest value
	id := fmt.Sprintf("%T", storage)
	if fs, ok := storage.(*certmagic.FileStorage); ok {
		id = "file " + fs.Path
	}
	if v, ok := rings.Load(id); ok {
		r := v.(*Ring)
		r.mu.Lock()
		r.storage = storage
		r.mu.Unlock()
		r.maybeRefresh()
		return r, nil
	}
	r := &Ring{storage: storage, logger: logger, derived: map[string][]byte{}, lastReload: time.Now()}
	if err := r.sync(ctx); err != nil {
		return nil, err
	}
	if len(r.current()) == 0 { // sync stores a first key or fails; defensive
		return nil, errors.New("the shared key ring has no key")
	}
	v, _ := rings.LoadOrStore(id, r)
	return v.(*Ring), nil
}

// Local is a ring of one key that only this process knows: what an
// instance uses when storage cannot hold the shared ring (its ids then
// verify nowhere else, and not after a restart).
func Local() *Ring {
	r := &Ring{derived: map[string][]byte{}}
	r.keys = []*Key{newKey()}
	return r
}

func newKey() *Key {
	secret := make([]byte, minSecret)
	_, _ = rand.Read(secret)
	idb := make([]byte, 5)
	_, _ = rand.Read(idb)
	return &Key{ID: idEncoding.EncodeToString(idb), created: time.Now().UTC().Round(0), secret: secret}
}

func (r *Ring) store() certmagic.Storage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.storage
}

func (r *Ring) current() []*Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys
}

func stale(keys []*Key) bool {
	return len(keys) == 0 || time.Since(keys[0].created) > Rotation
}

func (r *Ring) warn(msg string, fields ...zap.Field) {
	if r.logger != nil {
		r.logger.Warn(msg, fields...)
	}
}

// malformed says what is wrong with a stored key ("" if nothing).
func malformed(k storedKey) string {
	switch {
	case k.ID == "" || len(k.ID) > maxID || strings.Trim(k.ID, idAlphabet) != "":
		return fmt.Sprintf("id must be 1 to %d characters of %s", maxID, idAlphabet)
	case len(k.Secret) < minSecret:
		return fmt.Sprintf("secret has %d bytes, fewer than %d", len(k.Secret), minSecret)
	case k.Created.IsZero():
		return "no creation time"
	}
	return ""
}

// parse reads the stored ring: no content (or null) is a ring without keys;
// content that is not a JSON list is an error (so that it is never written
// over); entries that are not keys are skipped (refused counts them) and,
// with warn, logged.
func (r *Ring) parse(b []byte, warn bool) (ks []storedKey, refused int, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, 0, nil
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, 0, fmt.Errorf("%s in storage is not a key ring: %w", StorageKey, err)
	}
	for i, e := range entries {
		var k storedKey
		why := ""
		if err := json.Unmarshal(e, &k); err != nil {
			why = "not a key: " + err.Error()
		} else if why = malformed(k); why == "" && slices.ContainsFunc(ks, func(o storedKey) bool { return o.ID == k.ID }) {
			why = "id repeated"
		}
		if why != "" {
			refused++
			if warn {
				r.warn("ignored a malformed key of the shared key ring", zap.Int("index", i),
					zap.String("id", truncate(k.ID, maxID)), zap.String("reason", why))
			}
			continue
		}
		ks = append(ks, k)
	}
	return ks, refused, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// read loads and parses the stored ring (no keys, !exists where there is
// none).
func (r *Ring) read(ctx context.Context, st certmagic.Storage, warn bool) (ks []storedKey, refused int, exists bool, err error) {
	b, err := st.Load(ctx, StorageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, true, fmt.Errorf("reading %s from storage: %w", StorageKey, err)
	}
	ks, refused, err = r.parse(b, warn)
	return ks, refused, true, err
}

// merge is the keys of known and stored, newest first, Retain of them; a
// key id both hold keeps the known secret (ids made with it must verify).
func merge(known []*Key, stored []storedKey) (keys []*Key, conflicts []string) {
	keys = slices.Clone(known)
	for _, s := range stored {
		if i := slices.IndexFunc(keys, func(k *Key) bool { return k.ID == s.ID }); i >= 0 {
			if !hmac.Equal(keys[i].secret, s.Secret) {
				conflicts = append(conflicts, s.ID)
			}
			continue
		}
		keys = append(keys, &Key{ID: s.ID, created: s.Created, secret: s.Secret})
	}
	slices.SortStableFunc(keys, func(a, b *Key) int {
		if c := b.created.Compare(a.created); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if n := max(Retain, 1); len(keys) > n {
		keys = keys[:n]
	}
	return keys, conflicts
}

// adopt merges stored into the keys of the ring and returns them.
func (r *Ring) adopt(stored []storedKey, warn bool) []*Key {
	r.mu.Lock()
	keys, conflicts := merge(r.keys, stored)
	r.keys = keys
	for name := range r.derived {
		id, _, _ := strings.Cut(name, "\x00")
		if !slices.ContainsFunc(keys, func(k *Key) bool { return k.ID == id }) {
			delete(r.derived, name)
		}
	}
	r.mu.Unlock()
	if warn && len(conflicts) > 0 {
		r.warn("keys in storage have other secrets than the keys of the same id this process knows; keeping the known ones",
			zap.Strings("keys", conflicts))
	}
	return keys
}

// lacks says whether stored lacks a key of keys.
func lacks(stored []storedKey, keys []*Key) bool {
	for _, k := range keys {
		if !slices.ContainsFunc(stored, func(s storedKey) bool { return s.ID == k.ID && hmac.Equal(s.Secret, k.secret) }) {
			return true
		}
	}
	return false
}

// sync reads the ring from storage into the keys this process knows, and
// writes the ring when it is due for rotation, or storage holds a ring that
// lacks some of the keys or has entries that are not keys. A ring missing
// from storage is written by the next rotation or the next process that
// starts without keys, not at once (it may have been deleted on purpose,
// with every process to be restarted).
func (r *Ring) sync(ctx context.Context) error {
	st := r.store()
	stored, refused, exists, err := r.read(ctx, st, true)
	if err != nil {
		return err
	}
	keys := r.adopt(stored, true)
	r.mu.Lock()
	warn := !exists && !r.missing && len(keys) > 0
	r.missing = !exists
	r.mu.Unlock()
	switch {
	case stale(keys):
		return r.write(ctx, st)
	case !exists:
		if warn {
			r.warn("the shared key ring is missing from storage; keeping the keys known (the next rotation writes them back)",
				zap.Int("keys", len(keys)))
		}
	case refused > 0 || lacks(stored, keys):
		return r.write(ctx, st)
	}
	return nil
}

// write reads the ring again under the storage lock, merges it with the
// keys this process knows, adds a key when the newest is older than
// Rotation, and stores the result if it differs from what storage holds.
// It never writes over content it could not read, and never stores a ring
// without a key that this process or storage had (but those beyond Retain).
func (r *Ring) write(ctx context.Context, st certmagic.Storage) error {
	if err := st.Lock(ctx, lockName); err != nil {
		return fmt.Errorf("locking the key ring in storage: %w", err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), lockName) }()
	stored, refused, _, err := r.read(ctx, st, false) // warned about by the read before
	if err != nil {
		return err
	}
	keys, _ := merge(r.current(), stored)
	lost := lacks(stored, keys) // keys this process knows and storage does not
	var added *Key
	if stale(keys) {
		added = newKey()
		keys, _ = merge(append([]*Key{added}, keys...), nil)
	}
	if added == nil && refused == 0 && !lost {
		r.adopt(stored, false)
		return nil
	}
	if lost {
		r.warn("the shared key ring in storage lacks keys this process knows; writing them back",
			zap.Int("stored", len(stored)), zap.Int("keys", len(keys)))
	}
	out := make([]storedKey, len(keys))
	for i, k := range keys {
		out[i] = storedKey{ID: k.ID, Secret: k.secret, Created: k.created}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if err := st.Store(ctx, StorageKey, b); err != nil {
		return fmt.Errorf("storing the key ring: %w", err)
	}
	// only what is stored is used: a new key that no other process can
	// read never makes ids
	r.adopt(out, false)
	if added != nil && r.logger != nil {
		r.logger.Info("added a key to the shared key ring", zap.String("key", added.ID), zap.Int("keys", len(out)))
	}
	return nil
}

// maybeRefresh starts a refresh (sync) in the background when the ring was
// last read more than ReloadEvery ago, and returns the channel that is
// closed when the refresh in flight ends (nil: none is).
func (r *Ring) maybeRefresh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refreshing != nil {
		return r.refreshing
	}
	if r.storage == nil || time.Since(r.lastReload) <= ReloadEvery {
		return nil
	}
	done := make(chan struct{})
	r.refreshing, r.lastReload = done, time.Now()
	go func() {
		defer func() {
			r.mu.Lock()
			r.refreshing = nil
			r.mu.Unlock()
			close(done)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.sync(ctx); err != nil {
			r.warn("could not read the shared key ring; keeping the keys known", zap.Error(err))
		}
	}()
	return done
}

// Current is the key new ids are made with: the newest one older than
// Grace (the oldest if none is; the only one on a new ring). It is never
// nil: a ring holds a key from For or Local on, and keeps one.
func (r *Ring) Current() *Key {
	r.maybeRefresh()
	keys := r.current()
	if len(keys) == 0 { // a Ring not made by For or Local: one key of its own
		r.mu.Lock()
		if len(r.keys) == 0 {
			r.keys = []*Key{newKey()}
		}
		keys = r.keys
		r.mu.Unlock()
	}
	for _, k := range keys {
		if time.Since(k.created) >= Grace {
			return k
		}
	}
	return keys[len(keys)-1]
}

// Lookup finds a key by id. An id this process has not seen makes it read
// the ring again, at most once per ReloadEvery, and waits for that read at
// most LookupWait and while ctx lasts; a known id never waits.
func (r *Ring) Lookup(ctx context.Context, id string) *Key {
	done := r.maybeRefresh() // a process that only verifies (the balancer) reads new keys too
	if k := r.find(id); k != nil || done == nil {
		return k
	}
	t := time.NewTimer(LookupWait)
	defer t.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-t.C:
	}
	return r.find(id)
}

func (r *Ring) find(id string) *Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// DerivedFor is Derive, cached per key and purpose.
func (r *Ring) DerivedFor(k *Key, purpose string) []byte {
	name := k.ID + "\x00" + purpose
	r.mu.Lock()
	d, ok := r.derived[name]
	r.mu.Unlock()
	if ok {
		return d
	}
	d = k.Derive(purpose)
	r.mu.Lock()
	if r.derived == nil {
		r.derived = map[string][]byte{}
	}
	r.derived[name] = d
	r.mu.Unlock()
	return d
}

// All is every key of the ring, newest first (Current among them): what
// verifies, where Current is what signs. A key another instance added is
// in it once this process has read the ring again.
func (r *Ring) All() []*Key {
	r.maybeRefresh()
	return slices.Clone(r.current())
}
