package mcpauth

// A 2025-03-26 batch with calls the token may not make: those messages are
// taken out before the batch goes on, and each request among them is
// answered in the batch's answer with a JSON-RPC error naming the scopes
// it needs (appended to a JSON array, or as events of an SSE stream). A
// batch of nothing but such calls gets the 403 challenge instead.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpccode"
	"github.com/caddymcp/caddymcp/internal/rpcstream"
)

// missing returns the scopes a message needs that granted lacks.
func (h *Handler) missing(m mcpreq.Message, granted []string) []string {
	var out []string
	for _, s := range h.needsOf(m) {
		if !slices.Contains(granted, s) {
			out = append(out, s)
		}
	}
	return out
}

// splitBatch takes the messages the token may not make out of r's batch
// body and returns the errors to answer them with; ok is false when every
// message is such a one (or the body cannot be rewritten).
func (h *Handler) splitBatch(r *http.Request, q *mcpreq.Request, granted []string) (errs [][]byte, taken bool, ok bool) {
	var bad []int
	for i, m := range q.Messages {
		if len(h.missing(m, granted)) > 0 {
			bad = append(bad, i)
		}
	}
	if len(bad) == 0 {
		return nil, false, true
	}
	if len(bad) == len(q.Messages) {
		return nil, false, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, mcpreq.DefaultMaxBytes+1))
	if err != nil || len(body) > mcpreq.DefaultMaxBytes {
		return nil, false, false
	}
	trimmed := bytes.TrimSpace(body)
	elems, okElems := jsonscan.Elements(trimmed)
	if !okElems || len(elems) != len(q.Messages) {
		return nil, false, false
	}
	out := []byte{'['}
	for i, e := range elems {
		if slices.Contains(bad, i) {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, trimmed[e.Start:e.End]...)
	}
	out = append(out, ']')
	r.Body = io.NopCloser(bytes.NewReader(out))
	r.ContentLength = int64(len(out))
	r.Header.Set("Content-Length", strconv.Itoa(len(out)))
	mcpreq.Forget(r)
	for _, i := range bad {
		m := q.Messages[i]
		if len(m.ID) == 0 {
			continue // a notification: nothing to answer
		}
		miss := h.missing(m, granted)
		need := slices.Clone(h.Scopes)
		for _, s := range h.needsOf(m) {
			if !slices.Contains(need, s) {
				need = append(need, s)
			}
		}
		e, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.ID, "error": map[string]any{
			"code":    rpccode.InsufficientScope,
			"message": "Forbidden (insufficient_scope): the token lacks scope " + strings.Join(miss, " ") + " for " + m.Method + " " + m.Name,
			"data":    map[string]any{"error": "insufficient_scope", "scope": challengeScope(need)},
		}})
		errs = append(errs, e)
	}
	return errs, true, true
}

// batchErrors adds the answers of the messages taken out of a batch to the
// batch's answer.
type batchErrors struct {
	*caddyhttp.ResponseWriterWrapper
	h      *Handler
	errs   [][]byte
	mode   int // rpcstream.ModeUndecided, ModeJSON (held), ModeSSE, ModeOther; modeAccepted
	status int
	buf    bytes.Buffer
	tooBig bool
}

const modeAccepted = 10

func (b *batchErrors) WriteHeader(status int) {
	if b.mode != rpcstream.ModeUndecided {
		return
	}
	b.status = status
	if status == http.StatusAccepted {
		b.mode = modeAccepted // the rest were notifications: the answer is ours alone
		return
	}
	b.mode = rpcstream.RewriteMode(b.Header())
	if b.mode != rpcstream.ModeJSON {
		b.ResponseWriterWrapper.WriteHeader(status)
	}
}

func (b *batchErrors) Write(p []byte) (int, error) {
	if b.mode == rpcstream.ModeUndecided {
		b.WriteHeader(http.StatusOK)
	}
	switch b.mode {
	case rpcstream.ModeJSON:
		if b.buf.Len()+len(p) > rpcstream.MaxHeld {
			b.tooBig = true
			return len(p), nil
		}
		return b.buf.Write(p)
	case modeAccepted:
		return len(p), nil
	}
	return b.ResponseWriterWrapper.Write(p)
}

// Flush passes SSE on as it comes.
func (b *batchErrors) Flush() {
	if b.mode == rpcstream.ModeSSE || b.mode == rpcstream.ModeOther {
		_ = http.NewResponseController(b.ResponseWriterWrapper.ResponseWriter).Flush()
	}
}

func (b *batchErrors) finish() {
	switch b.mode {
	case rpcstream.ModeSSE:
		for _, e := range b.errs {
			_, _ = b.ResponseWriterWrapper.Write(append(append([]byte("data: "), e...), "\n\n"...))
		}
	case rpcstream.ModeJSON, modeAccepted, rpcstream.ModeUndecided:
		if b.tooBig {
			b.h.logger.Error("a batch answer too large to add to was withheld; answered 502")
			b.ResponseWriterWrapper.WriteHeader(http.StatusBadGateway)
			return
		}
		var msgs []json.RawMessage
		if b.mode == rpcstream.ModeJSON {
			trimmed := bytes.TrimSpace(b.buf.Bytes())
			if len(trimmed) > 0 && trimmed[0] == '[' {
				_ = json.Unmarshal(trimmed, &msgs)
			} else if len(trimmed) > 0 {
				msgs = append(msgs, json.RawMessage(trimmed))
			}
		}
		for _, e := range b.errs {
			msgs = append(msgs, e)
		}
		out, _ := json.Marshal(msgs)
		status := b.status
		if status == 0 || status == http.StatusAccepted {
			status = http.StatusOK
		}
		b.Header().Set("Content-Type", "application/json")
		b.Header().Set("Content-Length", strconv.Itoa(len(out)))
		b.ResponseWriterWrapper.WriteHeader(status)
		_, _ = b.ResponseWriterWrapper.Write(out)
	}
}
