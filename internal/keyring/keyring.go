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
package keyring

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
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
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

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
// Lock order: mu is a leaf; no storage I/O happens under it.
type Ring struct {
	logger *zap.Logger

	mu         sync.Mutex
	storage    certmagic.Storage // the newest config's
	keys       []*Key            // newest first
	lastReload time.Time
	derived    map[string][]byte // key id + purpose -> derived key

	rotating atomic.Bool
}

var rings sync.Map // storage identity -> *Ring

// For returns the ring of storage, reading it (and creating its first key
// if there is none) on first use in this process.
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
	r := &Ring{storage: storage, logger: logger, derived: map[string][]byte{}}
	if err := r.reload(ctx); err != nil {
		return nil, err
	}
	if len(r.current()) == 0 || r.stale() {
		if err := r.rotate(ctx); err != nil {
			return nil, err
		}
	}
	v, _ := rings.LoadOrStore(id, r)
	return v.(*Ring), nil
}

// Local is a ring of one key that only this process knows: what an
// instance uses when storage cannot hold the shared ring (its ids then
// verify nowhere else, and not after a restart).
func Local() *Ring {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	idb := make([]byte, 5)
	_, _ = rand.Read(idb)
	return &Ring{derived: map[string][]byte{},
		keys: []*Key{{ID: idEncoding.EncodeToString(idb), created: time.Now(), secret: secret}}}
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

func (r *Ring) stale() bool {
	keys := r.current()
	return len(keys) == 0 || time.Since(keys[0].created) > Rotation
}

// load reads the ring from storage (nil, nil where there is none yet).
func (r *Ring) load(ctx context.Context) ([]storedKey, error) {
	b, err := r.store().Load(ctx, StorageKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s from storage: %w", StorageKey, err)
	}
	var ks []storedKey
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, fmt.Errorf("%s in storage is not a key ring: %w", StorageKey, err)
	}
	return ks, nil
}

func (r *Ring) reload(ctx context.Context) error {
	ks, err := r.load(ctx)
	if err != nil {
		return err
	}
	keys := make([]*Key, 0, len(ks))
	for _, k := range ks {
		if k.ID != "" && len(k.Secret) >= 32 {
			keys = append(keys, &Key{ID: k.ID, created: k.Created, secret: k.Secret})
		}
	}
	r.mu.Lock()
	r.keys = keys
	r.lastReload = time.Now()
	r.mu.Unlock()
	return nil
}

// rotate adds a new key under the storage lock, unless another instance
// just did, and drops keys beyond Retain.
func (r *Ring) rotate(ctx context.Context) error {
	if err := r.store().Lock(ctx, lockName); err != nil {
		return fmt.Errorf("locking the key ring in storage: %w", err)
	}
	defer func() { _ = r.store().Unlock(context.WithoutCancel(ctx), lockName) }()
	ks, err := r.load(ctx)
	if err != nil {
		return err
	}
	if len(ks) == 0 || time.Since(ks[0].Created) > Rotation {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		idb := make([]byte, 5)
		_, _ = rand.Read(idb)
		ks = append([]storedKey{{ID: idEncoding.EncodeToString(idb), Secret: secret, Created: time.Now().UTC()}}, ks...)
		if len(ks) > Retain {
			ks = ks[:Retain]
		}
		b, _ := json.Marshal(ks)
		if err := r.store().Store(ctx, StorageKey, b); err != nil {
			return fmt.Errorf("storing the key ring: %w", err)
		}
		if r.logger != nil {
			r.logger.Info("added a key to the shared key ring", zap.String("key", ks[0].ID), zap.Int("keys", len(ks)))
		}
	}
	return r.reload(ctx)
}

// maybeRefresh reads the ring again in the background when it was last
// read more than ReloadEvery ago, and rotates it when its newest key is
// older than Rotation.
func (r *Ring) maybeRefresh() {
	if r.store() == nil {
		return
	}
	r.mu.Lock()
	due := time.Since(r.lastReload) > ReloadEvery
	if due {
		r.lastReload = time.Now() // one refresh at a time
	}
	r.mu.Unlock()
	if !due || !r.rotating.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.rotating.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if r.stale() {
			err = r.rotate(ctx)
		} else {
			err = r.reload(ctx)
		}
		if err != nil && r.logger != nil {
			r.logger.Error("could not refresh the shared key ring; keeping the keys known", zap.Error(err))
		}
	}()
}

// Current is the key new ids are made with: the newest one older than
// Grace (the oldest if none is; the only one on a new ring).
func (r *Ring) Current() *Key {
	r.maybeRefresh()
	keys := r.current()
	if len(keys) == 0 {
		return nil
	}
	for _, k := range keys {
		if time.Since(k.created) >= Grace {
			return k
		}
	}
	return keys[len(keys)-1]
}

// Lookup finds a key by id; an id this process has not seen makes it read
// the ring again, at most once per ReloadEvery (callers may do I/O: it is
// a storage read).
func (r *Ring) Lookup(ctx context.Context, id string) *Key {
	r.maybeRefresh() // a process that only verifies (the balancer) reads new keys too
	if k := r.find(id); k != nil || r.store() == nil {
		return k
	}
	r.mu.Lock()
	due := time.Since(r.lastReload) > ReloadEvery
	if due {
		r.lastReload = time.Now()
	}
	r.mu.Unlock()
	if !due {
		return nil
	}
	if err := r.reload(ctx); err != nil && r.logger != nil {
		r.logger.Error("could not read the shared key ring", zap.Error(err))
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
	r.derived[name] = d
	r.mu.Unlock()
	return d
}
