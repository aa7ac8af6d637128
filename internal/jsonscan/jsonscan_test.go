package jsonscan

import (
	"encoding/json"
	"strconv"
	"testing"
)

// FuzzMembers: the spans agree with encoding/json wherever the scanner
// claims to understand the input.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":"x\\"y","c":[1,{"d":"}"}]}`, `{"a":"\\\\"}`, `{"a":"\\\\\\""}`, `[1,"]",{"a":[]}]`, ` { "n" : "v" } `} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		if !json.Valid(b) {
			return
		}
		if ms, ok := Members(b); ok {
			var want map[string]json.RawMessage
			if json.Unmarshal(b, &want) != nil || len(want) != len(ms) {
				t.Fatalf("%s: members %v", s, ms)
			}
			for _, m := range ms {
				var a, c any
				_ = json.Unmarshal(b[m.Value.Start:m.Value.End], &a)
				_ = json.Unmarshal(want[m.Name], &c)
				ja, _ := json.Marshal(a)
				jc, _ := json.Marshal(c)
				if string(ja) != string(jc) {
					t.Fatalf("%s: member %q is %s, encoding/json says %s", s, m.Name, ja, jc)
				}
				if v, found, ok := Find(b, m.Name); !ok || !found || v != m.Value {
					t.Fatalf("%s: Find(%q) = %v %v %v", s, m.Name, v, found, ok)
				}
			}
		}
		if es, ok := Elements(b); ok {
			var want []json.RawMessage
			if json.Unmarshal(b, &want) != nil || len(want) != len(es) {
				t.Fatalf("%s: elements %v", s, es)
			}
		}
	})
}

// bigObject is {"0":0,"1":0,...} with n members, and then extra ones.
func bigObject(n int, extra ...string) []byte {
	b := []byte{'{'}
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `":0`...)
	}
	for _, name := range extra {
		b = append(b, `,"`+name+`":1`...)
	}
	return append(b, '}')
}

// A name twice is refused wherever it falls, before and after Members
// switches from comparing names to keeping a set of them.
func TestMembersRefusesARepeatedName(t *testing.T) {
	for _, n := range []int{2, smallObject - 1, smallObject, smallObject + 1, 50_000} {
		if ms, ok := Members(bigObject(n)); !ok || len(ms) != n {
			t.Fatalf("%d distinct members: ok %v, %d members", n, ok, len(ms))
		}
		for _, again := range []string{"0", strconv.Itoa(n / 2), strconv.Itoa(n - 1)} {
			if _, ok := Members(bigObject(n, again)); ok {
				t.Fatalf("%d members and %q again: accepted", n, again)
			}
		}
	}
}

// BenchmarkMembersLarge: a request's params may hold hundreds of thousands
// of members; Members stays linear (it was quadratic: 2.5 s for 40 000).
func BenchmarkMembersLarge(b *testing.B) {
	obj := bigObject(40_000)
	b.SetBytes(int64(len(obj)))
	for b.Loop() {
		if _, ok := Members(obj); !ok {
			b.Fatal("refused")
		}
	}
}
