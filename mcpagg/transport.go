package mcpagg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// roundTrip serves req with a backend's handler chain in this process, as
// an HTTP client would see it: the response comes back once the chain
// wrote its status (or returned), and its body streams while the chain
// runs (an SSE stream as its events are flushed). Closing the body, or
// cancelling req's context, ends the chain's writes.
func roundTrip(h caddyhttp.Handler, req *http.Request) (*http.Response, error) {
	pb := newBufPipe()
	w := &pipeWriter{header: http.Header{}, pw: pb, ready: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() {
			// a chain that panics (reverse_proxy aborts a response it cannot
			// finish with http.ErrAbortHandler, as net/http's server expects)
			// breaks the response off, as a server's connection would
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					err = fmt.Errorf("a backend's handler panicked: %v", v)
				} else {
					err = errAborted
				}
				w.WriteHeader(http.StatusBadGateway)
				pb.closeWrite(err)
				done <- err
			}
		}()
		err = h.ServeHTTP(w, req)
		if err != nil && !w.wrote {
			// an error the chain returned before writing: Caddy would
			// answer it with its status
			status := http.StatusBadGateway
			var he caddyhttp.HandlerError
			if errors.As(err, &he) && he.StatusCode != 0 {
				status = he.StatusCode
			}
			w.WriteHeader(status)
		}
		w.WriteHeader(http.StatusOK) // a chain that wrote nothing: 200, empty
		pb.closeWrite(io.EOF)
		done <- err
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pb.closeRead(req.Context().Err())
		return nil, req.Context().Err()
	}
	return &http.Response{
		Status:     fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		StatusCode: w.status,
		Header:     w.snapshot,
		Body:       &pipeBody{p: pb, done: done},
		Request:    req,
	}, nil
}

// pipeWriter is the ResponseWriter a backend's chain writes to.
type pipeWriter struct {
	mu       sync.Mutex
	header   http.Header
	snapshot http.Header
	status   int
	wrote    bool
	pw       *bufPipe
	ready    chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wrote || (status >= 100 && status < 200) {
		return
	}
	w.wrote, w.status, w.snapshot = true, status, w.header.Clone()
	close(w.ready)
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.write(b)
}

// Flush: writes reach the reader as they are made (a pipe holds nothing).
func (w *pipeWriter) Flush() {}

// pipeBody is a response body read from a chain running beside it.
type pipeBody struct {
	p    *bufPipe
	done chan error
}

func (b *pipeBody) Read(p []byte) (int, error) { return b.p.read(p) }

func (b *pipeBody) Close() error {
	b.p.closeRead(errBackendClosed)
	return nil
}

// bufPipe is a pipe with a buffer (up to pipeBuffer bytes): the chain's
// writes do not wait for each read, as io.Pipe's do, so that a response
// written in pieces (headers, an event, a flush) costs no hand-off per
// piece. Lock order: mu alone, never held across anything but copying.
type bufPipe struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	werr error // the writer closed: what reads get once buf is empty
	rerr error // the reader closed: what writes get
}

const pipeBuffer = 1 << 20

func newBufPipe() *bufPipe {
	p := &bufPipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *bufPipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		for p.rerr == nil && p.werr == nil && len(p.buf) >= pipeBuffer {
			p.cond.Wait()
		}
		if p.rerr != nil {
			return n, p.rerr
		}
		if p.werr != nil {
			return n, io.ErrClosedPipe
		}
		k := min(len(b), pipeBuffer-len(p.buf))
		p.buf = append(p.buf, b[:k]...)
		b, n = b[k:], n+k
		p.cond.Broadcast()
	}
	return n, nil
}

func (p *bufPipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && p.werr == nil && p.rerr == nil {
		p.cond.Wait()
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	if len(p.buf) == 0 {
		return 0, p.werr
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.buf = nil
	}
	p.cond.Broadcast()
	return n, nil
}

// closeWrite ends the stream: reads get err once the buffer is drained.
func (p *bufPipe) closeWrite(err error) {
	p.mu.Lock()
	if p.werr == nil {
		p.werr = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// closeRead drops the reader: writes fail with err from now on.
func (p *bufPipe) closeRead(err error) {
	p.mu.Lock()
	if p.rerr == nil {
		p.rerr = err
	}
	p.buf = nil
	p.cond.Broadcast()
	p.mu.Unlock()
}

var (
	errBackendClosed = errors.New("mcp_aggregate closed the backend's response")
	errAborted       = errors.New("the backend's handler aborted its response")
)

// maxMessage bounds one message read from a backend (a JSON body or one
// SSE event).
const maxMessage = 16 << 20

// readMessages reads a backend's answer to a POST: a JSON body (one
// message or a batch) or an SSE stream, handing each JSON-RPC message to
// fn as it arrives; fn returns false to stop reading.
func readMessages(resp *http.Response, fn func(msg json.RawMessage) bool) error {
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxMessage+1))
		if err != nil {
			return err
		}
		if len(b) > maxMessage {
			return errors.New("a backend's JSON answer is larger than 16 MiB")
		}
		b = bytes.TrimSpace(b)
		if len(b) > 0 && b[0] == '[' {
			var batch []json.RawMessage
			if err := json.Unmarshal(b, &batch); err != nil {
				return fmt.Errorf("a backend's answer is not JSON: %w", err)
			}
			for _, m := range batch {
				if !fn(m) {
					return nil
				}
			}
			return nil
		}
		if !json.Valid(b) {
			return errors.New("a backend's answer is not JSON")
		}
		fn(b)
		return nil
	case strings.HasPrefix(ct, "text/event-stream"):
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 4<<10), maxMessage) // grows to what an event needs
		var data []byte
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 {
				if len(data) > 0 {
					msg := bytes.TrimSpace(data)
					data = data[:0]
					if json.Valid(msg) && !fn(append(json.RawMessage(nil), msg...)) {
						return nil
					}
				}
				continue
			}
			if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, bytes.TrimPrefix(d, []byte(" "))...)
			}
		}
		if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if msg := bytes.TrimSpace(data); len(msg) > 0 && json.Valid(msg) {
			fn(append(json.RawMessage(nil), msg...))
		}
		return nil
	case resp.StatusCode == http.StatusAccepted:
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("a backend answered %d %s: %s", resp.StatusCode, ct, bytes.TrimSpace(b))
}

// subRequest is a request to a backend made from the client's: its
// context (auth placeholders, the client's IP, cancellation) and headers
// but for those of the session and the body and the client's credentials
// (Authorization, Cookie), with a Caddy vars map of its own (the backend's
// modules read the body they get, not the client's).
func subRequest(ctx context.Context, front *http.Request, method string, body []byte, sessionID string) *http.Request {
	vars := map[string]any{}
	if fv, ok := front.Context().Value(caddyhttp.VarsCtxKey).(map[string]any); ok {
		for k, v := range fv {
			if !strings.HasPrefix(k, "caddymcp.") {
				vars[k] = v
			}
		}
	}
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, vars)
	// a replacer of its own (backends are asked in parallel, and a
	// Replacer is not safe for concurrent use) that reads the client
	// request's placeholders ({http.auth.user.id} for per-user env), but
	// for {http.mcp.*}, which the sub-request provides for itself
	if fr, ok := front.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl := caddy.NewReplacer()
		repl.Map(func(key string) (any, bool) {
			if strings.HasPrefix(key, "http.mcp.") {
				return nil, false
			}
			return fr.Get(key)
		})
		ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, repl)
	}
	req := front.Clone(ctx) // its URL, Host, addresses and headers, copied
	req.Method, req.RequestURI = method, front.RequestURI
	req.Body, req.ContentLength, req.GetBody = http.NoBody, 0, nil
	if body != nil {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	req.Trailer, req.TransferEncoding, req.Close = nil, nil, false
	for k := range req.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Mcp-Session-Id", "Content-Length", "Last-Event-Id", "Accept-Encoding", "Mcp-Method", "Mcp-Name", "Content-Type", "Accept",
			// the client's credentials are for this endpoint: a backend
			// (a remote server behind reverse_proxy) never gets them (MCP
			// forbids passing a token through); one that needs its own
			// sets them (header_up from placeholders)
			"Authorization", "Cookie", "Proxy-Authorization":
			delete(req.Header, k)
		}
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = int64(len(body))
	}
	if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
	}
	return req
}
