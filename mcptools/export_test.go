package mcptools

import (
	"context"
	"encoding/json"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// ProvisionForTest does what Provision does, with storage and no Caddy
// context (the pin metrics are left out).
func ProvisionForTest(h *Handler, storage certmagic.Storage) error {
	h.logger, h.audit = zap.NewNop(), zap.NewNop()
	if h.MaxSize == 0 {
		h.MaxSize = 4 << 20
	}
	for _, s := range []*Set{h.Tools, h.Prompts, h.Resources} {
		if s == nil {
			continue
		}
		s.fromClient = map[string]string{}
		for name, e := range s.Entries {
			if e != nil && e.Rename != "" {
				s.fromClient[e.Rename] = name
			}
		}
	}
	if h.Pin != nil {
		p, err := openPinSet(context.Background(), storage, h.Pin)
		if err != nil {
			return err
		}
		h.pins = p
	}
	return h.Validate()
}

// DefinitionForTest is definition: an entry's canonical definition and digest.
func DefinitionForTest(kind string, e map[string]json.RawMessage) (json.RawMessage, string) {
	return definition(kind, e)
}
