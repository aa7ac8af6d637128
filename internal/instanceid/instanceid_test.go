package instanceid

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddymcp/caddymcp/internal/keyring"
)

func ring(t *testing.T, dir string) *keyring.Ring {
	t.Helper()
	r, err := keyring.For(context.Background(), &certmagic.FileStorage{Path: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Ids verify with the shared ring, name their instance, and cannot be
// forged: another instance's name, a changed part, or a ring of another
// storage does not verify.
func TestIDs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := ring(t, dir)
	id := NewSessionID(r, "i1")
	if inst, ok := SessionOwner(ctx, r, id); !ok || inst != "i1" {
		t.Fatalf("%s: %q %v", id, inst, ok)
	}
	parts := strings.Split(id, Sep)
	// one character of the random part changed (to another: it is random,
	// and was "A" one time in 32)
	changed := "A"
	if parts[2][0] == 'A' {
		changed = "B"
	}
	for _, forged := range []string{
		"i2" + strings.TrimPrefix(id, "i1"), // another instance's name
		strings.Join([]string{parts[0], parts[1], changed + parts[2][1:], parts[3]}, Sep),
		strings.Join([]string{parts[0], "AAAAAAAA", parts[2], parts[3]}, Sep),
		id + Sep, "", "i1", "i1~~~",
	} {
		if _, ok := SessionOwner(ctx, r, forged); ok {
			t.Errorf("forged id verified: %s", forged)
		}
	}
	other := ring(t, t.TempDir())
	if _, ok := SessionOwner(ctx, other, id); ok {
		t.Error("a ring of another storage verified the id")
	}

	st := Seal(r, "i3", []byte(`{"r":"x"}`))
	if StateInstance(st) != "i3" {
		t.Fatal(st)
	}
	inst, payload, err := Open(ctx, r, st)
	if err != nil || inst != "i3" || string(payload) != `{"r":"x"}` {
		t.Fatalf("%q %s %v", inst, payload, err)
	}
	if _, _, err := Open(ctx, r, "i1"+strings.TrimPrefix(st, "i3")); err == nil {
		t.Error("a requestState renamed to another instance opened")
	}
	if _, _, err := Open(ctx, other, st); err == nil {
		t.Error("a ring of another storage opened the state")
	}

	// a state has one spelling: its last character with an unused bit set
	// (a lenient decoder reads the same bytes) does not open
	for n := 1; n <= 3; n++ {
		st := Seal(r, "i3", []byte(strings.Repeat("p", n)))
		enc := st[strings.LastIndex(st, Sep)+1:]
		if len(enc)%4 == 0 { // no unused bits at this length
			continue
		}
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		last := strings.IndexByte(alphabet, st[len(st)-1])
		respelled := st[:len(st)-1] + string(alphabet[last^1])
		if _, _, err := Open(ctx, r, respelled); err == nil {
			t.Errorf("a respelled state opened: %s for %s", respelled, st)
		}
		if _, _, err := Open(ctx, r, st); err != nil {
			t.Errorf("the state itself: %v", err)
		}
	}
}

// Rotation keeps ids made with older keys valid while the ring retains
// them; another instance's new key is learned on first use.
func TestRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := ring(t, dir)
	old := NewSessionID(r, "i1")
	oldState := Seal(r, "i1", []byte("p"))

	// another instance rotates: a new key, newest first, in storage
	fs := &certmagic.FileStorage{Path: dir}
	b, err := fs.Load(ctx, keyring.StorageKey)
	if err != nil {
		t.Fatal(err)
	}
	var ks []map[string]any
	json.Unmarshal(b, &ks)
	ks = append([]map[string]any{{"id": "NEWKEY22", "secret": make([]byte, 32), "created": time.Now()}}, ks...)
	// and, a minute ago, one more: the newest key older than the grace
	// period is the one new ids use
	ks = append(ks[:1], append([]map[string]any{{"id": "OLDERKEY", "secret": make([]byte, 32), "created": time.Now().Add(-time.Minute)}}, ks[1:]...)...)
	b, _ = json.Marshal(ks)
	fs.Store(ctx, keyring.StorageKey, b)
	// an id made with it (as the other instance would) verifies here once
	// the ring is read again
	saved := keyring.ReloadEvery
	keyring.ReloadEvery = 0
	defer func() { keyring.ReloadEvery = saved }()
	if k := r.Lookup(ctx, "NEWKEY22"); k == nil {
		t.Fatal("the new key was not learned")
	}
	if _, ok := SessionOwner(ctx, r, old); !ok {
		t.Error("an id of the older key no longer verifies")
	}
	if _, _, err := Open(ctx, r, oldState); err != nil {
		t.Error("a state of the older key no longer opens")
	}
	if k := r.Current(); k.ID != "OLDERKEY" {
		t.Errorf("new ids use %s, want the newest key older than the grace period (not the one just added)", k.ID)
	}
}

// Without storage, a process-local ring still makes and verifies ids.
func TestLocalRing(t *testing.T) {
	r := keyring.Local()
	id := NewSessionID(r, "solo")
	if inst, ok := SessionOwner(context.Background(), r, id); !ok || inst != "solo" {
		t.Fatalf("%s: %q %v", id, inst, ok)
	}
	if _, ok := SessionOwner(context.Background(), keyring.Local(), id); ok {
		t.Error("another process's ring verified the id")
	}
}

// Ids made before storage lost the ring (deleted, emptied, or overwritten
// with keys that are not keys) still verify once the ring has read it
// again, and new ids are still made (a ring without a key panicked).
func TestRingSurvivesStorageLoss(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		content string // "": the file is deleted
	}{
		{"deleted", ""},
		{"empty", " "},
		{"empty list", "[]"},
		{"short secrets", `[{"id":"SHORTKEY","secret":"AAAAAAAAAAAAAAAAAAAAAA==","created":"2026-01-01T00:00:00Z"}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			r := ring(t, dir)
			id := NewSessionID(r, "i1")
			st := Seal(r, "i1", []byte("p"))
			fs := &certmagic.FileStorage{Path: dir}
			if c.content == "" {
				if err := fs.Delete(ctx, keyring.StorageKey); err != nil {
					t.Fatal(err)
				}
			} else if err := fs.Store(ctx, keyring.StorageKey, []byte(c.content)); err != nil {
				t.Fatal(err)
			}
			savedEvery, savedWait := keyring.ReloadEvery, keyring.LookupWait
			keyring.ReloadEvery, keyring.LookupWait = 0, time.Minute
			if k := r.Lookup(ctx, "UNKNOWN2"); k != nil { // reads the ring again, and waits for it
				t.Fatalf("unknown key found: %s", k.ID)
			}
			keyring.ReloadEvery, keyring.LookupWait = savedEvery, savedWait

			if inst, ok := SessionOwner(ctx, r, id); !ok || inst != "i1" {
				t.Errorf("an id made before no longer verifies: %q %v", inst, ok)
			}
			if _, payload, err := Open(ctx, r, st); err != nil || string(payload) != "p" {
				t.Errorf("a state sealed before no longer opens: %q %v", payload, err)
			}
			id2 := NewSessionID(r, "i1")
			if inst, ok := SessionOwner(ctx, r, id2); !ok || inst != "i1" {
				t.Errorf("a new id does not verify: %q %v", inst, ok)
			}
		})
	}
}

// A Ring that was never given a key (its zero value) still makes ids that
// it verifies: Current is never nil.
func TestZeroRing(t *testing.T) {
	r := new(keyring.Ring)
	id := NewSessionID(r, "z")
	if inst, ok := SessionOwner(context.Background(), r, id); !ok || inst != "z" {
		t.Fatalf("%s: %q %v", id, inst, ok)
	}
	st := Seal(r, "z", []byte("p"))
	if inst, payload, err := Open(context.Background(), r, st); err != nil || inst != "z" || string(payload) != "p" {
		t.Fatalf("%q %q %v", inst, payload, err)
	}
}
