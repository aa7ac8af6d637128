package stdiobridge

// Multi Round-Trip Requests (MCP 2026-07-28, SEP-2322) on a legacy child.
//
// A 2025 server asks its client things (elicitation/create,
// sampling/createMessage, roots/list) by sending requests while it serves a
// call. For a modern client the bridge turns them into an
// InputRequiredResult: the client's request is answered with the questions
// and a requestState; the child's call stays open (parked) and the child
// keeps waiting for its answers. The client's retry (a new request id, the
// same params plus inputResponses and the requestState) is matched to the
// parked call through the requestState, its answers go to the child, and
// the call goes on: another round, or the result.
//
// requestState is sealed with AES-256-GCM under a key of the route's table
// (it survives a reload that keeps the route's process config, as the
// children do). The sealed payload names the parked round, the principal,
// the method and name of the request, and an expiry; any change to it, a
// different principal or request, or a lapsed expiry is refused with
// -32602 before anything reaches a child. A round is consumed by the first
// retry that presents it (a second presentation finds nothing parked).

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"
)

// stateSealer seals and opens requestState values.
type stateSealer struct {
	aead cipher.AEAD
}

func newStateSealer() *stateSealer {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	return &stateSealer{aead: aead}
}

// sealedState is what a requestState carries, under the seal.
type sealedState struct {
	Round     string `json:"r"`           // the parked round
	Principal []byte `json:"p"`           // sha256 of the principal, first 16 bytes
	Method    string `json:"m"`           // the request's method
	Name      string `json:"n"`           // its params.name or params.uri
	Expires   int64  `json:"e"`           // unix seconds
	Inner     string `json:"i,omitempty"` // the child's own requestState (pass-through)
	HasInner  bool   `json:"h,omitempty"` // the child sent one (it may be "")
	Child     uint64 `json:"c,omitempty"` // the child that asked (pass-through)
}

const stateAAD = "caddymcp requestState v1"

var errStateInvalid = errors.New("requestState failed verification")
var errStateExpired = errors.New("requestState expired")
var errStateForeign = errors.New("requestState belongs to another user or request")

func principalDigest(p string) []byte {
	d := sha256.Sum256([]byte("caddymcp principal\x00" + p))
	return d[:16]
}

func (s *stateSealer) seal(st *sealedState) string {
	plain, _ := json.Marshal(st)
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(stateAAD)))
}

// open verifies a requestState against the request that presents it.
func (s *stateSealer) open(v, principal, method, name string, now time.Time) (*sealedState, error) {
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() || len(v) > 64<<10 {
		return nil, errStateInvalid
	}
	plain, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(stateAAD))
	if err != nil {
		return nil, errStateInvalid
	}
	var st sealedState
	if json.Unmarshal(plain, &st) != nil {
		return nil, errStateInvalid
	}
	if string(st.Principal) != string(principalDigest(principal)) || st.Method != method || st.Name != name {
		return nil, errStateForeign
	}
	if now.Unix() > st.Expires {
		return nil, errStateExpired
	}
	return &st, nil
}
