package stdiobridge

// Trace context for the child (MCP's convention for OpenTelemetry: W3C
// `traceparent` / `tracestate` in the request's `_meta`). With Caddy's
// `tracing` directive on the route, a request's span is in its context:
// the child gets that span's context, so that a trace shows Caddy and the
// MCP server as one, and the span gets the MCP method and tool name.

import (
	"context"
	"encoding/json"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceContext returns the W3C trace context of r's span, if it has one.
func traceContext(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	if carrier["traceparent"] == "" {
		return nil
	}
	return carrier
}

// annotateSpan names the MCP operation on r's span (OpenTelemetry MCP
// semantic conventions).
func annotateSpan(r *http.Request, method, name string) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{attribute.String("mcp.method.name", method)}
	if name != "" {
		switch method {
		case "tools/call":
			attrs = append(attrs, attribute.String("gen_ai.tool.name", name))
		case "prompts/get":
			attrs = append(attrs, attribute.String("gen_ai.prompt.name", name))
		case "resources/read":
			attrs = append(attrs, attribute.String("mcp.resource.uri", name))
		}
	}
	span.SetAttributes(attrs...)
}

// withTraceMeta puts tc into a params object's _meta (it replaces what a
// client put there: the span of this request is the child's parent).
func withTraceMeta(params json.RawMessage, tc map[string]string) (json.RawMessage, bool) {
	var p map[string]json.RawMessage
	if len(params) == 0 {
		p = map[string]json.RawMessage{}
	} else if json.Unmarshal(params, &p) != nil || p == nil {
		return nil, false // not an object: leave it as it is
	}
	var meta map[string]json.RawMessage
	if raw := p["_meta"]; raw != nil && json.Unmarshal(raw, &meta) != nil {
		return nil, false
	}
	if meta == nil {
		meta = map[string]json.RawMessage{}
	}
	for k, v := range tc {
		meta[k], _ = json.Marshal(v)
	}
	p["_meta"], _ = json.Marshal(meta)
	out, err := json.Marshal(p)
	return out, err == nil
}
