package caddyfiledoc

import (
	"slices"
	"testing"
)

// Diff names each option in one spelling and not the other; values of an
// option (auto, legacy) and the second switch over the option are not
// options; a helper's NextBlock loop is followed; a README example block
// (one that does not open like the syntax) is not read.
func TestDiff(t *testing.T) {
	got, err := Diff("testdata/caddyfile.go.txt", "testdata/README.md", "demo")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"option beta: read by the parser of testdata/caddyfile.go.txt, missing from the syntax above UnmarshalCaddyfile",
		"option hidden: read by the parser of testdata/caddyfile.go.txt, missing from the syntax above UnmarshalCaddyfile",
		"option ghost: in the syntax above UnmarshalCaddyfile, not read by the parser of testdata/caddyfile.go.txt",
		"option extra: in testdata/README.md's syntax block for demo, not read by the parser of testdata/caddyfile.go.txt",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Diff:\n%q\nwant\n%q", got, want)
	}
}

func TestDiffNoReadmeBlock(t *testing.T) {
	got, err := Diff("testdata/caddyfile.go.txt", "testdata/README.md", "other")
	if err == nil {
		t.Errorf("a syntax that does not open with the directive: no error, got %q", got)
	}
}
