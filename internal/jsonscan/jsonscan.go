// Package jsonscan finds the members of JSON objects and the elements of
// JSON arrays as byte spans, without decoding them, so that a message can
// be inspected and rewritten by splicing instead of decoding and
// re-encoding it whole. Inputs must be valid JSON (json.Valid); on anything
// it does not handle (a member name with escapes, a name twice) it reports
// !ok and the caller takes the slow path through encoding/json.
package jsonscan

import (
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// Span is a value's position: b[Start:End].
type Span struct{ Start, End int }

// Member is one member of an object.
type Member struct {
	Name  string
	Value Span
}

// Members returns the members of the object b, in order. A name seen twice
// makes it report !ok; the check stays linear in the number of members
// (an object of 400 000 members in a request must not cost a quadratic
// scan), a set taking over from a scan of the few first ones.
func Members(b []byte) ([]Member, bool) {
	out := []Member{}
	var seen map[string]struct{}
	dup := false
	end := WalkObject(b, 0, func(name []byte, start int) int {
		n := string(name)
		if seen == nil && len(out) >= smallObject {
			seen = make(map[string]struct{}, 2*len(out))
			for _, m := range out {
				seen[m.Name] = struct{}{}
			}
		}
		if seen != nil {
			if _, ok := seen[n]; ok {
				dup = true
			}
			seen[n] = struct{}{}
		} else if slices.ContainsFunc(out, func(m Member) bool { return m.Name == n }) {
			dup = true
		}
		e := skipValue(b, start)
		out = append(out, Member{n, Span{start, e}})
		return e
	})
	if end < 0 || dup {
		return nil, false
	}
	return out, true
}

// smallObject is how many members Members compares one by one before it
// keeps a set of their names.
const smallObject = 8

// Get returns the value of the named member.
func Get(members []Member, name string) (Span, bool) {
	for _, m := range members {
		if m.Name == name {
			return m.Value, true
		}
	}
	return Span{}, false
}

// Elements returns the elements of the array b.
func Elements(b []byte) ([]Span, bool) {
	out := []Span{}
	end := WalkArray(b, 0, func(start int) int {
		e := skipValue(b, start)
		out = append(out, Span{start, e})
		return e
	})
	if end < 0 {
		return nil, false
	}
	return out, true
}

// String decodes a JSON string value ("" and false if it is not one).
func String(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	plain := true
	for _, c := range v[1 : len(v)-1] {
		if c == '\\' {
			plain = false
			break
		}
	}
	if plain && utf8.Valid(v[1:len(v)-1]) {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// Edit is a replacement of a span by new bytes (an insertion when the span
// is empty).
type Edit struct {
	At  Span
	New []byte
}

// Apply returns b with the edits made; edits must not overlap.
func Apply(b []byte, edits []Edit) []byte {
	slices.SortFunc(edits, func(x, y Edit) int { return x.At.Start - y.At.Start })
	n := len(b)
	for _, e := range edits {
		n += len(e.New) - (e.At.End - e.At.Start)
	}
	out := make([]byte, 0, n)
	last := 0
	for _, e := range edits {
		out = append(out, b[last:e.At.Start]...)
		out = append(out, e.New...)
		last = e.At.End
	}
	return append(out, b[last:]...)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at i.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// Find returns the value of the named member of the object b, without
// allocating; ok is false where Members would be (escapes, the name twice,
// not an object), found whether the member is there.
func Find(b []byte, name string) (v Span, found, ok bool) {
	dup := false
	end := WalkObject(b, 0, func(n []byte, start int) int {
		if string(n) != name {
			return -1
		}
		if found {
			dup = true
		}
		e := skipValue(b, start)
		v, found = Span{start, e}, true
		return e
	})
	if end < 0 || dup {
		return Span{}, false, false
	}
	return v, found, true
}

// WalkObject visits the members of the object starting at b[i] in one
// pass: fn gets each name and where its value starts, and returns where the
// value ends (after descending into it with WalkObject or WalkArray), or
// -1 to have it skipped. It returns the index just past the object, or -1
// on anything Members would refuse (escaped or invalid names; fn decides
// about repeated ones).
func WalkObject(b []byte, i int, fn func(name []byte, start int) int) int {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		return -1
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for i < len(b) {
		if b[i] != '"' {
			return -1
		}
		keyStart := i + 1
		keyEnd := keyStart
		for keyEnd < len(b) && b[keyEnd] != '"' {
			if b[keyEnd] == '\\' {
				return -1 // an escaped name: the slow path decides
			}
			keyEnd++
		}
		if !utf8.Valid(b[keyStart:keyEnd]) {
			return -1 // encoding/json would read another name
		}
		i = skipSpace(b, keyEnd+1)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipSpace(b, i+1)
		end := fn(b[keyStart:keyEnd], i)
		if end == -1 {
			end = skipValue(b, i)
		}
		if end <= i {
			return -1
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return -1
		}
		if b[i] == '}' {
			return i + 1
		}
		if b[i] != ',' {
			return -1
		}
		i = skipSpace(b, i+1)
	}
	return -1
}

// WalkArray visits the elements of the array starting at b[i] in one pass:
// fn gets where each starts and returns where it ends (or -1: skipped). It
// returns the index just past the array, or -1.
func WalkArray(b []byte, i int, fn func(start int) int) int {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '[' {
		return -1
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for i < len(b) {
		end := fn(i)
		if end == -1 {
			end = skipValue(b, i)
		}
		if end <= i {
			return -1
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return -1
		}
		if b[i] == ']' {
			return i + 1
		}
		if b[i] != ',' {
			return -1
		}
		i = skipSpace(b, i+1)
	}
	return -1
}

// SkipValue returns the index just past the JSON value starting at b[i].
func SkipValue(b []byte, i int) int { return skipValue(b, i) }

// SkipSpace returns the index of the first non-space byte at or after i.
func SkipSpace(b []byte, i int) int { return skipSpace(b, i) }

// PlainString returns the bytes of a JSON string without escapes, printable
// ASCII only, as they are (no copy); ok is false for anything else.
func PlainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	for _, c := range v[1 : len(v)-1] {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, false
		}
	}
	return v[1 : len(v)-1], true
}
