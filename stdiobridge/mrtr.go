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
// requestState is sealed with AES-256-GCM under a key of the shared ring
// in Caddy's storage (internal/keyring, internal/instanceid): it survives
// reloads and restarts, every instance of a deployment can verify it, and
// it names the instance that holds the round, for the balancer. The sealed
// payload names the parked round, the route, the principal, the method and
// name of the request, and an expiry; any change to it, a different route,
// principal or request, or a lapsed expiry is refused with -32602 before
// anything reaches a child. A round is consumed by the first retry that
// presents it (a second presentation finds nothing parked).
//
// A modern child's own input_required round is wrapped the same way: its
// requestState travels inside the bridge's, with a single-use id that the
// route's table holds until the retry consumes it (or input_timeout
// passes), so a wrapped state is one round too: bound to the route and the
// principal, good for one retry, on the instance that issued it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/keyring"
	"go.uber.org/zap"
)

// stateSealer seals and opens requestState values with the shared key
// ring (keyring: Caddy's storage), naming this instance, so that any
// instance can verify any round and the balancer can route it.
type stateSealer struct {
	ring     *keyring.Ring
	instance string
	route    []byte // routeDigest of the handler's table key
}

// routeDigest names a route in a requestState: its table key (process
// config, listeners, place among identical handlers; stable across reloads
// that keep the route), hashed.
func routeDigest(tableKey string) []byte {
	d := sha256.Sum256([]byte("caddymcp route\x00" + tableKey))
	return d[:16]
}

// sealedState is what a requestState carries, under the seal.
type sealedState struct {
	Round     string `json:"r"`           // the parked round
	Route     []byte `json:"t,omitempty"` // routeDigest of the route that issued it
	Principal []byte `json:"p"`           // sha256 of the principal, first 16 bytes
	Method    string `json:"m"`           // the request's method
	Name      string `json:"n"`           // its params.name or params.uri
	Expires   int64  `json:"e"`           // unix seconds
	Inner     string `json:"i,omitempty"` // the child's own requestState (pass-through)
	HasInner  bool   `json:"h,omitempty"` // the child sent one (it may be "")
	Child     uint64 `json:"c,omitempty"` // the child that asked (pass-through)
	Once      string `json:"o,omitempty"` // single-use id (pass-through; table.passes)
	Args      []byte `json:"a,omitempty"` // argsDigest of the request
	Again     bool   `json:"g,omitempty"` // the retry is sent to the child afresh (a -32042 round)
}

var errStateInvalid = errors.New("requestState failed verification")
var errStateExpired = errors.New("requestState expired")
var errStateForeign = errors.New("requestState belongs to another user or request")
var errStateRoute = errors.New("requestState belongs to another route")
var errStateArgs = errors.New("requestState was issued for a request with other arguments; send the request again without requestState")

// staleRound answers a retry whose round is no longer there: expired,
// already answered, or never held here.
const staleRound = "invalid requestState: the round expired or was already answered; send the request again without requestState"

var errStateLost = errors.New("the instance that held this round is gone; send the request again without requestState")

// argsDigest identifies a request's salient parameters beyond its method
// and name (MRTR: a digest of them goes into requestState, SHOULD): its
// arguments, canonical (keys sorted), so that a retry that changed them
// is refused instead of continuing the call that was asked about.
func (m *modernReq) argsDigest() []byte {
	var v any
	if a := m.params["arguments"]; len(a) > 0 {
		d := json.NewDecoder(bytes.NewReader(a))
		d.UseNumber()
		if d.Decode(&v) != nil {
			v = string(a)
		}
	}
	if o, ok := v.(map[string]any); ok && len(o) == 0 {
		v = nil // {} and absent are the same call
	}
	b, _ := json.Marshal(v)
	d := sha256.Sum256(append([]byte("caddymcp arguments\x00"), b...))
	return d[:16]
}

func principalDigest(p string) []byte {
	d := sha256.Sum256([]byte("caddymcp principal\x00" + p))
	return d[:16]
}

func (s *stateSealer) seal(st *sealedState) string {
	st.Route = s.route
	plain, _ := json.Marshal(st)
	return instanceid.Seal(s.ring, s.instance, plain)
}

// open verifies a requestState against the request that presents it. A
// round (a child waiting for answers, or a wrapped child state whose
// single-use id a table holds) can be continued only by the instance that
// holds it, another instance's round is lost (errStateLost), and only on
// the route that issued it.
func (s *stateSealer) open(ctx context.Context, v, principal, method, name string, now time.Time) (*sealedState, error) {
	instance, plain, err := instanceid.Open(ctx, s.ring, v)
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
	if instance != s.instance {
		return nil, errStateLost
	}
	if !bytes.Equal(st.Route, s.route) {
		return nil, errStateRoute
	}
	return &st, nil
}

var askPrefix = map[string]string{"elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"}

func (cl *call) addAsk(a ask) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.nextKey++
	cl.open[askPrefix[a.method]+"-"+strconv.Itoa(cl.nextKey)] = a
}

// park answers the client with an input_required round for the call's
// open questions; the call waits in the table for the retry.
func (h poolServer) park(cl *call, m *modernReq) []byte {
	t := h.table
	round := randomID(16)
	timeout := h.cfg.inputTimeout
	inputs := map[string]any{}
	cl.mu.Lock()
	for k, a := range cl.open {
		q := map[string]any{"method": a.method}
		if len(a.params) > 0 {
			q["params"] = a.params
		}
		inputs[k] = q
	}
	cl.timer = time.AfterFunc(timeout, func() { t.expireRound(round) })
	cl.mu.Unlock()
	t.parkRound(round, cl)
	state := h.sealer.seal(&sealedState{Round: round, Principal: principalDigest(m.principal), Method: m.e.Method,
		Name: m.name, Args: m.argsDigest(), Expires: time.Now().Add(timeout).Unix() + 1})
	res := map[string]any{"resultType": "input_required", "inputRequests": inputs, "requestState": state}
	if si := t.serverInfo(); si != nil {
		res["_meta"] = map[string]any{metaServer: si}
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "result": res})
	return b
}

// resume continues a parked call with the client's retry.
func (h poolServer) resume(w http.ResponseWriter, r *http.Request, m *modernReq, p *childPool) {
	var rs string
	if json.Unmarshal(m.params["requestState"], &rs) != nil {
		modernError(w, m.e.ID, codeInvalidParams, "requestState must be a string")
		return
	}
	st, err := h.sealer.open(r.Context(), rs, m.principal, m.e.Method, m.name, time.Now())
	if err != nil {
		if c := h.logger.Check(zap.DebugLevel, "requestState refused"); c != nil { // the client's doing
			c.Write(zap.Error(err), zap.String("user", userForLog(m.principal)))
		}
		modernError(w, m.e.ID, codeInvalidParams, "invalid requestState: "+err.Error())
		return
	}
	if !bytes.Equal(st.Args, m.argsDigest()) {
		// checked before the round is taken: the call it names stays
		// parked for the retry that matches
		h.logger.Debug("requestState refused", zap.Error(errStateArgs), zap.String("user", userForLog(m.principal)))
		modernError(w, m.e.ID, codeInvalidParams, "invalid requestState: "+errStateArgs.Error())
		return
	}
	if st.Round == "" {
		if st.Once == "" || !h.table.takePass(st.Once, time.Now()) {
			modernError(w, m.e.ID, codeInvalidParams, staleRound)
			return
		}
		h.retry(w, r, m, p, st)
		return
	}
	cl := h.table.takeRound(st.Round)
	if cl == nil || cl.isCancelled() {
		modernError(w, m.e.ID, codeInvalidParams, staleRound)
		return
	}
	var responses map[string]json.RawMessage
	_ = json.Unmarshal(m.params["inputResponses"], &responses)
	type answer struct {
		a ask
		v json.RawMessage
	}
	var answers []answer
	cl.mu.Lock()
	if cl.timer != nil {
		cl.timer.Stop()
	}
	for k, a := range cl.open {
		if v := responses[k]; len(v) > 0 && v[0] == '{' {
			answers = append(answers, answer{a, v})
			delete(cl.open, k)
		}
	}
	remaining := len(cl.open)
	cl.mu.Unlock()
	for _, x := range answers {
		cl.child.answer(x.a.id, x.v)
	}
	rec := h.newAudit(r, "2026", m.e.Method, m.e.ID, m.e.Params)
	if rec != nil {
		rec.pid = cl.child.proc.Pid()
	}
	if remaining > 0 {
		(&replier{w: w}).finish(http.StatusOK, h.park(cl, m))
		h.parked(m, rec)
		rec.write()
		return
	}
	h.await(w, r, m, cl, rec)
}

// retry forwards the retry of a child's own input_required round (its id
// consumed), with the child's requestState unwrapped, preferably to the
// child that asked.
func (h poolServer) retry(w http.ResponseWriter, r *http.Request, m *modernReq, p *childPool, st *sealedState) {
	switch {
	case st.Again:
		// the child asked with -32042 and ended its call: the retry is
		// the call again, as a 2025 client would send it
		delete(m.params, "requestState")
		delete(m.params, "inputResponses")
	case st.HasInner:
		m.params["requestState"], _ = json.Marshal(st.Inner)
	default:
		delete(m.params, "requestState")
	}
	asking := h.childEra(r) != eraModern
	c := h.child(w, r, m, p, asking, st.Child)
	if c == nil {
		return
	}
	h.serveCall(w, r, m, c, asking)
}
