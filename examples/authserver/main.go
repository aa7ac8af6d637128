// Command authserver runs the example OAuth authorization server for the
// caddymcp example on localhost:9000.
//
// FOR DEVELOPMENT ONLY: it approves every authorization request without a
// login, keeps clients and grants in memory and signs with a key generated
// at start.
//
//	go run ./examples/authserver [-addr localhost:9000]
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"

	"github.com/caddymcp/caddymcp/internal/authserver"
)

func main() {
	addr := flag.String("addr", "localhost:9000", "listen address")
	issuer := flag.String("issuer", "", "issuer URL (default: http://<addr>)")
	scopes := flag.String("scopes", "read:all write:all", "space-separated scopes the server knows")
	audience := flag.String("audience", "http://localhost:3000/stdio/mcp", "aud of tokens requested without a resource")
	user := flag.String("user", "dev-user", "sub of tokens from the authorization code flow")
	clientID := flag.String("client-id", "demo", "pre-registered confidential client (for client_credentials with curl)")
	clientSecret := flag.String("client-secret", "demo-secret", "its secret")
	stateFile := flag.String("state", "", "file that keeps the signing key and registered clients across restarts")
	resources := flag.String("resources", "http://localhost:3000/stdio/mcp http://localhost:3000/remote/mcp", "space-separated resources tokens may be issued for")
	cors := flag.String("cors-origins", "http://localhost:6274 http://127.0.0.1:6274", "space-separated browser origins allowed (the MCP Inspector's)")
	flag.Parse()
	if *issuer == "" {
		*issuer = "http://" + *addr
	}
	srv, err := authserver.New(authserver.Options{
		Issuer:          *issuer,
		Scopes:          strings.Fields(*scopes),
		DefaultAudience: *audience,
		User:            *user,
		Clients:         map[string]string{*clientID: *clientSecret},
		Logf:            log.Printf,
		StateFile:       *stateFile,
		Resources:       strings.Fields(*resources),
		CORSOrigins:     strings.Fields(*cors),
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("example authorization server on %s (issuer %s) - FOR DEVELOPMENT ONLY: approves every request", *addr, *issuer)
	log.Fatal(http.ListenAndServe(*addr, srv))
}
