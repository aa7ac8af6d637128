// Command scaledemo is `make scale-demo`: three caddymcp instances (Caddy
// with mcp_stdio serving go-sdk's everything-server) behind one Caddy
// balancer (reverse_proxy with lb_policy mcp), all real processes sharing a
// file-system storage for the key ring. It drives them with 2025-era
// sessions, 2026-07-28 calls with elicitation rounds and 2026-07-28 calls
// made tasks (the tasks extension, io.modelcontextprotocol/tasks: every
// instance has task_after 0) polled with tasks/get, and checks that nothing
// is lost or misrouted and that work is spread over all three; then it
// kills one instance mid-run and checks that only its sessions, rounds and
// tasks fail, each with the spec's error, that clients who start again
// succeed on the others, and that none of its children outlive it; last,
// it compares throughput through the balancer with one instance alone.
// It prints a report and exits 1 if any check fails.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/loadgen"
)

var (
	caddyBin  = flag.String("caddy", "./caddy", "Caddy built with the plugin")
	serverBin = flag.String("server", "bin/everything-server", "stdio MCP server (go-sdk everything-server)")
	sessions  = flag.Int("sessions", 2000, "2025-era sessions (initialize, tools/call, DELETE)")
	calls     = flag.Int("calls", 2000, "2026-07-28 tools/call with an elicitation round")
	tasksN    = flag.Int("tasks", 300, "2026-07-28 tools/call made tasks, polled with tasks/get (0: no tasks, here or in the kill phase)")
	parallel  = flag.Int("parallel", 16, "clients at once")
	killRun   = flag.Int("kill-clients", 32, "clients in the kill phase (0: skip it)")
	compare   = flag.Int("compare-calls", 300, "calls per session in the throughput comparison (0: skip it)")
	keep      = flag.Bool("keep", false, "keep the working directory (Caddyfiles, logs)")
)

type instance struct {
	id   string
	port int
	cmd  *exec.Cmd
}

var (
	adminPort int
	lbFile    string
	ups       []string
	dir       string
	instances []*instance
	balancer  *exec.Cmd
	lbURL     string
	failed    atomic.Bool
	client    = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 512}, Timeout: 60 * time.Second}
)

func main() {
	flag.Parse()
	dir, _ = os.MkdirTemp("", "scaledemo-")
	if !*keep {
		defer os.RemoveAll(dir)
	}
	server, _ := filepath.Abs(*serverBin)
	storage := filepath.Join(dir, "storage")
	for i := 1; i <= 3; i++ {
		in := &instance{id: "i" + strconv.Itoa(i), port: freePort()}
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	storage file_system %s
	log {
		level WARN
	}
}
:%d {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command %s
		instance_id %s
		child_era legacy
		max_sessions 10000
		max_sessions_per_user 10000
		initialize_rate 1000000
		shutdown_timeout 1s
		task_after 0
	}
}
`, storage, in.port, server, in.id)
		in.cmd = start("instance-"+in.id, cf)
		instances = append(instances, in)
	}
	lbPort := freePort()
	adminPort = freePort()
	for _, in := range instances {
		ups = append(ups, "127.0.0.1:"+strconv.Itoa(in.port))
	}
	lbFile = filepath.Join(dir, "balancer.Caddyfile")
	os.WriteFile(lbFile, []byte(balancerConfig(storage, lbPort, "")), 0o644)
	balancer = start("balancer", lbFile)
	defer stopAll()
	for _, in := range instances {
		waitPort(in.port)
	}
	waitPort(lbPort)
	lbURL = fmt.Sprintf("http://127.0.0.1:%d/mcp", lbPort)

	fmt.Printf("# Scale-out demo: 3 instances behind a Caddy balancer (lb_policy mcp), %d CPUs\n\n", runtime.NumCPU())
	steady()
	drain(storage, lbPort)
	if *compare > 0 {
		throughput()
	}
	if *killRun > 0 {
		kill()
	}
	if failed.Load() {
		fmt.Println("\nFAILED")
		stopAll()
		os.Exit(1)
	}
	fmt.Println("\nall checks passed")
}

func check(ok bool, format string, args ...any) {
	mark := "ok"
	if !ok {
		mark = "FAIL"
		failed.Store(true)
	}
	fmt.Printf("- %s: %s\n", mark, fmt.Sprintf(format, args...))
}

const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},` +
	`"io.modelcontextprotocol/clientInfo":{"name":"scaledemo","version":"1"}}`

func hdr2025(sid string) http.Header {
	h := http.Header{"Mcp-Protocol-Version": {"2025-11-25"}}
	if sid != "" {
		h.Set("Mcp-Session-Id", sid)
	}
	return h
}

// taskMeta is meta with the tasks extension declared: a tools/call with
// it becomes a task (task_after 0: at once).
const taskMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}},` +
	`"io.modelcontextprotocol/clientInfo":{"name":"scaledemo","version":"1"}}`

var hdr2026 = http.Header{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"test_elicitation"}}

// outcome of one client's work
type outcome struct {
	instance string // whose session or round it was
	err      string // "" when it succeeded
	kind     string // session-not-found, round-lost, transport, other
}

var ids atomic.Int64

func nextID() string { return strconv.FormatInt(ids.Add(1), 10) }

// session runs one 2025-era session: initialize, initialized, tools/call
// (calls times), DELETE.
func session(ctx context.Context, calls int, during func()) outcome {
	id := nextID()
	status, sid, ans, err := loadgen.Post(ctx, client, lbURL, hdr2025(""),
		`{"jsonrpc":"2.0","id":`+id+`,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"scaledemo","version":"1"}}}`, id)
	if err != nil || status != 200 || sid == "" {
		return outcome{err: fmt.Sprintf("initialize: %d %v %.120s", status, err, ans), kind: classify(status, ans, err)}
	}
	inst, _, _ := strings.Cut(sid, instanceid.Sep)
	o := outcome{instance: inst}
	if status, _, ans, err := loadgen.Post(ctx, client, lbURL, hdr2025(sid), `{"jsonrpc":"2.0","method":"notifications/initialized"}`, ""); status != 202 {
		o.err, o.kind = fmt.Sprintf("initialized: %d %v %.120s", status, err, ans), classify(status, ans, err)
		return o
	}
	for i := 0; i < calls; i++ {
		if during != nil {
			during()
		}
		id := nextID()
		status, _, ans, err := loadgen.Post(ctx, client, lbURL, hdr2025(sid),
			`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"test_simple_text","arguments":{}}}`, id)
		if err != nil || status != 200 || !bytes.Contains(ans, []byte(`"result"`)) {
			o.err, o.kind = fmt.Sprintf("tools/call: %d %v %.120s", status, err, ans), classify(status, ans, err)
			return o
		}
	}
	req, _ := http.NewRequestWithContext(ctx, "DELETE", lbURL, nil)
	req.Header = hdr2025(sid)
	resp, err := client.Do(req)
	if err != nil {
		o.err, o.kind = "DELETE: "+err.Error(), "transport"
		return o
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		o.err, o.kind = fmt.Sprintf("DELETE: %d", resp.StatusCode), classify(resp.StatusCode, nil, nil)
	}
	return o
}

// elicit runs one 2026-07-28 tools/call of test_elicitation: the round
// (input_required with requestState), then the retry with the answer.
func elicit(ctx context.Context, between func()) outcome {
	id := nextID()
	status, _, ans, err := loadgen.Post(ctx, client, lbURL, hdr2026,
		`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"test_elicitation","arguments":{"message":"name?"},`+meta+`}}`, id)
	if err != nil || status != 200 {
		return outcome{err: fmt.Sprintf("call: %d %v %.120s", status, err, ans), kind: classify(status, ans, err)}
	}
	var r struct {
		Result struct {
			ResultType    string                     `json:"resultType"`
			InputRequests map[string]json.RawMessage `json:"inputRequests"`
			RequestState  string                     `json:"requestState"`
		} `json:"result"`
	}
	json.Unmarshal(ans, &r)
	if r.Result.ResultType != "input_required" || len(r.Result.InputRequests) != 1 {
		return outcome{err: fmt.Sprintf("call: no round: %.200s", ans), kind: "other"}
	}
	o := outcome{instance: instanceid.StateInstance(r.Result.RequestState)}
	var key string
	for k := range r.Result.InputRequests {
		key = k
	}
	if between != nil {
		between()
	}
	id = nextID()
	state, _ := json.Marshal(r.Result.RequestState)
	status, _, ans, err = loadgen.Post(ctx, client, lbURL, hdr2026,
		`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"test_elicitation","arguments":{"message":"name?"},`+
			`"inputResponses":{"`+key+`":{"action":"accept","content":{"username":"demo"}}},"requestState":`+string(state)+`,`+meta+`}}`, id)
	if err != nil || status != 200 || !bytes.Contains(ans, []byte(`action=accept`)) {
		o.err, o.kind = fmt.Sprintf("retry: %d %v %.200s", status, err, ans), classify(status, ans, err)
	}
	return o
}

var hdrTaskCall = http.Header{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"test_simple_text"}}

// newTask makes one 2026-07-28 tools/call of test_simple_text with the
// tasks extension declared, through the balancer: with task_after 0 the
// answer must be a task (resultType "task"); o.instance is the instance
// its id names.
func newTask(ctx context.Context) (string, outcome) {
	id := nextID()
	status, _, ans, err := loadgen.Post(ctx, client, lbURL, hdrTaskCall,
		`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"test_simple_text","arguments":{},`+taskMeta+`}}`, id)
	if err != nil || status != 200 {
		return "", outcome{err: fmt.Sprintf("tools/call: %d %v %.200s", status, err, ans), kind: classify(status, ans, err)}
	}
	var r struct {
		Result struct {
			ResultType string `json:"resultType"`
			TaskID     string `json:"taskId"`
			Status     string `json:"status"`
		} `json:"result"`
	}
	json.Unmarshal(ans, &r)
	if r.Result.ResultType != "task" || r.Result.TaskID == "" {
		return "", outcome{err: fmt.Sprintf("tools/call: no task: %.200s", ans), kind: "other"}
	}
	inst, _, _ := strings.Cut(r.Result.TaskID, instanceid.Sep)
	return r.Result.TaskID, outcome{instance: inst}
}

// getTask is one tasks/get of the task through the balancer (Mcp-Name: the
// task id, by which the balancer routes it to the instance that made it).
func getTask(ctx context.Context, taskID string) (int, []byte, error) {
	id := nextID()
	tid, _ := json.Marshal(taskID)
	h := http.Header{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tasks/get"}, "Mcp-Name": {taskID}}
	status, _, ans, err := loadgen.Post(ctx, client, lbURL, h,
		`{"jsonrpc":"2.0","id":`+id+`,"method":"tasks/get","params":{"taskId":`+string(tid)+`,`+taskMeta+`}}`, id)
	return status, ans, err
}

// notFound reports whether an answer is the -32602 of an unknown task.
func notFound(status int, ans []byte, err error) bool {
	return err == nil && status == 400 && bytes.Contains(ans, []byte(`-32602`))
}

// awaitTask polls tasks/get every 20 ms (30 s at most) until the task is
// completed with its CallToolResult; polls is how many tasks/get it took.
// A -32602 (the instance asked does not know the task: the poll was
// misrouted, or the task lost) is a failure of kind task-not-found.
func awaitTask(ctx context.Context, taskID string, o outcome) (_ outcome, polls int) {
	deadline := time.Now().Add(30 * time.Second)
	for polls = 1; ; polls++ {
		status, ans, err := getTask(ctx, taskID)
		if err != nil || status != 200 {
			kind := classify(status, ans, err)
			if notFound(status, ans, err) {
				kind = "task-not-found"
			}
			o.err, o.kind = fmt.Sprintf("tasks/get %d of %s: %d %v %.200s", polls, taskID, status, err, ans), kind
			return o, polls
		}
		var r struct {
			Result struct {
				ResultType string `json:"resultType"`
				Status     string `json:"status"`
				Result     *struct {
					Content []json.RawMessage `json:"content"`
					IsError bool              `json:"isError"`
				} `json:"result"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(ans, &r) != nil || r.Error != nil || r.Result.ResultType != "complete" {
			o.err, o.kind = fmt.Sprintf("tasks/get %d of %s: %.200s", polls, taskID, ans), "other"
			return o, polls
		}
		switch r.Result.Status {
		case "completed":
			if r.Result.Result == nil || len(r.Result.Result.Content) == 0 || r.Result.Result.IsError {
				o.err, o.kind = fmt.Sprintf("tasks/get %d of %s: completed without its result: %.200s", polls, taskID, ans), "other"
			}
			return o, polls
		case "working":
		default:
			o.err, o.kind = fmt.Sprintf("tasks/get %d of %s: %s: %.200s", polls, taskID, r.Result.Status, ans), "other"
			return o, polls
		}
		if time.Now().After(deadline) {
			o.err, o.kind = fmt.Sprintf("tasks/get of %s: still working after 30 s (%d polls)", taskID, polls), "other"
			return o, polls
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// examples is " e.g. [...]" for the failures an example of which was kept.
func examples(ex []string) string {
	if len(ex) == 0 {
		return ""
	}
	return fmt.Sprintf(" e.g. %q", ex)
}

// classify names a failure the way a client must read it.
func classify(status int, ans []byte, err error) string {
	switch {
	case err != nil || status == 502 || status == 503:
		return "transport"
	case status == 404:
		return "session-not-found"
	case bytes.Contains(ans, []byte(`-32602`)) && bytes.Contains(ans, []byte(`requestState`)):
		return "round-lost"
	}
	return "other"
}

// run makes n units of work with p clients at once and returns their outcomes.
func run(n, p int, work func(i int) outcome) ([]outcome, time.Duration) {
	out := make([]outcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < p; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				out[i] = work(i)
			}
		}()
	}
	wg.Wait()
	return out, time.Since(t0)
}

func spread(out []outcome) (map[string]int, int, []string) {
	per := map[string]int{}
	bad := 0
	var examples []string
	for _, o := range out {
		per[o.instance]++
		if o.err != "" {
			bad++
			if len(examples) < 3 {
				examples = append(examples, o.err)
			}
		}
	}
	return per, bad, examples
}

func perLine(per map[string]int) string {
	var ks []string
	for k := range per {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, per[k]))
	}
	return strings.Join(parts, ", ")
}

func steady() {
	ctx := context.Background()
	fmt.Printf("## Steady state: %d sessions (2025-11-25), %d calls with an elicitation round and %d calls made tasks (2026-07-28), %d clients at once\n\n", *sessions, *calls, *tasksN, *parallel)
	out, d := run(*sessions, *parallel, func(int) outcome { return session(ctx, 1, nil) })
	per, bad, ex := spread(out)
	notFound := 0
	for _, o := range out {
		if o.kind == "session-not-found" {
			notFound++
		}
	}
	check(bad == 0, "2025 sessions: %d of %d failed (%d \"session not found\") in %s (%.0f sessions/s) %v", bad, len(out), notFound, d.Round(time.Millisecond), float64(len(out))/d.Seconds(), ex)
	check(len(per) == 3 && per["i1"] > 0 && per["i2"] > 0 && per["i3"] > 0, "spread of sessions: %s", perLine(per))
	out, d = run(*calls, *parallel, func(int) outcome { return elicit(ctx, nil) })
	per, bad, ex = spread(out)
	check(bad == 0, "2026 calls with a round: %d of %d failed (lost or misrouted retries) in %s (%.0f calls/s) %v", bad, len(out), d.Round(time.Millisecond), float64(len(out))/d.Seconds(), ex)
	check(len(per) == 3 && per["i1"] > 0 && per["i2"] > 0 && per["i3"] > 0, "spread of rounds: %s", perLine(per))
	if *tasksN > 0 {
		// calls made tasks, each polled through the balancer until it is
		// completed: a poll sent to another instance than the task's would
		// answer -32602 (not found)
		var polls, first atomic.Int64
		out, d = run(*tasksN, *parallel, func(int) outcome {
			tid, o := newTask(ctx)
			if o.err != "" {
				return o
			}
			o, n := awaitTask(ctx, tid, o)
			polls.Add(int64(n))
			if n == 1 && o.err == "" {
				first.Add(1)
			}
			return o
		})
		per, bad, ex = spread(out)
		lost := 0
		for _, o := range out {
			if o.kind == "task-not-found" {
				lost++
			}
		}
		check(bad == 0, "2026 calls made tasks (task_after 0), polled with tasks/get: %d of %d failed (%d tasks/get \"not found\", -32602) in %s (%.0f tasks/s); %d tasks/get, %d tasks completed at the first%s",
			bad, len(out), lost, d.Round(time.Millisecond), float64(len(out))/d.Seconds(), polls.Load(), first.Load(), examples(ex))
		check(len(per) == 3 && per["i1"] > 0 && per["i2"] > 0 && per["i3"] > 0, "spread of tasks: %s", perLine(per))
	}
	fmt.Println()
}

// balancerConfig is the balancer's Caddyfile, with a drain line if any.
func balancerConfig(storage string, port int, drain string) string {
	var names []string
	for _, in := range instances {
		names = append(names, fmt.Sprintf("\t\t\tinstance %s 127.0.0.1:%d", in.id, in.port))
	}
	if drain != "" {
		names = append(names, "\t\t\tdrain "+drain)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	storage file_system %s
	log {
		level WARN
	}
}
:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		lb_policy mcp {
%s
		}
		lb_try_duration 5s
		fail_duration 30s
		flush_interval -1
	}
}
`, adminPort, storage, port, strings.Join(ups, " "), strings.Join(names, "\n"))
}

func reload(storage string, port int, drain string) {
	os.WriteFile(lbFile, []byte(balancerConfig(storage, port, drain)), 0o644)
	out, err := exec.Command(*caddyBin, "reload", "--config", lbFile, "--adapter", "caddyfile",
		"--address", "127.0.0.1:"+strconv.Itoa(adminPort)).CombinedOutput()
	if err != nil {
		check(false, "balancer reload: %v %s", err, out)
		return
	}
	check(true, "balancer reloaded (drain %q)", drain)
	// the old config's server closes its idle connections: a client learns
	// that on its next request (EOF); this one knows of the reload
	client.CloseIdleConnections()
}

// drain: sessions open on every instance; the balancer is reloaded with
// `drain i3`: the open sessions go on (i3's included: they finish), new
// sessions avoid i3; then the balancer is reloaded without it.
func drain(storage string, port int) {
	ctx := context.Background()
	fmt.Printf("## Draining i3 by reloading the balancer, with sessions open\n\n")
	type open struct{ sid, inst string }
	var sessionsOpen []open
	for len(sessionsOpen) < 30 {
		id := nextID()
		_, sid, _, err := loadgen.Post(ctx, client, lbURL, hdr2025(""),
			`{"jsonrpc":"2.0","id":`+id+`,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"scaledemo","version":"1"}}}`, id)
		if err != nil || sid == "" {
			check(false, "initialize: %v", err)
			return
		}
		loadgen.Post(ctx, client, lbURL, hdr2025(sid), `{"jsonrpc":"2.0","method":"notifications/initialized"}`, "")
		inst, _, _ := strings.Cut(sid, instanceid.Sep)
		sessionsOpen = append(sessionsOpen, open{sid, inst})
	}
	reload(storage, port, "i3")
	bad, onI3 := 0, 0
	for _, o := range sessionsOpen {
		if o.inst == "i3" {
			onI3++
		}
		id := nextID()
		status, _, ans, err := loadgen.Post(ctx, client, lbURL, hdr2025(o.sid),
			`{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"test_simple_text","arguments":{}}}`, id)
		if err != nil || status != 200 || !bytes.Contains(ans, []byte(`"result"`)) {
			bad++
		}
		req, _ := http.NewRequestWithContext(ctx, "DELETE", lbURL, nil)
		req.Header = hdr2025(o.sid)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	check(bad == 0 && onI3 > 0, "sessions open across the reload: %d of %d failed (%d of them on the draining i3)", bad, len(sessionsOpen), onI3)
	out, _ := run(300, *parallel, func(int) outcome { return session(ctx, 1, nil) })
	per, nbad, ex := spread(out)
	check(nbad == 0 && per["i3"] == 0, "new sessions while i3 drains: %s; %d failed %v", perLine(per), nbad, ex)
	reload(storage, port, "")
	fmt.Println()
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	for p, pp := range loadgen.Parents() {
		if pp == pid {
			out = append(out, p)
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "Z")
}

// kill: clients keep sessions open (several calls each) and make rounds
// whose retries wait a moment; halfway, instance i2 is killed (SIGKILL).
// Every failure must be one of i2's, of the kind a client must expect, and
// the client's new attempt must succeed on another instance.
func kill() {
	ctx := context.Background()
	victim := instances[1]
	fmt.Printf("## Killing %s (SIGKILL) mid-run, %d clients: 2025 sessions of 5 calls, 2026 calls with a round\n\n", victim.id, *killRun)
	// tasks on the victim before the kill (made through the balancer until
	// killTasks of them name it): they resolve; after the kill, no
	// instance knows them
	const killTasks = 20
	var victimTasks []string
	if *tasksN > 0 {
		var others []string
		made, bad := 0, 0
		var ex []string
		for len(victimTasks) < killTasks && made < 50*killTasks {
			made++
			tid, o := newTask(ctx)
			switch {
			case o.err != "":
				bad++
				if len(ex) < 3 {
					ex = append(ex, o.err)
				}
			case o.instance == victim.id:
				victimTasks = append(victimTasks, tid)
			default:
				others = append(others, tid)
			}
		}
		resolved := 0
		for _, tid := range victimTasks {
			if o, _ := awaitTask(ctx, tid, outcome{instance: victim.id}); o.err == "" {
				resolved++
			} else if len(ex) < 3 {
				ex = append(ex, o.err)
			}
		}
		for _, tid := range others {
			if o, _ := awaitTask(ctx, tid, outcome{}); o.err != "" {
				bad++
				if len(ex) < 3 {
					ex = append(ex, o.err)
				}
			}
		}
		check(len(victimTasks) == killTasks && resolved == killTasks && bad == 0,
			"tasks of %s before the kill: %d of %d resolved (completed with their result); %d tasks made through the balancer for them, %d failed%s",
			victim.id, resolved, len(victimTasks), made, bad, examples(ex))
	}
	n := 40 * *killRun
	var done atomic.Int64
	var once sync.Once
	var kids []int
	killed := make(chan struct{})
	pause := func() {
		if done.Load() >= int64(n/2) {
			once.Do(func() {
				kids = children(victim.cmd.Process.Pid)
				victim.cmd.Process.Signal(syscall.SIGKILL)
				victim.cmd.Wait()
				close(killed)
			})
		}
	}
	var retried, recovered atomic.Int64
	out, d := run(n, *killRun, func(i int) outcome {
		defer done.Add(1)
		var o outcome
		if i%2 == 0 {
			o = session(ctx, 5, pause)
		} else {
			o = elicit(ctx, pause)
		}
		if o.err == "" {
			return o
		}
		// the client starts again: a new session, the call without requestState
		retried.Add(1)
		var again outcome
		if i%2 == 0 {
			again = session(ctx, 5, nil)
		} else {
			again = elicit(ctx, nil)
		}
		if again.err == "" && again.instance != victim.id {
			recovered.Add(1)
		} else {
			o.err += " / then: " + again.err + " on " + again.instance
			o.kind += "+retry-failed"
		}
		return o
	})
	select {
	case <-killed:
	default:
		check(false, "the kill never happened")
		return
	}
	kinds := map[string]int{}
	foreign := 0
	var ex []string
	seen := map[string]bool{}
	for _, o := range out {
		if o.err == "" {
			continue
		}
		kinds[o.kind]++
		if !seen[o.kind] {
			seen[o.kind] = true
			fmt.Printf("  e.g. %s: %.300s\n", o.kind, o.err)
		}
		// a failed initialize names no instance: it was routed to the victim
		// as it died (it must then have been a transport failure)
		if o.instance != victim.id && !(o.instance == "" && o.kind == "transport") {
			foreign++
			if len(ex) < 3 {
				ex = append(ex, o.instance+": "+o.err)
			}
		}
	}
	failures := 0
	for _, v := range kinds {
		failures += v
	}
	fmt.Printf("%d units of work in %s; %d failed: %v\n", n, d.Round(time.Millisecond), failures, kinds)
	check(foreign == 0, "failures on the surviving instances: %d %v", foreign, ex)
	ok := true
	for k := range kinds {
		if k != "session-not-found" && k != "round-lost" && k != "transport" {
			ok = false
		}
	}
	check(ok, "every failure is a spec error (404 session not found, -32602 requestState lost) or a request in flight to the killed instance (502, broken stream)")
	check(recovered.Load() == retried.Load(), "clients that started again succeeded on another instance: %d of %d", recovered.Load(), retried.Load())
	// the killed instance's children die with it (PR_SET_PDEATHSIG)
	deadline := time.Now().Add(10 * time.Second)
	left := kids
	for len(left) > 0 && time.Now().Before(deadline) {
		var still []int
		for _, p := range left {
			if alive(p) {
				still = append(still, p)
			}
		}
		left = still
		if len(left) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	check(len(kids) > 0 && len(left) == 0, "processes left behind by %s's %d children: %d", victim.id, len(kids), len(left))
	if len(victimTasks) > 0 {
		// the balancer sends a tasks/get of the victim's task to the
		// fallback's choice, which does not know it: -32602, as for an id
		// that never was
		gone := 0
		var ex []string
		for _, tid := range victimTasks {
			status, ans, err := getTask(ctx, tid)
			if notFound(status, ans, err) {
				gone++
			} else if len(ex) < 3 {
				ex = append(ex, fmt.Sprintf("%d %v %.200s", status, err, ans))
			}
		}
		check(gone == len(victimTasks), "tasks of the killed instance: %d of %d not found (-32602)%s", gone, len(victimTasks), examples(ex))
		out, _ := run(60, *parallel, func(int) outcome {
			tid, o := newTask(ctx)
			if o.err != "" {
				return o
			}
			o, _ = awaitTask(ctx, tid, o)
			return o
		})
		per, bad, ex := spread(out)
		check(bad == 0 && per[victim.id] == 0, "new tasks after the kill: %s; %d failed%s", perLine(per), bad, examples(ex))
	}
	fmt.Println()
}

// throughput compares the same load through the balancer and its three
// instances with one instance alone.
func throughput() {
	ctx := context.Background()
	live := 0
	for _, in := range instances {
		if in.cmd.ProcessState == nil {
			live++
		}
	}
	fmt.Printf("## Throughput: 16 sessions × %d tools/call (2025) and 16 clients × %d calls (2026, no round)\n\n", *compare, *compare)
	fmt.Println("| | 2025 calls/s | p99 | 2026 calls/s | p99 |\n|---|---|---|---|---|")
	direct := fmt.Sprintf("http://127.0.0.1:%d/mcp", instances[0].port)
	for _, c := range []struct{ name, url string }{
		{"one instance, no balancer", direct},
		{fmt.Sprintf("balancer, %d instances", live), lbURL},
	} {
		loadgen.Run(ctx, loadgen.Config{URL: c.url, Sessions: 4, Calls: 20})
		a := loadgen.Run(ctx, loadgen.Config{URL: c.url, Sessions: 16, Calls: *compare})
		b := loadgen.Run(ctx, loadgen.Config{URL: c.url, Sessions: 16, Calls: *compare, Modern: true})
		check(a.Failures == 0 && b.Failures == 0, "%s: %d + %d failures", c.name, a.Failures, b.Failures)
		fmt.Printf("| %s | %.0f | %s | %.0f | %s |\n", c.name, a.CallsPerSec, a.P99.Round(time.Microsecond*100), b.CallsPerSec, b.P99.Round(time.Microsecond*100))
	}
}

func start(name, caddyfile string) *exec.Cmd {
	cf := caddyfile
	if !strings.HasSuffix(cf, ".Caddyfile") {
		cf = filepath.Join(dir, name+".Caddyfile")
		os.WriteFile(cf, []byte(caddyfile), 0o644)
	}
	log, _ := os.Create(filepath.Join(dir, name+".log"))
	cmd := exec.Command(*caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data-"+name))
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "scaledemo: starting %s: %v\n", name, err)
		os.Exit(1)
	}
	return cmd
}

func stopAll() {
	cmds := []*exec.Cmd{balancer}
	for _, in := range instances {
		cmds = append(cmds, in.cmd)
	}
	for _, c := range cmds {
		if c != nil && c.Process != nil && c.ProcessState == nil {
			c.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				c.Process.Kill()
			}
		}
	}
}

func freePort() int {
	p, err := loadgen.FreePort()
	if err != nil {
		panic(err)
	}
	return p
}

func waitPort(p int) {
	if err := loadgen.WaitPort(p, 30*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "scaledemo: %v (logs in %s)\n", err, dir)
		stopAll()
		os.Exit(1)
	}
}
