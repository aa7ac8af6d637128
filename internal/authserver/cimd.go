package authserver

// Client ID Metadata Documents: a client_id that is an https URL names a
// JSON document that describes the client, fetched and checked by
// internal/cimd (with its SSRF defences; AllowPrivateCIMD lifts the
// address guard for tests).

import (
	"context"
	"errors"

	"github.com/caddymcp/caddymcp/internal/cimd"
)

// lookupClient finds a registered client, or the one a metadata document
// describes.
func (s *Server) lookupClient(ctx context.Context, id string) (*client, error) {
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if cimd.IsClientID(id) {
		doc, err := s.cimd.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		return &client{ID: id, Name: doc.ClientName, RedirectURIs: doc.RedirectURIs, AuthMethod: "none",
			GrantTypes: doc.GrantTypes}, nil
	}
	return nil, errors.New("unknown client_id")
}
