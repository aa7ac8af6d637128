package stdiobridge

import "testing"

func TestValidRoots(t *testing.T) {
	for _, tc := range []struct {
		roots []string
		ok    bool
	}{
		{nil, true},
		{[]string{"none"}, true},
		{[]string{"forward"}, true},
		{[]string{"file:///srv/data", "file://localhost/srv/x"}, true},
		{[]string{"forward", "file:///srv/data"}, false},
		{[]string{"https://example.com/x"}, false},
		{[]string{"file://host/srv"}, false},
		{[]string{"file:relative"}, false},
		{[]string{"/srv/data"}, false},
		{[]string{"file:///srv?x=1"}, false},
	} {
		if err := validRoots(tc.roots); (err == nil) != tc.ok {
			t.Errorf("validRoots(%q) = %v", tc.roots, err)
		}
	}
}
