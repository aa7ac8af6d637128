package mcpas

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	xoauth2 "golang.org/x/oauth2"
)

// The browser flow:
//
//  1. GET {issuer}/authorize: zitadel/oidc's provider checks the request
//     (client, registered redirect URI, response type); CreateAuthRequest
//     adds what it does not check (PKCE S256, the redirect URI exactly as
//     registered, the resource) and stores it for 10 minutes; the provider
//     sends the browser to {issuer}/login?id=<request>.
//  2. {issuer}/login: a user this browser is logged in as (session cookie)
//     who consented to this client, for this redirect URI, these scopes and
//     this resource, goes on at once; anyone else gets the consent page,
//     whose form (POST {issuer}/consent) carries a CSRF token bound to the
//     request and to a cookie of this browser.
//  3. Only after consent is a state made (random, single-use, 10 minutes),
//     with a nonce and a PKCE verifier for the upstream, and a consent
//     cookie bound to the client and this state; the user is sent upstream.
//  4. GET {issuer}/callback/<upstream>: the state is consumed (under a
//     storage lock: once, on any instance), the consent cookie must name
//     this client and state, the upstream's code is redeemed and its
//     identity checked against the rules; the consent is stored, the
//     request is marked done, and the provider gives the client its code
//     ({issuer}/authorize/callback, with iss added: RFC 9207).
//
// Cookies are __Host- prefixed, Secure, HttpOnly, SameSite=Lax, and
// signed with a key from the shared key ring.

const (
	cookieSession = "__Host-mcpas-session"
	cookieConsent = "__Host-mcpas-consent"
	cookieCSRF    = "__Host-mcpas-csrf"
)

// loginState is what a state stands for, from consent to callback.
type loginState struct {
	Request  string `json:"request"`
	ClientID string `json:"client_id"`
	Upstream string `json:"upstream"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	// ConsentOf is set when the consent page was not shown because this
	// user had consented before: whoever logs in upstream must be them
	ConsentOf string `json:"consent_of,omitempty"`
}

// consentRecord is a user's stored consent to a client.
type consentRecord struct {
	RedirectURI string    `json:"redirect_uri"`
	Scopes      []string  `json:"scopes"`
	Resource    string    `json:"resource"`
	Given       time.Time `json:"given"`
}

func consentID(sub, clientID string) string { return sub + "\x00" + clientID }

// signed cookie values: base64url(json) "." key id "." base64url(mac)
func (h *Handler) sign(v any) string {
	b, _ := json.Marshal(v)
	k := h.ring.Current()
	payload := base64.RawURLEncoding.EncodeToString(b)
	m := hmac.New(sha256.New, h.ring.DerivedFor(k, "mcp_authorization_server cookie"))
	m.Write([]byte(payload))
	return payload + "." + k.ID + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (h *Handler) verify(ctx context.Context, s string, v any) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	k := h.ring.Lookup(ctx, parts[1])
	if k == nil {
		return false
	}
	m := hmac.New(sha256.New, h.ring.DerivedFor(k, "mcp_authorization_server cookie"))
	m.Write([]byte(parts[0]))
	mac, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(mac, m.Sum(nil)) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	return err == nil && json.Unmarshal(b, v) == nil
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

type sessionCookie struct {
	Sub     string    `json:"sub"`
	Expires time.Time `json:"exp"`
}

type consentCookie struct {
	ClientID string    `json:"client_id"`
	State    string    `json:"state"` // digest of the state
	Expires  time.Time `json:"exp"`
}

// issWriter adds RFC 9207's iss to the redirect the provider answers an
// authorization request with (success or error).
type issWriter struct {
	http.ResponseWriter
	iss string
}

func (w *issWriter) WriteHeader(status int) {
	if loc := w.Header().Get("Location"); loc != "" && status >= 300 && status < 400 {
		if u, err := url.Parse(loc); err == nil {
			q := u.Query()
			if q.Get("iss") == "" {
				q.Set("iss", w.iss)
				u.RawQuery = q.Encode()
				w.Header().Set("Location", u.String())
			}
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

// toClient sends the browser back to the client's redirect URI (checked
// exactly at CreateAuthRequest) with an error, its state and iss.
func (h *Handler) toClient(w http.ResponseWriter, r *http.Request, a *authRequest, code, desc string) {
	u, err := url.Parse(a.RedirectURI)
	if err != nil {
		page(w, http.StatusBadRequest, "The client's redirect URI is not valid.")
		return
	}
	q := u.Query()
	q.Set("error", code)
	q.Set("error_description", desc)
	if a.State != "" {
		q.Set("state", a.State)
	}
	q.Set("iss", h.Issuer)
	u.RawQuery = q.Encode()
	securePage(w)
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// login is where the provider sends the browser with a new request.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		page(w, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	ctx := r.Context()
	id := r.URL.Query().Get("id")
	a, err := opStorage{h}.authRequest(ctx, id)
	if err != nil {
		if errors.Is(err, errStorage) {
			h.storageError(w, r, "reading an authorization request", err)
			return
		}
		page(w, http.StatusBadRequest, "This authorization request expired or is unknown. Start again from your application.")
		return
	}
	if a.IsDone {
		page(w, http.StatusBadRequest, "This authorization request was already answered. Start again from your application.")
		return
	}
	// a user who already consented to this client, for this redirect URI,
	// these scopes and this resource, goes on to log in
	var sc sessionCookie
	if ck, err := r.Cookie(cookieSession); err == nil && h.verify(ctx, ck.Value, &sc) && time.Now().Before(sc.Expires) {
		var rec consentRecord
		err := h.store.getData(ctx, "consent", consentID(sc.Sub, a.ClientID), &rec)
		if err == nil && rec.RedirectURI == a.RedirectURI && rec.Resource == a.Resource && subset(a.Requested, rec.Scopes) {
			if up, ok := h.upstreams[strings.SplitN(sc.Sub, ":", 2)[0]]; ok {
				h.startLogin(w, r, a, up, sc.Sub)
				return
			}
		} else if err != nil && errors.Is(err, errStorage) {
			h.storageError(w, r, "reading a consent", err)
			return
		}
	}
	h.consentPage(w, r, a)
}

func subset(a, b []string) bool {
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

var consentTemplate = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Allow access?</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}
code{background:#f3f3f3;padding:0 .2em;word-break:break-all}button{font-size:1em;padding:.5em 1em;margin:.3em .3em 0 0}
.warn{color:#8a4b00}</style></head><body>
<h1>Allow access?</h1>
<p><strong id="client-name">{{.ClientName}}</strong> (client <code id="client-id">{{.ClientID}}</code>) asks to use
<code id="resource">{{.Resource}}</code> on your behalf.</p>
<p>After you log in, you will be sent to <code id="redirect-uri">{{.RedirectURI}}</code>
(host <strong>{{.RedirectHost}}</strong>).{{if .Loopback}} <span class="warn">This is an
application on your own computer.</span>{{end}} Continue only if you started this from
that application.</p>
{{if .Scopes}}<p>Permissions asked for:</p><ul id="scopes">{{range .Scopes}}<li><code>{{.}}</code></li>{{end}}</ul>
{{else}}<p>No particular permissions are asked for: the client gets those your account is given.</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="id" value="{{.ID}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
{{range .Upstreams}}<button type="submit" name="upstream" value="{{.Name}}">Allow and log in with {{.Label}}</button>{{end}}
<button type="submit" name="deny" value="1">Deny</button>
</form></body></html>
`))

// securePage sets the headers of the server's own pages: never framed,
// never cached, no referrer.
func securePage(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request, id string) string {
	secret := ""
	if ck, err := r.Cookie(cookieCSRF); err == nil && len(ck.Value) >= 32 {
		secret = ck.Value
	} else {
		secret = randomToken(32)
		setCookie(w, cookieCSRF, secret, stateLifetime)
	}
	return csrfFor(secret, id)
}

func csrfFor(secret, id string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (h *Handler) consentPage(w http.ResponseWriter, r *http.Request, a *authRequest) {
	name := "an unnamed client"
	if cl, err := h.lookupClient(r.Context(), a.ClientID); err == nil {
		name = cl.displayName()
	}
	ru, _ := url.Parse(a.RedirectURI)
	type up struct{ Name, Label string }
	var ups []up
	for _, u := range h.Upstreams {
		ups = append(ups, up{u.Name, h.upstreams[u.Name].label()})
	}
	securePage(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = consentTemplate.Execute(w, map[string]any{
		"ClientName": name, "ClientID": a.ClientID, "Resource": a.Resource, "RedirectURI": a.RedirectURI,
		"RedirectHost": ru.Host, "Loopback": isLoopback(ru.Hostname()), "Scopes": a.Requested,
		"Action": h.base + "/consent", "ID": a.ID, "CSRF": h.csrfToken(w, r, a.ID), "Upstreams": ups,
	})
}

// page answers with a short page of the server's own (an error the
// client cannot be told of).
func page(w http.ResponseWriter, status int, msg string) {
	securePage(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, msg)
}

var pageTemplate = template.Must(template.New("p").Parse(`<!doctype html><meta charset="utf-8"><title>{{.}}</title><p>{{.}}</p>`))

// consent is the consent form's target.
func (h *Handler) consent(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		page(w, http.StatusMethodNotAllowed, "The consent page is answered with its form.")
		return
	}
	if !h.limit(w, r, h.tokenRate) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		page(w, http.StatusBadRequest, "The consent form could not be read.")
		return
	}
	ctx := r.Context()
	id := r.PostForm.Get("id")
	ck, err := r.Cookie(cookieCSRF)
	if err != nil || id == "" || subtle.ConstantTimeCompare([]byte(csrfFor(ck.Value, id)), []byte(r.PostForm.Get("csrf"))) != 1 {
		h.logger.Info("consent refused: CSRF token missing or not this browser's", zap.String("remote_ip", clientIP(r)))
		page(w, http.StatusForbidden, "This consent form was not the one shown to this browser. Start again from your application.")
		return
	}
	a, err := opStorage{h}.authRequest(ctx, id)
	if err != nil || a.IsDone {
		if errors.Is(err, errStorage) {
			h.storageError(w, r, "reading an authorization request", err)
			return
		}
		page(w, http.StatusBadRequest, "This authorization request expired or is unknown. Start again from your application.")
		return
	}
	if r.PostForm.Get("deny") != "" {
		_ = h.store.del(ctx, "authreq", id)
		count(asMetrics.logins, "", "denied")
		h.toClient(w, r, a, "access_denied", "The user denied the request.")
		return
	}
	up, ok := h.upstreams[r.PostForm.Get("upstream")]
	if !ok {
		page(w, http.StatusBadRequest, "No such identity provider.")
		return
	}
	h.startLogin(w, r, a, up, "")
}

// startLogin makes the state (only now: after consent), and sends the
// user to the upstream.
func (h *Handler) startLogin(w http.ResponseWriter, r *http.Request, a *authRequest, up *upstream, consentOf string) {
	ctx := r.Context()
	state := randomToken(32)
	ls := &loginState{Request: a.ID, ClientID: a.ClientID, Upstream: up.cfg.Name, Nonce: randomToken(24), Verifier: xoauth2.GenerateVerifier(),
		ConsentOf: consentOf}
	target, err := up.authURL(ctx, state, ls.Nonce, ls.Verifier)
	if err != nil {
		h.logger.Error("identity provider unavailable; answered 502", zap.String("upstream", up.cfg.Name), zap.Error(err))
		page(w, http.StatusBadGateway, "The identity provider cannot be reached. Try again later.")
		return
	}
	if err := h.store.putData(ctx, "state", state, ls, stateLifetime); err != nil {
		h.storageError(w, r, "storing a login state", err)
		return
	}
	setCookie(w, cookieConsent, h.sign(consentCookie{ClientID: a.ClientID, State: digest(state), Expires: time.Now().Add(stateLifetime)}), stateLifetime)
	securePage(w)
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// callback is where the upstream sends the user back.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request, name string) {
	up, ok := h.upstreams[name]
	if !ok || r.Method != http.MethodGet {
		page(w, http.StatusNotFound, "No such identity provider.")
		return
	}
	if !h.limit(w, r, h.tokenRate) {
		return
	}
	ctx := r.Context()
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(q["state"]) != 1 {
		page(w, http.StatusBadRequest, "The identity provider's answer carries no state. Start again from your application.")
		return
	}
	// the state is consumed once, on whichever instance sees it first
	var ls loginState
	err := h.store.locked(ctx, "state", state, func() error {
		if err := h.store.getData(ctx, "state", state, &ls); err != nil {
			return err
		}
		return h.store.del(ctx, "state", state)
	})
	if err != nil {
		if errors.Is(err, errStorage) {
			h.storageError(w, r, "consuming a login state", err)
			return
		}
		h.logger.Info("login callback refused: unknown, used or expired state", zap.String("upstream", name), zap.String("remote_ip", clientIP(r)))
		page(w, http.StatusBadRequest, "This login is unknown, expired or was already used. Start again from your application.")
		return
	}
	var cc consentCookie
	ck, cerr := r.Cookie(cookieConsent)
	if cerr != nil || !h.verify(ctx, ck.Value, &cc) || cc.ClientID != ls.ClientID || cc.State != digest(state) || time.Now().After(cc.Expires) || ls.Upstream != name {
		h.logger.Info("login callback refused: the consent cookie is missing or for another request", zap.String("client_id", ls.ClientID), zap.String("remote_ip", clientIP(r)))
		page(w, http.StatusForbidden, "This browser did not consent to this request. Start again from your application.")
		return
	}
	clearCookie(w, cookieConsent)
	st := opStorage{h}
	a, err := st.authRequest(ctx, ls.Request)
	if err != nil || a.IsDone {
		if errors.Is(err, errStorage) {
			h.storageError(w, r, "reading an authorization request", err)
			return
		}
		page(w, http.StatusBadRequest, "This authorization request expired. Start again from your application.")
		return
	}
	if e := q.Get("error"); e != "" {
		count(asMetrics.logins, name, "denied")
		h.toClient(w, r, a, "access_denied", "The identity provider answered "+e+".")
		return
	}
	id, err := up.identify(ctx, q.Get("code"), ls.Nonce, ls.Verifier)
	if err != nil {
		h.logger.Error("login failed at the identity provider", zap.String("upstream", name), zap.Error(err))
		count(asMetrics.logins, name, "failed")
		h.toClient(w, r, a, "temporarily_unavailable", "The identity provider's answer could not be used.")
		return
	}
	if !h.allowed(id) {
		h.logger.Info("login refused: no allow rule matches the user", zap.String("upstream", name), zap.String("sub", id.Subject),
			zap.String("email", id.Email), zap.Bool("email_verified", id.EmailVerified))
		count(asMetrics.logins, name, "refused")
		h.toClient(w, r, a, "access_denied", "This account may not use this server.")
		return
	}
	sub := id.subject()
	if ls.ConsentOf != "" && ls.ConsentOf != sub {
		// the consent page was skipped for the user this browser was
		// logged in as, and someone else logged in upstream: they have not
		// consented; show them the page
		h.logger.Info("another user logged in upstream than the one whose consent was remembered; asking for consent",
			zap.String("remembered", ls.ConsentOf), zap.String("sub", sub))
		clearCookie(w, cookieSession)
		securePage(w)
		http.Redirect(w, r, h.base+"/login?id="+url.QueryEscape(a.ID), http.StatusSeeOther)
		return
	}
	a.Subject, a.AuthTime, a.IsDone = sub, time.Now().UTC(), true
	a.Granted = grantable(a.Requested, h.entitled(id))
	if id.EmailVerified {
		a.Email = id.Email
	}
	a.Username = id.Username
	if err := h.store.putData(ctx, "consent", consentID(sub, a.ClientID), &consentRecord{RedirectURI: a.RedirectURI, Scopes: a.Requested, Resource: a.Resource, Given: time.Now()},
		time.Duration(h.ConsentLifetime)); err != nil {
		h.storageError(w, r, "storing a consent", err)
		return
	}
	if err := h.store.putData(ctx, "authreq", a.ID, a, stateLifetime); err != nil {
		h.storageError(w, r, "storing an authorization request", err)
		return
	}
	setCookie(w, cookieSession, h.sign(sessionCookie{Sub: sub, Expires: time.Now().Add(time.Duration(h.SessionLifetime))}), time.Duration(h.SessionLifetime))
	count(asMetrics.logins, name, "ok")
	h.logger.Info("user logged in", zap.String("sub", sub), zap.String("client_id", a.ClientID),
		zap.Strings("scopes", a.Granted), zap.String("resource", a.Resource))
	securePage(w)
	http.Redirect(w, r, h.Issuer+"/authorize/callback?id="+url.QueryEscape(a.ID), http.StatusSeeOther)
}
