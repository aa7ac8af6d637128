// Command devidp is a development OpenID Connect provider for trying and
// testing mcp_authorization_server: zitadel/oidc's example OpenID provider
// (a login form, two users: test-user@<host> and test-user2, password
// "verysecure", emails @zitadel.ch), with one web client for the
// authorization server's callback. Not for production.
//
//	go run ./cmd/devidp -addr 127.0.0.1:9998 -client-id caddymcp-as -client-secret s \
//		-redirect http://localhost:9000/callback/corp
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9998", "listen address (the issuer is http://<addr>)")
	issuer := flag.String("issuer", "", "issuer URL (default http://<addr>)")
	id := flag.String("client-id", "caddymcp-as", "the authorization server's client id")
	secret := flag.String("client-secret", "caddymcp-as-secret", "its client secret")
	redirect := flag.String("redirect", "", "its redirect URI ({issuer of mcp_authorization_server}/callback/<upstream name>)")
	flag.Parse()
	if *redirect == "" {
		log.Fatal("-redirect is required")
	}
	if *issuer == "" {
		*issuer = "http://" + *addr
	}
	storage.RegisterClients(storage.WebClient(*id, *secret, *redirect))
	st := storage.NewStorage(storage.NewUserStore(*issuer))
	log.Printf("development OpenID provider at %s (users test-user@<host>, test-user2; password verysecure)", *issuer)
	log.Fatal(http.ListenAndServe(*addr, exampleop.SetupServer(*issuer, st, nil, false)))
}
