package mcpreq

import (
	"context"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// contextWithVars gives a test request the vars map Caddy's server sets up.
func contextWithVars(ctx context.Context) context.Context {
	return context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
}
