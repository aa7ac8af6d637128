package mcptools

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpcstream"
)

// listKinds: the result member of each list, the kind of its entries, and
// the member that names an entry.
var listKinds = []struct{ member, kind, key string }{
	{"tools", "tool", "name"},
	{"prompts", "prompt", "name"},
	{"resources", "resource", "uri"},
	{"resourceTemplates", "resource", "uriTemplate"},
}

// entryMembers are the members of a list entry that clients read: one
// that a client could read as one of these without being it (another
// case, escaped) makes the entry ambiguous, and it is left out.
var entryMembers = []string{"name", "title", "description", "inputSchema", "outputSchema", "annotations", "arguments", "uri", "uriTemplate", "mimeType", "_meta", "icons", "execution"}

// rewriteMessage curates the lists in one JSON-RPC message (rpcstream
// calls it for every message of a response). Every entry is decoded and
// encoded again, so a client reads exactly what was judged: one name,
// each member once.
func (h *Handler) rewriteMessage(m []byte) ([]byte, bool, error) {
	if !rpcstream.MayHoldResult(m) {
		return nil, false, nil
	}
	var msg map[string]json.RawMessage
	if json.Unmarshal(m, &msg) != nil {
		return nil, false, rpcstream.ErrNotJSON
	}
	if msg["result"] == nil {
		return nil, false, nil
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(msg["result"], &res) != nil {
		return nil, false, nil // not an object: no list in it
	}
	changed := false
	if h.pins != nil {
		h.pins.refresh(context.Background())
	}
	for _, l := range listKinds {
		raw, ok := res[l.member]
		if !ok {
			continue
		}
		var entries []json.RawMessage
		if json.Unmarshal(raw, &entries) != nil {
			continue
		}
		res[l.member], _ = json.Marshal(h.curate(l.kind, l.key, pinKind(l.member), entries))
		changed = true
	}
	if !changed {
		return nil, false, nil
	}
	msg["result"], _ = json.Marshal(res)
	out, _ := json.Marshal(msg)
	return out, true, nil
}

// curate is a list's entries as clients see them: hidden ones left out,
// the others renamed and overridden. A renamed entry takes its name from
// any other entry: that one is left out (logged).
func (h *Handler) curate(kind, key, pin string, entries []json.RawMessage) []json.RawMessage {
	s := h.set(kind)
	pins := h.pins
	if pin == "" {
		pins = nil
	}
	var held []*heldDefinition
	seen := map[string]pinned{}
	tofu := h.Pin != nil && h.Pin.Mode != "approved"
	kept := make([]map[string]json.RawMessage, 0, len(entries))
	renamed := map[string]bool{}
	for _, raw := range entries {
		var e map[string]json.RawMessage
		if json.Unmarshal(raw, &e) != nil {
			continue // not an object: no client could use it
		}
		if odd := ambiguousMember(e); odd != "" {
			h.logger.Warn("a list entry that clients could read two ways was left out", zap.String("kind", kind), zap.String("member", odd))
			continue
		}
		var name string
		if json.Unmarshal(e[key], &name) != nil || name == "" {
			continue
		}
		if !s.shown(name) {
			continue
		}
		if pins != nil {
			def, digest := definition(pin, e)
			ok, hd := pins.judge(pin+":"+name, digest, def, tofu, h.Pin.Approve)
			seen[pin+":"+name] = pinned{Digest: digest, Definition: def, At: time.Now().UTC()}
			if hd != nil {
				held = append(held, hd)
			}
			if !ok {
				continue
			}
		}
		if en := s.entry(name); en != nil {
			applyEntry(kind, e, en)
			if en.Rename != "" {
				renamed[en.Rename] = true
			}
		}
		kept = append(kept, e)
	}
	if pins != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.hold(ctx, held)
		if tofu && !pins.seeded(pin) {
			h.seed(ctx, pin, seen)
		}
	}
	out := make([]json.RawMessage, 0, len(kept))
	for _, e := range kept {
		var name string
		_ = json.Unmarshal(e[key], &name)
		if renamed[name] && !isRenamed(s, e, key) {
			h.logger.Warn("a server's entry has the name another was renamed to; it is left out", zap.String("kind", kind), zap.String("name", name))
			continue
		}
		delete(e, renamedFrom)
		b, _ := json.Marshal(e)
		out = append(out, b)
	}
	return out
}

// isRenamed reports whether e (already curated) is the entry that was
// renamed to its name.
func isRenamed(s *Set, e map[string]json.RawMessage, key string) bool {
	var name string
	_ = json.Unmarshal(e[key], &name)
	orig, ok := s.fromClient[name]
	if !ok {
		return false
	}
	var was string
	_ = json.Unmarshal(e[renamedFrom], &was)
	return was == orig
}

// renamedFrom marks, while a list is curated, the server's name of a
// renamed entry (removed before the entry goes out).
const renamedFrom = "\x00renamed-from"

// ambiguousMember names a member of e that a client could read as one of
// entryMembers without being it ("" if none).
func ambiguousMember(e map[string]json.RawMessage) string {
	for k := range e {
		if slices.Contains(entryMembers, k) {
			continue
		}
		if mcpreq.Folds([]byte(k), entryMembers) {
			return k
		}
	}
	return ""
}

// applyEntry changes one entry as its settings say.
func applyEntry(kind string, e map[string]json.RawMessage, en *Entry) {
	if en.Rename != "" {
		var was string
		_ = json.Unmarshal(e["name"], &was)
		e["name"], _ = json.Marshal(en.Rename)
		e[renamedFrom], _ = json.Marshal(was)
	}
	if en.Title != nil {
		e["title"], _ = json.Marshal(*en.Title)
	}
	if en.Description != nil {
		e["description"], _ = json.Marshal(*en.Description)
	}
	if len(en.Annotations) > 0 {
		var ann map[string]json.RawMessage
		_ = json.Unmarshal(e["annotations"], &ann)
		if ann == nil {
			ann = map[string]json.RawMessage{}
		}
		for k, v := range en.Annotations {
			ann[k] = v
		}
		e["annotations"], _ = json.Marshal(ann)
	}
	if len(en.Fixed) == 0 {
		return
	}
	switch kind {
	case "tool":
		var schema map[string]json.RawMessage
		if json.Unmarshal(e["inputSchema"], &schema) != nil || schema == nil {
			return
		}
		var props map[string]json.RawMessage
		if json.Unmarshal(schema["properties"], &props) == nil && props != nil {
			for k := range en.Fixed {
				delete(props, k)
			}
			schema["properties"], _ = json.Marshal(props)
		}
		var required []string
		if json.Unmarshal(schema["required"], &required) == nil && required != nil {
			required = slices.DeleteFunc(required, func(r string) bool { _, fixed := en.Fixed[r]; return fixed })
			schema["required"], _ = json.Marshal(required)
		}
		e["inputSchema"], _ = json.Marshal(schema)
	case "prompt":
		var args []map[string]json.RawMessage
		if json.Unmarshal(e["arguments"], &args) != nil {
			return
		}
		args = slices.DeleteFunc(args, func(a map[string]json.RawMessage) bool {
			var n string
			_ = json.Unmarshal(a["name"], &n)
			_, fixed := en.Fixed[n]
			return fixed
		})
		e["arguments"], _ = json.Marshal(args)
	}
}
