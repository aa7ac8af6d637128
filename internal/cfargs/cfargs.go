// Package cfargs holds what the caddymcp Caddyfile parsers share about
// their arguments: the refusal of an option given twice, in one wording.
package cfargs

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// Once remembers the options of one block that take a single value. An
// option that sets a scalar (a URL, a duration, a flag) calls Check while
// the dispenser is on the option's name; the second time it is given in the
// block, Check refuses it with "<option>: set twice". An option that
// accumulates (a list that is appended to, a rule) does not call it and may
// repeat. The zero value is not usable: make one with Once{} per block.
type Once map[string]bool

// Check refuses d.Val(), the option being parsed, if it was seen before.
func (o Once) Check(d *caddyfile.Dispenser) error {
	return o.check(d, d.Val())
}

// CheckKey is Check for an option that may repeat with distinct keys but not
// with the same one (env <NAME>, field <name>, instance <id>): the second
// "<option> <key>" is refused with "<option> <key>: set twice".
func (o Once) CheckKey(d *caddyfile.Dispenser, option, key string) error {
	return o.check(d, option+" "+key)
}

func (o Once) check(d *caddyfile.Dispenser, what string) error {
	if o[what] {
		return d.Errf("%s: set twice", what)
	}
	o[what] = true
	return nil
}
