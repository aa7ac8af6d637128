package authserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// A client identified by its metadata document (CIMD): the server fetches
// the document over https, checks it, and runs the code flow with PKCE for
// it as a public client. Bad documents, and documents on addresses that
// are not public, are refused.
func TestClientIDMetadataDocument(t *testing.T) {
	var docs atomic.Value
	var fetches atomic.Int32
	docSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		body := docs.Load().(map[string]string)[r.URL.Path]
		if body == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(docSrv.Close)
	good := docSrv.URL + "/client.json"
	docs.Store(map[string]string{
		"/client.json":   `{"client_id":"` + good + `","client_name":"CIMD test","redirect_uris":["http://127.0.0.1:5555/cb"],"token_endpoint_auth_method":"none"}`,
		"/other.json":    `{"client_id":"https://elsewhere.example/c.json","redirect_uris":["http://127.0.0.1:5555/cb"]}`,
		"/secret.json":   `{"client_id":"` + docSrv.URL + `/secret.json","client_secret":"x","redirect_uris":["http://127.0.0.1:5555/cb"]}`,
		"/big.json":      `{"client_id":"` + docSrv.URL + `/big.json","redirect_uris":["http://127.0.0.1:5555/cb"],"pad":"` + strings.Repeat("x", 70<<10) + `"}`,
		"/noredirs.json": `{"client_id":"` + docSrv.URL + `/noredirs.json"}`,
	})

	ts := httptest.NewUnstartedServer(nil)
	issuer := "http://" + ts.Listener.Addr().String()
	s, err := New(Options{Issuer: issuer, Scopes: []string{"read:all"}, AllowPrivateCIMD: true, CIMDClient: docSrv.Client(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	ts.Start()
	t.Cleanup(ts.Close)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	verifier := "verifier-0123456789-0123456789-0123456789-abcdef"
	sum := sha256.Sum256([]byte(verifier))
	authorize := func(clientID, redirect string) (*http.Response, error) {
		q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "state": {"st"},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}, "scope": {"read:all"}}
		return noFollow.Get(issuer + "/authorize?" + q.Encode())
	}

	var meta map[string]any
	resp, _ := http.Get(issuer + "/.well-known/oauth-authorization-server")
	_ = decodeJSON(resp, &meta)
	if meta["client_id_metadata_document_supported"] != true {
		t.Fatalf("metadata does not say CIMD is supported: %v", meta)
	}

	resp, err = authorize(good, "http://127.0.0.1:5555/cb")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize with a CIMD client: %v %v", err, resp)
	}
	back, _ := url.Parse(resp.Header.Get("Location"))
	code := back.Query().Get("code")
	if code == "" || back.Query().Get("iss") != issuer {
		t.Fatalf("redirect: %s", back)
	}
	status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"client_id": {good}, "redirect_uri": {"http://127.0.0.1:5555/cb"}, "code_verifier": {verifier}})
	if status != 200 || m["access_token"] == nil {
		t.Fatalf("token for a CIMD client: %d %v", status, m)
	}
	if claims := verify(t, issuer, m["access_token"].(string)); claims["client_id"] != good {
		t.Fatalf("token client_id: %v", claims["client_id"])
	}
	n := fetches.Load()
	if _, err := authorize(good, "http://127.0.0.1:5555/cb"); err != nil || fetches.Load() != n {
		t.Fatalf("the document was fetched again within its max-age (%d fetches)", fetches.Load())
	}

	for name, tc := range map[string]struct{ id, redirect string }{
		"a redirect the document lacks": {good, "http://127.0.0.1:6666/cb"},
		"client_id is not its URL":      {docSrv.URL + "/other.json", "http://127.0.0.1:5555/cb"},
		"a document with a secret":      {docSrv.URL + "/secret.json", "http://127.0.0.1:5555/cb"},
		"a document over 64 KiB":        {docSrv.URL + "/big.json", "http://127.0.0.1:5555/cb"},
		"no redirect_uris":              {docSrv.URL + "/noredirs.json", "http://127.0.0.1:5555/cb"},
		"no document there":             {docSrv.URL + "/missing.json", "http://127.0.0.1:5555/cb"},
		"http, not https":               {strings.Replace(good, "https://", "http://", 1), "http://127.0.0.1:5555/cb"},
	} {
		resp, err := authorize(tc.id, tc.redirect)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %v %v, want 400", name, err, resp.StatusCode)
		}
	}

	// without AllowPrivateCIMD, a document on a loopback address is never fetched
	guarded, _ := New(Options{Issuer: issuer, Scopes: []string{"read:all"}})
	guarded.cimd.HTTP.Transport.(*http.Transport).TLSClientConfig = docSrv.Client().Transport.(*http.Transport).TLSClientConfig
	before := fetches.Load()
	if _, err := guarded.lookupClient(t.Context(), docSrv.URL+"/fresh.json"); err == nil || !strings.Contains(err.Error(), "non-public address") {
		t.Fatalf("a loopback document was fetched: %v", err)
	}
	if fetches.Load() != before {
		t.Fatal("the guarded fetch reached the loopback server")
	}
}

func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
