// Package rpcstream rewrites the JSON-RPC messages of an HTTP response as
// they pass a Caddy middleware: a JSON body once whole (bounded), an SSE
// stream event by event (each event bounded). What it cannot read is never
// passed on: a body with a Content-Encoding, of a type it does not read (a
// 2xx answer to a POST), not JSON, or over MaxHeld is answered 502 with a
// log line saying why; once an SSE stream has begun, the stream is cut
// before the event instead (the connection is aborted, so the client sees
// it break, not end). mcp_auth's list filter and mcp_tools both use it.
package rpcstream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Func rewrites one JSON-RPC message (never a batch: Rewriter splits
// those); changed is false when it is to pass as it came. An error
// withholds the response.
type Func func(msg []byte) (out []byte, changed bool, err error)

// Rewriter is a ResponseWriter that rewrites the messages written to it
// with Rewrite. Call Finish once the next handler has returned.
type Rewriter struct {
	*caddyhttp.ResponseWriterWrapper
	Logger *zap.Logger
	// What names the rewriter in log lines and errors ("the list filter").
	What string
	// StreamsOnly lets JSON and other bodies pass untouched (the answer to
	// a request that is not a POST): only SSE streams are rewritten.
	StreamsOnly bool
	Rewrite     Func

	mode    int
	status  int
	started bool         // the status line went out
	buf     bytes.Buffer // JSON body, or the SSE event being read
	cut     bool         // refused after the stream began: abort
}

// New wraps w.
func New(w http.ResponseWriter, what string, logger *zap.Logger, streamsOnly bool, rewrite Func) *Rewriter {
	return &Rewriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, Logger: logger, What: what, StreamsOnly: streamsOnly, Rewrite: rewrite}
}

// Modes: how a response is carried, as far as a rewriter is concerned.
const (
	ModeUndecided = iota
	ModeJSON
	ModeSSE
	ModeOther   // untouched
	modeHeld    // a 2xx of a type the rewriter does not read: refused at its first byte
	modeRefused // answered 502 (or cut): nothing more goes out
)

// MaxHeld bounds a JSON body, or one SSE event, held for rewriting.
const MaxHeld = 16 << 20

// ErrWithheld is what writes get once the rewriter has refused the
// response, so that whatever produces it stops.
var ErrWithheld = errors.New("the response was withheld by a rewriter that cannot read it")

// ErrNotJSON: a message that may hold a result is not JSON.
var ErrNotJSON = errors.New("a message that may hold a result is not JSON")

// Refused reports whether the response was withheld (answered 502, or cut).
func (f *Rewriter) Refused() bool { return f.mode == modeRefused }

func (f *Rewriter) WriteHeader(status int) {
	if f.mode != ModeUndecided {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		// informational (103 Early Hints): the response is still to come
		f.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	f.status = status
	f.mode = Carriage(f.Header())
	switch {
	case f.mode == ModeOther || (f.mode == ModeJSON && f.StreamsOnly):
		if !f.StreamsOnly && status >= 200 && status < 300 {
			f.mode = modeHeld
			return
		}
		f.mode = ModeOther
		f.start()
		return
	}
	if ce := ContentEncoding(f.Header()); ce != "" {
		f.refuse("the response has Content-Encoding " + ce + "; " + f.What + " reads identity only")
		return
	}
	// the length changes; the status line waits for the whole JSON body,
	// or for an SSE stream's first event or flush
	f.Header().Del("Content-Length")
}

// Carriage says how a response is carried: a JSON body, an SSE stream, or
// something else.
func Carriage(h http.Header) int {
	ct := h.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		return ModeJSON
	case strings.HasPrefix(ct, "text/event-stream"):
		return ModeSSE
	}
	return ModeOther
}

// RewriteMode is Carriage for a response that mcp_auth rewrites: a
// rewritten body's length changes, so Content-Length goes.
func RewriteMode(h http.Header) int {
	mode := Carriage(h)
	if mode != ModeOther {
		h.Del("Content-Length")
	}
	return mode
}

// ContentEncoding is a response's Content-Encoding unless identity.
func ContentEncoding(h http.Header) string {
	for _, v := range h.Values("Content-Encoding") {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// start sends the status line, once.
func (f *Rewriter) start() {
	if !f.started {
		f.started = true
		f.ResponseWriterWrapper.WriteHeader(f.status)
	}
}

// refuse withholds the response: 502 if nothing went out yet, else the
// stream is cut (see finish). Either way it is logged with its cause.
func (f *Rewriter) refuse(cause string) {
	f.mode = modeRefused
	f.buf = bytes.Buffer{}
	if f.started {
		f.cut = true
		f.Logger.Warn("a stream "+f.What+" cannot read was cut before the event", zap.String("cause", cause))
		return
	}
	f.Logger.Warn("a response "+f.What+" cannot read was withheld; answered 502", zap.String("cause", cause))
	h := f.Header()
	for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Length", "Transfer-Encoding"} {
		h.Del(k)
	}
	h.Set("Content-Length", "0")
	// the producer's writes fail from now on, and reverse_proxy aborts the
	// connection then: it must not be one the client uses again
	h.Set("Connection", "close")
	f.status, f.started = http.StatusBadGateway, true
	f.ResponseWriterWrapper.WriteHeader(http.StatusBadGateway)
	_ = http.NewResponseController(f.ResponseWriterWrapper.ResponseWriter).Flush()
}

func (f *Rewriter) Write(b []byte) (int, error) {
	if f.mode == ModeUndecided {
		f.WriteHeader(http.StatusOK)
	}
	switch f.mode {
	case modeRefused:
		return 0, ErrWithheld
	case modeHeld:
		if len(b) == 0 {
			return 0, nil
		}
		f.refuse("the response has Content-Type " + f.Header().Get("Content-Type") + ", which " + f.What + " does not read")
		return 0, ErrWithheld
	case ModeJSON:
		if f.buf.Len()+len(b) > MaxHeld {
			f.refuse("a JSON body of more than " + strconv.Itoa(MaxHeld) + " bytes is too large to rewrite")
			return 0, ErrWithheld
		}
		f.buf.Write(b)
		return len(b), nil
	case ModeSSE:
		f.buf.Write(b)
		if err := f.events(); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return f.ResponseWriterWrapper.Write(b)
}

// ReadFrom reads through Write: the wrapper's own ReadFrom would copy
// around the rewriter.
func (f *Rewriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{f}, r)
}

type writerOnly struct{ io.Writer }

// events writes out every complete SSE event in buf, rewritten.
func (f *Rewriter) events() error {
	for {
		data := f.buf.Bytes()
		end, sep := bytes.Index(data, []byte("\n\n")), 2
		if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 && (end < 0 || i < end) {
			end, sep = i, 4
		}
		if end < 0 {
			if f.buf.Len() > MaxHeld {
				f.refuse(tooLargeEvent)
				return ErrWithheld
			}
			return nil
		}
		if end > MaxHeld {
			f.refuse(tooLargeEvent)
			return ErrWithheld
		}
		ev, err := f.rewriteEvent(data[:end])
		if err != nil {
			f.refuse(err.Error())
			return ErrWithheld
		}
		f.buf.Next(end + sep)
		f.start()
		if _, err := f.ResponseWriterWrapper.Write(append(ev, "\n\n"...)); err != nil {
			return err
		}
	}
}

var tooLargeEvent = "an SSE event of more than " + strconv.Itoa(MaxHeld) + " bytes is too large to rewrite"

// rewriteEvent rewrites the data of one SSE event if it carries a list.
func (f *Rewriter) rewriteEvent(ev []byte) ([]byte, error) {
	var other, data [][]byte
	sc := bufio.NewScanner(bytes.NewReader(ev))
	sc.Buffer(make([]byte, 0, 64<<10), MaxHeld+1)
	for sc.Scan() {
		line := sc.Bytes()
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(d, []byte(" ")))
		} else {
			other = append(other, append([]byte(nil), line...))
		}
	}
	if sc.Err() != nil {
		return nil, errors.New("an SSE event that cannot be split into lines: " + sc.Err().Error())
	}
	if len(data) == 0 {
		return ev, nil
	}
	out, changed, err := f.RewriteJSON(bytes.Join(data, []byte("\n")))
	if err != nil || !changed {
		return ev, err
	}
	if bytes.ContainsAny(out, "\r\n") {
		// one data line: JSON spread over several was spliced as it came
		var c bytes.Buffer
		if json.Compact(&c, out) != nil {
			return nil, errors.New("an SSE event whose rewritten data is not JSON")
		}
		out = c.Bytes()
	}
	return append(bytes.Join(append(other, nil), []byte("\n")), append([]byte("data: "), out...)...), nil
}

// Flush passes SSE events on as they come; a JSON body waits for the end.
func (f *Rewriter) Flush() {
	if f.mode == ModeUndecided {
		f.WriteHeader(http.StatusOK) // as a flush before WriteHeader means
	}
	switch f.mode {
	case ModeJSON, modeHeld:
		return
	case ModeSSE:
		f.start()
	}
	_ = http.NewResponseController(f.ResponseWriterWrapper.ResponseWriter).Flush()
}

// Finish writes a held JSON body, rewritten, and what is left of a stream.
// A stream cut after it began is aborted (http.ErrAbortHandler, as
// reverse_proxy ends a stream it cannot finish).
func (f *Rewriter) Finish() {
	switch f.mode {
	case ModeJSON:
		out, _, err := f.RewriteJSON(f.buf.Bytes())
		if err != nil {
			f.refuse(err.Error())
			return
		}
		f.Header().Set("Content-Length", strconv.Itoa(len(out)))
		f.start()
		_, _ = f.ResponseWriterWrapper.Write(out)
	case ModeSSE:
		if f.buf.Len() > 0 {
			ev, err := f.rewriteEvent(f.buf.Bytes())
			if err != nil {
				f.refuse(err.Error())
				break
			}
			f.start()
			_, _ = f.ResponseWriterWrapper.Write(ev)
		}
		f.start()
	case modeHeld:
		f.start() // nothing came: the status as it was
	}
	if f.cut {
		panic(http.ErrAbortHandler)
	}
}

// RewriteJSON rewrites one JSON-RPC message or a batch of them; changed
// reports whether anything was rewritten. A message that may hold a result
// but is not JSON is an error: it passes no rewriter.
func (f *Rewriter) RewriteJSON(b []byte) ([]byte, bool, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var msgs []json.RawMessage
		if json.Unmarshal(trimmed, &msgs) != nil {
			if MayHoldResult(trimmed) {
				return nil, false, ErrNotJSON
			}
			return b, false, nil
		}
		changed := false
		for i, m := range msgs {
			out, ok, err := f.Rewrite(m)
			if err != nil {
				return nil, false, err
			}
			if ok {
				msgs[i], changed = out, true
			}
		}
		if !changed {
			return b, false, nil
		}
		out, _ := json.Marshal(msgs)
		return out, true, nil
	}
	out, ok, err := f.Rewrite(trimmed)
	if err != nil || !ok {
		return b, false, err
	}
	return out, true, nil
}

// MayHoldResult: the bytes spell a "result" member, plainly or escaped.
func MayHoldResult(m []byte) bool {
	return bytes.Contains(m, []byte(`"result"`)) || bytes.Contains(m, []byte(`\u`))
}
