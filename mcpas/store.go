package mcpas

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// store keeps everything the authorization server remembers in Caddy's
// configured storage, so that every instance on the same storage serves
// the same clients, consents, authorization requests, codes and refresh
// tokens: one JSON record per key under
// caddymcp/authorization_server/<issuer digest>/<kind>/<digest of id>
// (ids are never keys as such: a token or code is found by its digest).
// Every record has an expiry, checked on read and swept (sweep); every
// call is bounded by storageTimeout, and a fault is errStorage (answered
// 503).
type store struct {
	st     certmagic.Storage
	prefix string
}

// storageTimeout bounds one storage call (a slow storage answers 503, not
// a hang).
var storageTimeout = 5 * time.Second

// errStorage marks a storage fault (answered 503 temporarily_unavailable).
var errStorage = errors.New("storage unavailable")

// record is what one storage key holds.
type record struct {
	Expires time.Time       `json:"expires"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// errNotFound: no such record (or it expired).
var errNotFound = errors.New("not found")

// faultKey marks, in a request's context, that storage failed while it
// was served: the provider answers such a request 500 server_error, which
// the handler turns into 503 temporarily_unavailable (the client may try
// again; nothing was wrong with its request).
type faultKey struct{}

func withFaultFlag(ctx context.Context) (context.Context, *atomic.Bool) {
	f := new(atomic.Bool)
	return context.WithValue(ctx, faultKey{}, f), f
}

func (s *store) fault(ctx context.Context) {
	if f, ok := ctx.Value(faultKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:16])
}

func (s *store) key(kind, id string) string { return s.prefix + kind + "/" + digest(id) }

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
}

// put writes a record.
func (s *store) put(ctx context.Context, kind, id string, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	if err := s.st.Store(ctx, s.key(kind, id), b); err != nil {
		s.fault(ctx)
		return fmt.Errorf("%w: storing %s: %v", errStorage, kind, err)
	}
	return nil
}

// get reads a record; errNotFound if absent or expired.
func (s *store) get(ctx context.Context, kind, id string) (*record, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	b, err := s.st.Load(ctx, s.key(kind, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotFound
	}
	if err != nil {
		s.fault(ctx)
		return nil, fmt.Errorf("%w: loading %s: %v", errStorage, kind, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, errNotFound
	}
	if !rec.Expires.IsZero() && time.Now().After(rec.Expires) {
		return nil, errNotFound
	}
	return &rec, nil
}

func (s *store) del(ctx context.Context, kind, id string) error {
	ctx, cancel := bounded(ctx)
	defer cancel()
	err := s.st.Delete(ctx, s.key(kind, id))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.fault(ctx)
		return fmt.Errorf("%w: deleting %s: %v", errStorage, kind, err)
	}
	return nil
}

// locked runs f under the storage lock of one record (a code is redeemed,
// a refresh token rotated, a state consumed once across instances).
func (s *store) locked(ctx context.Context, kind, id string, f func() error) error {
	lctx, cancel := bounded(ctx)
	defer cancel()
	name := "caddymcp_as_" + digest(s.prefix+kind+id)
	if err := s.st.Lock(lctx, name); err != nil {
		s.fault(ctx)
		return fmt.Errorf("%w: locking %s: %v", errStorage, kind, err)
	}
	defer func() {
		uctx, cancel := bounded(ctx)
		defer cancel()
		_ = s.st.Unlock(uctx, name)
	}()
	return f()
}

// putData and getData keep the module's own records (clients, consents,
// pending requests, states).
func (s *store) putData(ctx context.Context, kind, id string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.put(ctx, kind, id, &record{Expires: time.Now().Add(ttl), Data: b})
}

func (s *store) getData(ctx context.Context, kind, id string, v any) error {
	rec, err := s.get(ctx, kind, id)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(rec.Data, v); err != nil {
		return errNotFound
	}
	return nil
}

// sweep deletes expired records (every kind), reporting how many records
// of each kind remain.
func (s *store) sweep(ctx context.Context) (map[string]int, error) {
	left := map[string]int{}
	lctx, cancel := bounded(ctx)
	keys, err := s.st.List(lctx, strings.TrimSuffix(s.prefix, "/"), true)
	cancel()
	if errors.Is(err, fs.ErrNotExist) {
		return left, nil
	}
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for _, k := range keys {
		if ctx.Err() != nil {
			return left, ctx.Err()
		}
		rest := strings.TrimPrefix(k, s.prefix)
		kind, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		lctx, cancel := bounded(ctx)
		b, err := s.st.Load(lctx, k)
		cancel()
		if err != nil {
			continue
		}
		var rec record
		if json.Unmarshal(b, &rec) != nil || (!rec.Expires.IsZero() && now.After(rec.Expires)) {
			dctx, cancel := bounded(ctx)
			_ = s.st.Delete(dctx, k)
			cancel()
			continue
		}
		left[kind]++
	}
	return left, nil
}
