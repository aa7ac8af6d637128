package jsonscan

import (
	"encoding/json"
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
