package mcpas

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/time/rate"
)

// identity is what an upstream says about the user who logged in.
type identity struct {
	Upstream      string   `json:"upstream"`
	Subject       string   `json:"sub"` // the upstream's own subject (OIDC sub, GitHub user id)
	Email         string   `json:"email,omitempty"`
	EmailVerified bool     `json:"email_verified,omitempty"`
	Name          string   `json:"name,omitempty"`
	Username      string   `json:"preferred_username,omitempty"`
	Claims        claimSet `json:"claims,omitempty"` // string and string-list claims of the ID token (or userinfo)
	Orgs          []string `json:"orgs,omitempty"`   // GitHub organisations (logins)
	Teams         []string `json:"teams,omitempty"`  // GitHub teams as org/team-slug
}

// claimSet holds claims as lists of strings (a string claim is a list of
// one).
type claimSet map[string][]string

// subject is the sub of the tokens this server issues: stable per
// upstream identity (the upstream's name and its own subject).
func (id *identity) subject() string { return id.Upstream + ":" + id.Subject }

// Rule is a condition over the upstream identity: every condition set
// must hold.
type Rule struct {
	// Upstream limits the rule to users of this upstream.
	Upstream string `json:"upstream,omitempty"`
	// Emails are addresses (case-insensitive); only a verified email
	// matches.
	Emails []string `json:"emails,omitempty"`
	// EmailDomains are domains of the email (case-insensitive, exact: not
	// subdomains); only a verified email matches.
	EmailDomains []string `json:"email_domains,omitempty"`
	// Claim names an ID token claim (string or list of strings, such as
	// groups or roles); with Values, one of them must be among its values.
	Claim  string   `json:"claim,omitempty"`
	Values []string `json:"values,omitempty"`
	// GitHubOrgs: the user is a member of one of these organisations.
	GitHubOrgs []string `json:"github_orgs,omitempty"`
	// GitHubTeams: the user is a member of one of these teams (org/team-slug).
	GitHubTeams []string `json:"github_teams,omitempty"`
	// Subjects are the upstream's own subjects (OIDC sub, GitHub user id).
	Subjects []string `json:"subjects,omitempty"`
	// Everyone matches every user of the upstream (or of every upstream):
	// it must be said, never implied by an empty rule.
	Everyone bool `json:"everyone,omitempty"`
}

// Grant gives scopes to the users a rule matches.
type Grant struct {
	Scopes []string `json:"scopes"`
	// If is the rule; nil: every user who may log in.
	If *Rule `json:"if,omitempty"`
}

func grantRules(gs []*Grant) []*Rule {
	var out []*Rule
	for _, g := range gs {
		if g.If != nil {
			out = append(out, g.If)
		}
	}
	return out
}

func (r *Rule) check(upstreams map[string]bool) error {
	if r.Upstream != "" && !upstreams[r.Upstream] {
		return fmt.Errorf("rule: no upstream named %q", r.Upstream)
	}
	if r.Claim == "" && len(r.Values) > 0 {
		return fmt.Errorf("rule: values without a claim")
	}
	if r.Claim != "" && len(r.Values) == 0 {
		return fmt.Errorf("rule: claim %s without values", r.Claim)
	}
	if !r.Everyone && len(r.Emails)+len(r.EmailDomains)+len(r.Values)+len(r.GitHubOrgs)+len(r.GitHubTeams)+len(r.Subjects) == 0 {
		return fmt.Errorf("rule: no condition (say `everyone` to match every user%s)", map[bool]string{true: " of " + r.Upstream, false: ""}[r.Upstream != ""])
	}
	for _, t := range r.GitHubTeams {
		if org, team, ok := strings.Cut(t, "/"); !ok || org == "" || team == "" {
			return fmt.Errorf("rule: github_team %q is not org/team-slug", t)
		}
	}
	return nil
}

// matches reports whether the identity meets every condition of the rule.
func (r *Rule) matches(id *identity) bool {
	if r.Upstream != "" && r.Upstream != id.Upstream {
		return false
	}
	if len(r.Emails) > 0 && (!id.EmailVerified || !slices.ContainsFunc(r.Emails, func(e string) bool { return strings.EqualFold(e, id.Email) })) {
		return false
	}
	if len(r.EmailDomains) > 0 {
		_, domain, ok := strings.Cut(id.Email, "@")
		if !id.EmailVerified || !ok || strings.Contains(domain, "@") ||
			!slices.ContainsFunc(r.EmailDomains, func(d string) bool { return strings.EqualFold(d, domain) }) {
			return false
		}
	}
	if r.Claim != "" && !slices.ContainsFunc(id.Claims[r.Claim], func(v string) bool { return slices.Contains(r.Values, v) }) {
		return false
	}
	if len(r.GitHubOrgs) > 0 && !slices.ContainsFunc(id.Orgs, func(o string) bool {
		return slices.ContainsFunc(r.GitHubOrgs, func(w string) bool { return strings.EqualFold(w, o) })
	}) {
		return false
	}
	if len(r.GitHubTeams) > 0 && !slices.ContainsFunc(id.Teams, func(t string) bool {
		return slices.ContainsFunc(r.GitHubTeams, func(w string) bool { return strings.EqualFold(w, t) })
	}) {
		return false
	}
	if len(r.Subjects) > 0 && !slices.Contains(r.Subjects, id.Subject) {
		return false
	}
	return true
}

// allowed reports whether the identity may log in.
func (h *Handler) allowed(id *identity) bool {
	return slices.ContainsFunc(h.Allow, func(r *Rule) bool { return r.matches(id) })
}

// entitled is the scopes the identity may be granted.
func (h *Handler) entitled(id *identity) []string {
	if len(h.Grants) == 0 {
		return slices.Clone(h.Scopes)
	}
	var out []string
	for _, g := range h.Grants {
		if g.If == nil || g.If.matches(id) {
			for _, s := range g.Scopes {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// grantable is what a request gets: the requested scopes the user is
// entitled to (all of them if none is requested).
func grantable(requested, entitled []string) []string {
	if len(requested) == 0 {
		return entitled
	}
	var out []string
	for _, s := range requested {
		if slices.Contains(entitled, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// limitSpec is a parsed "<n>/<window>".
type limitSpec struct {
	every time.Duration
	burst int
}

func parseLimit(s, def string) (limitSpec, error) {
	if s == "" {
		s = def
	}
	n, w, ok := strings.Cut(s, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count <= 0 {
		return limitSpec{}, fmt.Errorf("%q is not <n>/<window> (10/1m)", s)
	}
	window, err := time.ParseDuration(w)
	if err != nil || window <= 0 {
		return limitSpec{}, fmt.Errorf("%q is not <n>/<window> (10/1m)", s)
	}
	return limitSpec{every: window / time.Duration(count), burst: count}, nil
}

// maxLimiters bounds the per-IP limiters kept.
const maxLimiters = 10000

// limit applies a per-client-IP limit; false: answered 429.
func (h *Handler) limit(w http.ResponseWriter, r *http.Request, spec limitSpec) bool {
	key := fmt.Sprintf("%d/%s", spec.every, clientIP(r))
	h.rt.mu.Lock()
	l := h.rt.limiters[key]
	if l == nil {
		if len(h.rt.limiters) >= maxLimiters {
			for k, v := range h.rt.limiters {
				if v.Tokens() >= float64(v.Burst()) {
					delete(h.rt.limiters, k)
				}
			}
		}
		l = rate.NewLimiter(rate.Every(spec.every), spec.burst)
		if len(h.rt.limiters) < maxLimiters {
			h.rt.limiters[key] = l
		}
	}
	ok := l.Allow()
	h.rt.mu.Unlock()
	if !ok {
		if c := h.logger.Check(-1, "request refused: rate limit of this client IP"); c != nil {
			c.Write()
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(spec.every.Seconds())+1))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow_down", "error_description": "too many requests from this address; try again later"})
	}
	return ok
}

// clientIP is the client's address as Caddy determined it (trusted
// proxies honoured).
func clientIP(r *http.Request) string {
	if v, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && v != "" {
		return v
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
