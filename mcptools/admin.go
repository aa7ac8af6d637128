package mcptools

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"
)

func init() {
	caddy.RegisterModule(Admin{})
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "mcp-pins",
		Usage: "list|approve|reject [<pin> <key> <digest>] [--address <admin>]",
		Short: "Lists, approves or rejects the tool definitions mcp_tools holds back",
		Long: `
Reads or changes mcp_tools pin sets through Caddy's admin API (/mcp_tools/pins),
on the storage of the running config: every instance on that storage sees the
change within a second, without a reload.

  caddy mcp-pins list
  caddy mcp-pins approve team tool:search sha256:…
  caddy mcp-pins reject team tool:search sha256:…`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("address", "localhost:2019", "the admin API's address")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdPins)
		},
	})
}

// Admin is the admin API of mcp_tools pin sets (admin.api.mcp_tools):
//
//	GET  /mcp_tools/pins                  every pin set in storage: approved and pending definitions
//	POST /mcp_tools/pins/<name>/approve   {"key":"tool:<name>","digest":"sha256:…"}: a pending definition approved
//	POST /mcp_tools/pins/<name>/reject    the same body: a pending definition rejected (it stays hidden)
//
// It works on the config's storage, so every instance sharing it sees the
// change (within a second).
type Admin struct {
	storage certmagic.Storage
}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.mcp_tools",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Provision takes the config's storage.
func (a *Admin) Provision(ctx caddy.Context) error {
	a.storage = ctx.Storage()
	return nil
}

// Routes are the admin endpoints.
func (a *Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/mcp_tools/pins", Handler: caddy.AdminHandlerFunc(a.list)},
		{Pattern: "/mcp_tools/pins/", Handler: caddy.AdminHandlerFunc(a.decide)},
	}
}

// pinSetView is one pin set as the admin API shows it.
type pinSetView struct {
	Name     string            `json:"name"`
	Approved map[string]pinned `json:"approved"`
	Pending  map[string]pinned `json:"pending"`
	Rejected map[string]pinned `json:"rejected,omitempty"`
}

func (a *Admin) list(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	keys, err := a.storage.List(r.Context(), "mcp_tools/pins", false)
	if err != nil && len(keys) == 0 {
		keys = nil // no pin set stored yet
	}
	views := []pinSetView{}
	for _, k := range keys {
		name, ok := strings.CutSuffix(strings.TrimPrefix(k, "mcp_tools/pins/"), ".json")
		if !ok || strings.Contains(name, "/") {
			continue
		}
		f, err := readPinFile(r.Context(), a.storage, name)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
		}
		views = append(views, pinSetView{Name: name, Approved: f.Approved, Pending: f.Pending, Rejected: f.Rejected})
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(views)
}

// pinDecision is the body of approve and reject.
type pinDecision struct {
	Key    string `json:"key"`
	Digest string `json:"digest"`
}

func (a *Admin) decide(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	rest := strings.TrimPrefix(r.URL.Path, "/mcp_tools/pins/")
	name, action, ok := strings.Cut(rest, "/")
	if !ok || (action != "approve" && action != "reject") || (&Handler{Pin: &Pin{Name: name}}).Validate() != nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such endpoint: want /mcp_tools/pins/<name>/approve or /reject")}
	}
	var d pinDecision
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&d); err != nil || d.Key == "" || d.Digest == "" {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf(`the body must be {"key":"tool:<name>","digest":"sha256:…"}`)}
	}
	err := updatePinFile(r.Context(), a.storage, name, func(f *pinFile) error {
		p, ok := f.Pending[d.Key]
		found := ok && p.Digest == d.Digest
		if !found && action == "approve" {
			// a rejected definition may be approved after all
			p, ok = f.Rejected[d.Key]
			found = ok && p.Digest == d.Digest
		}
		if !found {
			return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("pin set %s holds no pending %s with digest %s", name, d.Key, d.Digest)}
		}
		delete(f.Pending, d.Key)
		p.At = time.Now().UTC()
		if action == "approve" {
			delete(f.Rejected, d.Key)
			f.Approved[d.Key] = p
		} else {
			f.Rejected[d.Key] = p
		}
		if pinMetrics.pending != nil {
			pinMetrics.pending.WithLabelValues(name).Set(float64(len(f.Pending)))
		}
		return nil
	})
	if err != nil {
		if _, ok := err.(caddy.APIError); ok {
			return err
		}
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	// this process's sets of that name see it at once; others within pinRefresh
	pinSets.mu.Lock()
	var sets []*pinSet
	for _, s := range pinSets.sets {
		if s.name == name {
			sets = append(sets, s)
		}
	}
	pinSets.mu.Unlock()
	for _, s := range sets {
		_ = s.load(r.Context())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]string{"pin": name, "key": d.Key, "digest": d.Digest, "decision": action + "d"})
}

// cmdPins is caddy mcp-pins.
func cmdPins(fl caddycmd.Flags) (int, error) {
	args := fl.Args()
	addr := fl.String("address")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	var req *http.Request
	switch {
	case len(args) == 1 && args[0] == "list":
		req, _ = http.NewRequest(http.MethodGet, addr+"/mcp_tools/pins", nil)
	case len(args) == 4 && (args[0] == "approve" || args[0] == "reject"):
		body, _ := json.Marshal(pinDecision{Key: args[2], Digest: args[3]})
		req, _ = http.NewRequest(http.MethodPost, addr+"/mcp_tools/pins/"+args[1]+"/"+args[0], strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
	default:
		return caddy.ExitCodeFailedStartup, fmt.Errorf("usage: caddy mcp-pins list | approve|reject <pin> <key> <digest>")
	}
	// the admin API checks Origin against its address
	req.Header.Set("Origin", addr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	fmt.Println(strings.TrimSpace(string(out)))
	if resp.StatusCode != http.StatusOK {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("admin API: %s", resp.Status)
	}
	return caddy.ExitCodeSuccess, nil
}

// Interface guards
var (
	_ caddy.AdminRouter = (*Admin)(nil)
	_ caddy.Provisioner = (*Admin)(nil)
)
