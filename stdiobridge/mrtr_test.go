package stdiobridge

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
)

// What opens a requestState: only the instance and route that sealed it,
// for the principal and request it names; a pass-through state (a child's
// own, wrapped) like a round of the bridge's own, since its single-use id
// is held by the table that issued it.
func TestRequestStateBinding(t *testing.T) {
	issuer := testSealer(t, "a")
	issuer.route = routeDigest("route 1")
	same := &stateSealer{ring: issuer.ring, instance: "a", route: routeDigest("route 1")}
	otherRoute := &stateSealer{ring: issuer.ring, instance: "a", route: routeDigest("route 2")}
	otherInstance := &stateSealer{ring: issuer.ring, instance: "b", route: routeDigest("route 1")}
	exp := time.Now().Add(time.Hour).Unix()
	round := issuer.seal(&sealedState{Round: "r", Principal: principalDigest("ann"), Method: "tools/call", Name: "ask", Expires: exp})
	pass := issuer.seal(&sealedState{Principal: principalDigest("ann"), Method: "tools/call", Name: "ask", Expires: exp, Once: "o", Inner: "s", HasInner: true})
	for _, tc := range []struct {
		name      string
		s         *stateSealer
		state     string
		principal string
		want      error
	}{
		{"round, same route", same, round, "ann", nil},
		{"pass-through, same route", same, pass, "ann", nil},
		{"round, another route", otherRoute, round, "ann", errStateRoute},
		{"pass-through, another route", otherRoute, pass, "ann", errStateRoute},
		{"round, another instance", otherInstance, round, "ann", errStateLost},
		{"pass-through, another instance", otherInstance, pass, "ann", errStateLost},
		{"pass-through, another principal", same, pass, "bob", errStateForeign},
	} {
		st, err := tc.s.open(context.Background(), tc.state, tc.principal, "tools/call", "ask", time.Now())
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && tc.state == pass && (st.Once != "o" || st.Inner != "s") {
			t.Errorf("%s: opened %+v", tc.name, st)
		}
	}
}

// A route's unused wrapped states: each id opens once, not after its
// expiry, and at most maxPasses are kept (the oldest goes first).
func TestPassesSingleUseAndBounded(t *testing.T) {
	tb := newTable(zap.NewNop(), 1, &settings{}, nil)
	now := time.Now()
	later := now.Add(time.Hour)
	tb.issuePass("gone", now.Add(-time.Second))
	if tb.takePass("gone", now) {
		t.Fatal("an expired id was taken")
	}
	for i := range maxPasses + 1 {
		tb.issuePass("id"+strconv.Itoa(i), later)
	}
	if tb.takePass("id0", now) {
		t.Fatal("the oldest id was kept beyond maxPasses")
	}
	last := "id" + strconv.Itoa(maxPasses)
	if !tb.takePass("id1", now) || !tb.takePass(last, now) {
		t.Fatal("a kept id was not taken")
	}
	if tb.takePass(last, now) {
		t.Fatal("an id was taken twice")
	}
	if n := len(tb.passes); n != maxPasses-2 {
		t.Fatalf("%d ids kept, want %d", n, maxPasses-2)
	}
}
