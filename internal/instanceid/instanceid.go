// Package instanceid makes and reads the ids that mcp_stdio hands out and
// that must come back to the instance that made them: 2025 session ids and
// requestState values. Each names its instance in clear (so that the
// `mcp` selection policy of reverse_proxy can route it) and is
// authenticated with a key of the shared ring (keyring), so that neither
// the instance nor the key it names can be forged:
//
//	session id:   <instance>~<key id>~<random, 32 base32>~<HMAC-SHA256, 16 base32>
//	requestState: <instance>~<key id>~<base64url(nonce | AES-256-GCM(payload))>
//
// The MAC covers the instance, the key id and the random part; the seal's
// additional data is the instance and the key id. '~' separates: it is
// visible ASCII (as session ids must be) and in neither base32 nor
// base64url, and instance ids may not contain it.
package instanceid

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/keyring"
)

// Sep separates the parts of an id.
const Sep = "~"

// MaxInstance bounds an instance id's length.
const MaxInstance = 100

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

const (
	purposeSession = "session id"
	purposeTask    = "task id"
	purposeState   = "requestState"
	stateAAD       = "caddymcp requestState v2"
)

// Valid says whether s can be an instance id: 1 to 100 characters of
// letters, digits, '.', '_', ':' and '-' (a host name, an address).
func Valid(s string) error {
	if s == "" || len(s) > MaxInstance {
		return fmt.Errorf("instance id must have 1 to %d characters", MaxInstance)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("instance id %q: only letters, digits, '.', '_', ':' and '-'", s)
		}
	}
	return nil
}

func mac(key []byte, instance, kid, random string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(instance + Sep + kid + Sep + random))
	return b32.EncodeToString(m.Sum(nil)[:10])
}

// NewSessionID makes a session id of instance with the ring's newest key.
func NewSessionID(ring *keyring.Ring, instance string) string {
	return newID(ring, instance, purposeSession)
}

// NewTaskID makes a task id of instance (the MCP tasks extension's
// taskId): like a session id, with a key of its own purpose, so that
// neither is ever taken for the other.
func NewTaskID(ring *keyring.Ring, instance string) string {
	return newID(ring, instance, purposeTask)
}

// TaskOwner is the instance that made a task id, if a key of the ring
// authenticates it.
func TaskOwner(ctx context.Context, ring *keyring.Ring, id string) (string, bool) {
	return owner(ctx, ring, id, purposeTask)
}

func newID(ring *keyring.Ring, instance, purpose string) string {
	k := ring.Current()
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	random := b32.EncodeToString(b)
	return instance + Sep + k.ID + Sep + random + Sep + mac(ring.DerivedFor(k, purpose), instance, k.ID, random)
}

// SessionOwner is the instance that made a session id, if the id is one
// that a key of the ring authenticates.
func SessionOwner(ctx context.Context, ring *keyring.Ring, id string) (string, bool) {
	return owner(ctx, ring, id, purposeSession)
}

func owner(ctx context.Context, ring *keyring.Ring, id, purpose string) (string, bool) {
	if len(id) > 400 {
		return "", false
	}
	parts := strings.Split(id, Sep)
	if len(parts) != 4 || Valid(parts[0]) != nil {
		return "", false
	}
	k := ring.Lookup(ctx, parts[1])
	if k == nil {
		return "", false
	}
	want := mac(ring.DerivedFor(k, purpose), parts[0], parts[1], parts[2])
	if !hmac.Equal([]byte(want), []byte(parts[3])) {
		return "", false
	}
	return parts[0], true
}

// StateInstance is the instance a requestState names, unverified (cheap;
// Open verifies).
func StateInstance(v string) string {
	inst, _, ok := strings.Cut(v, Sep)
	if !ok || Valid(inst) != nil {
		return ""
	}
	return inst
}

func aead(key []byte) cipher.AEAD {
	block, _ := aes.NewCipher(key)
	a, _ := cipher.NewGCM(block)
	return a
}

// Seal makes a requestState of instance carrying payload.
func Seal(ring *keyring.Ring, instance string, payload []byte) string {
	k := ring.Current()
	a := aead(ring.DerivedFor(k, purposeState))
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(payload)+a.Overhead())
	_, _ = rand.Read(nonce)
	sealed := a.Seal(nonce, nonce, payload, []byte(stateAAD+"\x00"+instance+"\x00"+k.ID))
	return instance + Sep + k.ID + Sep + base64.RawURLEncoding.EncodeToString(sealed)
}

// ErrInvalid is a requestState that no key of the ring opens.
var ErrInvalid = errors.New("requestState failed verification")

// Open verifies a requestState and returns the instance that sealed it and
// its payload.
func Open(ctx context.Context, ring *keyring.Ring, v string) (instance string, payload []byte, err error) {
	if len(v) > 64<<10 { // before decoding: a client's megabytes are not worth it
		return "", nil, ErrInvalid
	}
	parts := strings.SplitN(v, Sep, 3)
	if len(parts) != 3 || Valid(parts[0]) != nil {
		return "", nil, ErrInvalid
	}
	k := ring.Lookup(ctx, parts[1])
	if k == nil {
		return "", nil, ErrInvalid
	}
	// strict: one spelling per state (unused trailing bits set are refused,
	// not read as the state they would otherwise decode to)
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	a := aead(ring.DerivedFor(k, purposeState))
	if err != nil || len(raw) < a.NonceSize()+a.Overhead() {
		return "", nil, ErrInvalid
	}
	plain, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], []byte(stateAAD+"\x00"+parts[0]+"\x00"+parts[1]))
	if err != nil {
		return "", nil, ErrInvalid
	}
	return parts[0], plain, nil
}

// ForConfig is a handler's instance id and key ring: the configured id
// (default: the first 12 hex digits of Caddy's instance UUID, or a random
// one of this process, logged) and the ring shared through storage (or,
// when storage cannot hold it, a key of this process only, logged).
func ForConfig(ctx caddy.Context, configured string, logger *zap.Logger) (string, *keyring.Ring, error) {
	id := configured
	if id == "" {
		if u, err := caddy.InstanceID(); err == nil {
			id = strings.ReplaceAll(u.String(), "-", "")[:12]
		} else {
			b := make([]byte, 5)
			_, _ = rand.Read(b)
			id = strings.ToLower(b32.EncodeToString(b))
			logger.Warn("no instance_id configured and Caddy's instance UUID is not available; using one of this process",
				zap.String("instance_id", id), zap.Error(err))
		}
	}
	if err := Valid(id); err != nil {
		return "", nil, fmt.Errorf("instance_id: %v", err)
	}
	ring, err := keyring.For(ctx, ctx.Storage(), logger)
	if err != nil {
		// one instance still works; ids just verify nowhere else
		logger.Error("the shared key ring could not be read or created in Caddy's storage; using a key of this process only (its session ids and requestState verify on no other instance, and not after a restart)",
			zap.Error(err))
		ring = keyring.Local()
	}
	return id, ring, nil
}
