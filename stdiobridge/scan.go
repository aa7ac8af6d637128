package stdiobridge

import (
	"strings"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
)

// The top level of a JSON-RPC message, read without copying: the byte
// spans of the members the bridge routes by, so that ids can be rewritten
// by splicing instead of decoding and re-encoding whole messages. Inputs
// must already be valid JSON (json.Valid).

// span is a value's position in the message; end == 0 means absent.
type span struct{ start, end int }

func (s span) present() bool { return s.end > 0 }

// topLevel holds the spans of the members of interest.
type topLevel struct {
	jsonrpc, id, method, params, result, err span
	// ambiguous: a member of interest appears twice, or under a name that
	// differs only in case (encoding/json, and many children's parsers,
	// would read one of them: never the one the bridge routed by)
	ambiguous bool
}

// memberNames are the top-level members the bridge routes by.
var memberNames = [...]string{"jsonrpc", "id", "method", "params", "result", "error"}

// foldsToMember reports whether a member name that is not one of
// memberNames equals one of them under Unicode case folding.
func foldsToMember(name string) bool {
	for _, m := range memberNames {
		if strings.EqualFold(name, m) {
			return true
		}
	}
	return false
}

// scanTop reads the members of a top-level JSON object with jsonscan's
// walker (the one that refuses what encoding/json would read otherwise:
// escaped or invalid UTF-8 names). ok is false if the value is not an
// object or jsonscan refuses it (callers then take the slow path through
// encoding/json).
func scanTop(b []byte) (t topLevel, ok bool) {
	end := jsonscan.WalkObject(b, 0, func(name []byte, start int) int {
		var f *span
		switch string(name) {
		case "jsonrpc":
			f = &t.jsonrpc
		case "id":
			f = &t.id
		case "method":
			f = &t.method
		case "params":
			f = &t.params
		case "result":
			f = &t.result
		case "error":
			f = &t.err
		default:
			if len(name) <= 32 && foldsToMember(string(name)) {
				t.ambiguous = true
			}
			return -1
		}
		e := jsonscan.SkipValue(b, start)
		if f.present() {
			t.ambiguous = true
		}
		*f = span{start, e}
		return e
	})
	if end < 0 || jsonscan.SkipSpace(b, end) != len(b) {
		return topLevel{}, false
	}
	return t, true
}

// splice returns b with the bytes of s replaced by v, in a new slice.
func splice(b []byte, s span, v []byte) []byte {
	out := make([]byte, 0, len(b)-(s.end-s.start)+len(v))
	out = append(out, b[:s.start]...)
	out = append(out, v...)
	return append(out, b[s.end:]...)
}
