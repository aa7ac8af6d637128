// Package localissuer lets mcp_auth verify the tokens of an authorization
// server in the same process (mcp_authorization_server) without a network
// hop to itself: the server registers its issuer with a function that
// finds its public keys, and mcp_auth, configured with that issuer, asks it
// first (falling back to the JWKS it fetches for a key it does not find).
//
// Across a config reload the newest registration of an issuer answers; a
// registration ends when its module is cleaned up.
package localissuer

import "sync"

// Keys finds a public key by its key id: the key, its JWS algorithm.
type Keys func(kid string) (key any, alg string, ok bool)

type entry struct{ keys Keys }

var (
	mu  sync.Mutex // guards reg (a leaf)
	reg = map[string][]*entry{}
)

// Register makes keys answer for issuer until unregister is called.
func Register(issuer string, keys Keys) (unregister func()) {
	e := &entry{keys}
	mu.Lock()
	reg[issuer] = append(reg[issuer], e)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		list := reg[issuer]
		for i, x := range list {
			if x == e {
				reg[issuer] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(reg[issuer]) == 0 {
			delete(reg, issuer)
		}
	}
}

// Lookup returns the keys of the issuer's newest registration, or nil.
func Lookup(issuer string) Keys {
	mu.Lock()
	defer mu.Unlock()
	if list := reg[issuer]; len(list) > 0 {
		return list[len(list)-1].keys
	}
	return nil
}
