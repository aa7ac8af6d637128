package mcpauth_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// rated is one answer of a rate-limited route: status, Retry-After, and
// the JSON-RPC error's message (if the answer is one).
type rated struct {
	status     int
	retryAfter string
	message    string
}

// send posts body (a message or a 2025-03-26 batch) in a session.
func (e *ruleEnv) send(tok, body string) rated {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Session-Id", "s")
	req.Header.Set("Mcp-Protocol-Version", "2025-03-26")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rpc struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &rpc)
	return rated{resp.StatusCode, resp.Header.Get("Retry-After"), rpc.Error.Message}
}

func calls(names ...string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"method":"tools/call","params":{"name":"` + n + `"}}`)
	}
	b.WriteByte(']')
	return b.String()
}

func call(name string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `"}}`
}

func statuses(rs []rated) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.status
	}
	return out
}

// One principal cannot fill a per-tool limit's table: 8 batches of 12 500
// invented tool names (100 000, the table's bound) are refused whole, as
// no batch fits in the principal's own share (32 buckets of its own, then
// one shared "other" bucket); another principal's calls of the tool pass.
// Before, every invented name took a bucket and the table was full of
// active ones: every other principal's call of a write_* tool got 429.
func TestRateLimitOnePrincipalCannotFillTheTable(t *testing.T) {
	backend := toolServer(t, []string{"write_a", "write_b"})
	e := startRuleEnv(t, proxyTo(backend),
		"\t\t\trate 2/1h tool write_*\n")
	ann := e.token("read:all")
	bob := jwkstest.Mint(t, e.k, e.is.Claims("bob", e.url, "read:all"), nil)
	var batches []rated
	for b := 0; b < 8; b++ {
		names := make([]string, 12_500)
		for i := range names {
			names[i] = "write_invented_" + strconv.Itoa(b) + "_" + strconv.Itoa(i)
		}
		batches = append(batches, e.send(ann, calls(names...)))
	}
	if r := e.send(bob, call("write_a")); r.status != 200 {
		t.Fatalf("bob's write_a after ann's 8 batches of invented names: %d %q", r.status, r.message)
	}
	for i, r := range batches {
		if r.status != 429 || r.retryAfter != "3600" || !strings.Contains(r.message, "a batch of 12468 requests exceeds 2 requests per 1h for tools beyond the 32 this principal called first") {
			t.Fatalf("ann's batch %d of invented names: %+v", i, r)
		}
	}
	// one at a time: 32 names of ann's own, 2 more calls in her shared
	// bucket, then 429 for every further name
	var got []rated
	for i := 0; i < 40; i++ {
		got = append(got, e.send(ann, call("write_single_"+strconv.Itoa(i))))
	}
	want := slices.Repeat([]int{200}, 34)
	want = append(want, slices.Repeat([]int{429}, 6)...)
	if !slices.Equal(statuses(got), want) {
		t.Fatalf("ann's 40 invented names one by one: %v, want %v", statuses(got), want)
	}
	if got[39].retryAfter != "1800" || !strings.Contains(got[39].message, "for tools beyond the 32") {
		t.Fatalf("ann's 40th name: %+v", got[39])
	}
	// her named buckets are her own: write_single_0 has one call left
	if s := []int{e.send(ann, call("write_single_0")).status, e.send(ann, call("write_single_0")).status}; !slices.Equal(s, []int{200, 429}) {
		t.Fatalf("ann's write_single_0 twice more: %v", s)
	}
	if s := []int{e.send(bob, call("write_a")).status, e.send(bob, call("write_b")).status, e.send(bob, call("write_a")).status}; !slices.Equal(s, []int{200, 200, 429}) {
		t.Fatalf("bob's write_a, write_b, write_a: %v", s)
	}
}

// A request that is refused spends nothing: calls a scope rule refuses
// (403) spend no token of the route-wide limit, nor does a call the
// per-tool limit refuses (429). Before, the rate limits were charged
// before the rules were checked, and a limit refusing did not give back
// what the limits before it had taken: three refused calls used up
// `rate 3/1h`.
func TestRateLimitRefusedRequestsSpendNothing(t *testing.T) {
	backend := toolServer(t, []string{"read_a", "read_b", "write_file"})
	e := startRuleEnv(t, proxyTo(backend),
		"\t\t\ttool write_* scopes write:all\n\t\t\trate 3/1h\n\t\t\trate 1/1h tool read_a\n")
	ann := e.token("read:all")
	var got []rated
	for _, name := range []string{"write_file", "write_file", "write_file", "read_a", "read_a", "read_b", "read_b", "read_b"} {
		got = append(got, e.send(ann, call(name)))
	}
	want := []int{403, 403, 403, 200, 429, 200, 200, 429}
	if !slices.Equal(statuses(got), want) {
		t.Fatalf("write_file ×3 (forbidden), read_a ×2 (1/1h), read_b ×3: %v, want %v", statuses(got), want)
	}
	if r := got[4]; r.retryAfter != "3600" || !strings.Contains(r.message, `1 requests per 1h for tool "read_a"`) {
		t.Fatalf("the second read_a: %+v", r)
	}
	if r := got[7]; r.retryAfter != "1200" || !strings.Contains(r.message, "3 requests per 1h;") {
		t.Fatalf("the third read_b: %+v", r)
	}
}

// Each message of a batch counts, as it would sent alone: a batch that
// does not fit is refused whole (429) and spends nothing; each tools/call
// counts against its tool's bucket. Before, a batch spent one token of
// the route-wide limit however many calls it held: 50 calls passed
// `rate 4/1h`.
func TestRateLimitBatchCountsEachRequest(t *testing.T) {
	backend := toolServer(t, []string{"read_file", "write_a", "write_b"})
	e := startRuleEnv(t, proxyTo(backend),
		"\t\t\trate 4/1h\n\t\t\trate 2/1h tool write_*\n")
	ann := e.token("read:all")
	fifty := make([]string, 50)
	for i := range fifty {
		fifty[i] = "read_file"
	}
	if r := e.send(ann, calls(fifty...)); r.status != 429 || r.retryAfter != "3600" || !strings.Contains(r.message, "50 requests") || !strings.Contains(r.message, "4 requests per 1h") {
		t.Fatalf("a batch of 50 calls against 4/1h: %+v", r)
	}
	// nothing was spent: three calls and a notification fit, then nothing
	three := strings.TrimSuffix(calls("read_file", "read_file", "read_file"), "]") +
		`,{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}}]`
	if r := e.send(ann, three); r.status != 200 {
		t.Fatalf("three calls and a notification after the refused batch: %+v", r)
	}
	if r := e.send(ann, call("read_file")); r.status != 429 || r.retryAfter != "900" {
		t.Fatalf("a fifth request: %+v", r)
	}
	// per tool: each call counts against its tool's bucket
	bob := jwkstest.Mint(t, e.k, e.is.Claims("bob", e.url, "read:all"), nil)
	if r := e.send(bob, calls("write_a", "write_a", "write_a")); r.status != 429 || r.retryAfter != "3600" || !strings.Contains(r.message, `2 requests per 1h for tool "write_a"`) {
		t.Fatalf("write_a ×3 in one batch against 2/1h: %+v", r)
	}
	if r := e.send(bob, calls("write_a", "write_b", "write_b")); r.status != 200 {
		t.Fatalf("write_a, write_b ×2: %+v", r)
	}
	if r := e.send(bob, call("write_b")); r.status != 429 || r.retryAfter != "1800" || !strings.Contains(r.message, `for tool "write_b"`) {
		t.Fatalf("a third write_b: %+v", r)
	}
	if r := e.send(bob, call("write_a")); r.status != 200 {
		t.Fatalf("a second write_a: %+v", r)
	}
	if r := e.send(bob, `{"jsonrpc":"2.0","id":9,"method":"ping"}`); r.status != 429 || r.retryAfter != "900" || !strings.Contains(r.message, "4 requests per 1h;") {
		t.Fatalf("bob's fifth request: %+v", r)
	}
}
