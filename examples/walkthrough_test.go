// Package examples holds the test that keeps the README's walkthrough true.
package examples

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// step is one `$ command` of the walkthrough and the output lines shown
// under it.
type step struct {
	command  string
	expected []string
}

// walkthrough reads the console blocks between the walkthrough markers.
func walkthrough(t *testing.T, readme string) []step {
	begin := strings.Index(readme, "<!-- walkthrough:begin -->")
	end := strings.Index(readme, "<!-- walkthrough:end -->")
	if begin < 0 || end < begin {
		t.Fatal("README.md has no walkthrough markers")
	}
	var steps []step
	inBlock := false
	for _, line := range strings.Split(readme[begin:end], "\n") {
		switch {
		case line == "```console":
			inBlock = true
		case line == "```":
			inBlock = false
		case !inBlock:
		case strings.HasPrefix(line, "$ "):
			steps = append(steps, step{command: line[2:]})
		case len(steps) > 0:
			if l := strings.TrimRight(line, " "); l != "" {
				steps[len(steps)-1].expected = append(steps[len(steps)-1].expected, l)
			}
		}
	}
	if len(steps) < 5 {
		t.Fatalf("walkthrough has only %d commands", len(steps))
	}
	return steps
}

// lineMatcher turns an expected line into a regexp; … matches anything.
func lineMatcher(expected string) *regexp.Regexp {
	parts := strings.Split(expected, "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// TestREADMEWalkthrough runs the README's walkthrough in one bash session
// against the running example (`.ci/example.sh` starts it) and checks that
// every output line the README shows appears, in order. A command shown
// without output must print nothing.
func TestREADMEWalkthrough(t *testing.T) {
	if os.Getenv("CADDYMCP_EXAMPLE_RUNNING") == "" {
		t.Skip("needs the running example: .ci/example.sh sets CADDYMCP_EXAMPLE_RUNNING")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// the example may run on other ports (CADDYMCP_PORT and friends): the
	// walkthrough's commands and output then use them
	ports := []string{}
	for env, def := range map[string]string{"CADDYMCP_PORT": "3000", "CADDYMCP_AUTH_PORT": "9000"} {
		if p := os.Getenv(env); p != "" && p != def {
			ports = append(ports, "localhost:"+def, "localhost:"+p)
		}
	}
	steps := walkthrough(t, strings.NewReplacer(ports...).Replace(string(readme)))
	const marker = "@@walkthrough-step@@"
	var script strings.Builder
	script.WriteString("cd ..\n")
	for _, s := range steps {
		script.WriteString("echo " + marker + "\n")
		script.WriteString(s.command + " 2>&1\n")
	}
	out, err := exec.Command("bash", "-c", script.String()).CombinedOutput()
	if err != nil {
		t.Logf("bash: %v", err)
	}
	chunks := strings.Split(string(out), marker+"\n")[1:]
	if len(chunks) != len(steps) {
		t.Fatalf("ran %d of %d steps; output:\n%s", len(chunks), len(steps), out)
	}
	for i, s := range steps {
		var actual []string
		for _, l := range strings.Split(strings.ReplaceAll(chunks[i], "\r", ""), "\n") {
			if l = strings.TrimRight(l, " "); l != "" {
				actual = append(actual, l)
			}
		}
		if len(s.expected) == 0 {
			if len(actual) != 0 {
				t.Errorf("step %d `%s`: README shows no output, got:\n%s", i+1, short(s.command), strings.Join(actual, "\n"))
			}
			continue
		}
		j := 0
		for _, want := range s.expected {
			re := lineMatcher(want)
			for j < len(actual) && !re.MatchString(actual[j]) {
				j++
			}
			if j == len(actual) {
				t.Errorf("step %d `%s`: README line\n  %s\nnot found (in order) in the output:\n%s", i+1, short(s.command), want, strings.Join(actual, "\n"))
				break
			}
			j++
		}
	}
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
