package stdiobridge

import (
	"net/http"

	"github.com/caddymcp/caddymcp/internal/originguard"
)

// checkOrigin is the DNS-rebinding protection (originguard.Check with the
// route's allowed_hosts and allowed_origins): why a request is refused,
// or "".
func (h *Handler) checkOrigin(r *http.Request) string {
	return originguard.Check(r, h.AllowedHosts, h.AllowedOrigins)
}
