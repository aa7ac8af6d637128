package stdiobridge

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddymcp/caddymcp/internal/cfargs"
	"github.com/caddymcp/caddymcp/internal/originguard"
	"github.com/caddymcp/caddymcp/internal/sandbox"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mcp_stdio", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("mcp_stdio", httpcaddyfile.After, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	if m.AllowedHosts == nil {
		m.AllowedHosts = originguard.SiteHosts(h)
	}
	return m, nil
}

// repeatable are the options whose values accumulate; any other given
// twice in one block is refused ("<option>: set twice"). env repeats with
// distinct names only.
var repeatable = map[string]bool{"env": true, "inherit_env": true, "allowed_hosts": true, "allowed_origins": true}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mcp_stdio [<matcher>] {
//		command <program> [<args...>]
//		env <NAME> <value>
//		inherit_env <NAME...>
//		dir <path>
//		session_idle_timeout <duration>
//		max_sessions <n>
//		stateless
//		shutdown_timeout <duration>
//		allowed_origins <origin...>
//		max_message_size <size>
//		prewarm <n>
//		max_sessions_per_user <n>
//		initialize_rate <n>
//		allowed_hosts <host...>
//		input_timeout <duration>
//		call_timeout <duration>|off
//		task_after <duration>|off
//		task_ttl <duration>
//		task_poll_interval <duration>
//		task_max_per_user <n>
//		task_max_bytes <size>
//		task_route_max <n>
//		task_route_max_bytes <size>
//		cache_ttl <duration>
//		child_era auto|legacy|modern
//		pool per_user|shared
//		name <name>
//		instance_id <id>
//		audit_arguments hash|full
//		metrics_max_tools <n>
//		roots none|forward|<file-uri...>
//		sandbox {
//			read <path...>
//			write <path...>
//			no_default_paths
//			network none|outbound [<port...>]
//			user <user> [<group>]
//			memory <size>
//			processes <n>
//			cpu_time <duration>
//			cpus <n>
//			cgroup off|<path>
//			open_files <n>
//			file_size <size>
//			seccomp on|off
//			unix_sockets
//			best_effort
//		}
//	}
//
// env (once per name), inherit_env, allowed_hosts and allowed_origins may be
// repeated; their values accumulate, as do read and write in sandbox. Any
// other option given twice is refused. sandbox without a block confines the
// server with the defaults (network none, the default read-only paths,
// seccomp, no limits).
func (m *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		opt := d.Val()
		if !repeatable[opt] {
			if err := once.Check(d); err != nil {
				return err
			}
		}
		switch opt {
		case "command":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.Command, m.Args = args[0], args[1:]
		case "env":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return d.ArgErr()
			}
			if err := once.CheckKey(d, "env", name); err != nil {
				return err
			}
			if m.Env == nil {
				m.Env = map[string]string{}
			}
			m.Env[name] = value
		case "inherit_env":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.InheritEnv = append(m.InheritEnv, args...)
		case "dir":
			if !d.AllArgs(&m.Dir) {
				return d.ArgErr()
			}
		case "call_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "off" {
				m.CallTimeout = -1
				break
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("call_timeout: want a positive duration or off, got %q", v)
			}
			m.CallTimeout = caddy.Duration(dur)
		case "task_after":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur := time.Duration(-1)
			if v != "off" {
				var err error
				if dur, err = caddy.ParseDuration(v); err != nil || dur < 0 {
					return d.Errf("task_after: want a duration (0: every call) or off, got %q", v)
				}
			}
			cd := caddy.Duration(dur)
			m.TaskAfter = &cd
		case "task_ttl", "task_poll_interval":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s: want a positive duration, got %q", opt, v)
			}
			if opt == "task_ttl" {
				m.TaskTTL = caddy.Duration(dur)
			} else {
				m.TaskPollInterval = caddy.Duration(dur)
			}
		case "task_max_per_user", "task_route_max":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return d.Errf("%s: %q is not a positive number", opt, v)
			}
			if opt == "task_max_per_user" {
				m.TaskMaxPerUser = n
			} else {
				m.TaskRouteMax = n
			}
		case "task_max_bytes", "task_route_max_bytes":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("%s: %q is not a size", opt, v)
			}
			if opt == "task_max_bytes" {
				m.TaskMaxBytes = int64(n)
			} else {
				m.TaskRouteMaxBytes = int64(n)
			}
		case "session_idle_timeout", "shutdown_timeout", "input_timeout", "cache_ttl":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("%s: %v", opt, err)
			}
			switch opt {
			case "session_idle_timeout":
				m.SessionIdleTimeout = caddy.Duration(dur)
			case "shutdown_timeout":
				m.ShutdownTimeout = caddy.Duration(dur)
			case "input_timeout":
				m.InputTimeout = caddy.Duration(dur)
			default:
				m.CacheTTL = caddy.Duration(dur)
			}
		case "max_sessions", "max_sessions_per_user", "initialize_rate":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return d.Errf("%s: %q is not a positive number", opt, v)
			}
			switch opt {
			case "max_sessions":
				m.MaxSessions = n
			case "max_sessions_per_user":
				m.MaxSessionsPerUser = n
			default:
				m.InitializeRate = n
			}
		case "roots":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.Roots = args
		case "allowed_hosts":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.AllowedHosts = append(m.AllowedHosts, args...)
		case "stateless":
			if d.NextArg() {
				return d.ArgErr()
			}
			m.Stateless = true
		case "allowed_origins":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.AllowedOrigins = append(m.AllowedOrigins, args...)
		case "max_message_size":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<30 {
				return d.Errf("max_message_size: %q is not a size between 1 byte and 1GiB", v)
			}
			m.MaxMessageSize = int(n)
		case "child_era":
			if !d.AllArgs(&m.ChildEra) {
				return d.ArgErr()
			}
		case "pool":
			if !d.AllArgs(&m.Pool) {
				return d.ArgErr()
			}
			if m.Pool != "per_user" && m.Pool != "shared" {
				return d.Errf("pool: %q is not per_user or shared", m.Pool)
			}
		case "instance_id":
			if !d.AllArgs(&m.InstanceID) {
				return d.ArgErr()
			}
		case "name":
			if !d.AllArgs(&m.Name) {
				return d.ArgErr()
			}
		case "audit_arguments":
			if !d.AllArgs(&m.AuditArguments) {
				return d.ArgErr()
			}
		case "metrics_max_tools":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return d.Errf("metrics_max_tools: %q is not a positive number", v)
			}
			m.MetricsMaxTools = n
		case "prewarm":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("prewarm: %q is not a number of processes", v)
			}
			m.Prewarm = n
		case "sandbox":
			if d.NextArg() {
				return d.ArgErr()
			}
			sb, err := parseSandbox(d)
			if err != nil {
				return err
			}
			m.Sandbox = sb
		default:
			return d.Errf("unrecognized mcp_stdio option %q", opt)
		}
	}
	return nil
}

// parseSandbox reads a sandbox block (its syntax is UnmarshalCaddyfile's).
func parseSandbox(d *caddyfile.Dispenser) (*sandbox.Config, error) {
	sb := &sandbox.Config{}
	once := cfargs.Once{}
	for d.NextBlock(1) {
		opt := d.Val()
		if opt != "read" && opt != "write" {
			if err := once.Check(d); err != nil {
				return nil, err
			}
		}
		switch opt {
		case "read", "write":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			if opt == "read" {
				sb.Read = append(sb.Read, args...)
			} else {
				sb.Write = append(sb.Write, args...)
			}
		case "no_default_paths", "best_effort", "unix_sockets":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			switch opt {
			case "best_effort":
				sb.BestEffort = true
			case "unix_sockets":
				sb.UnixSockets = true
			default:
				sb.NoDefaultPaths = true
			}
		case "network":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			sb.Network = args[0]
			if sb.Network != "none" && sb.Network != "outbound" {
				return nil, d.Errf("sandbox network: %q is not none or outbound", sb.Network)
			}
			if sb.Network == "none" && len(args) > 1 {
				return nil, d.Errf("sandbox network none takes no ports")
			}
			for _, a := range args[1:] {
				n, err := strconv.Atoi(a)
				if err != nil || n < 1 || n > 65535 {
					return nil, d.Errf("sandbox network outbound: %q is not a TCP port", a)
				}
				sb.ConnectPorts = append(sb.ConnectPorts, n)
			}
		case "user":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return nil, d.ArgErr()
			}
			sb.User = args[0]
			if len(args) == 2 {
				sb.Group = args[1]
			}
		case "memory", "file_size":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<50 {
				return nil, d.Errf("sandbox %s: %q is not a size", opt, v)
			}
			if opt == "memory" {
				sb.Memory = int64(n)
			} else {
				sb.FileSize = int64(n)
			}
		case "processes", "open_files":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, d.Errf("sandbox %s: %q is not a positive number", opt, v)
			}
			if opt == "processes" {
				sb.Processes = n
			} else {
				sb.OpenFiles = n
			}
		case "cpu_time":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < time.Second {
				return nil, d.Errf("sandbox cpu_time: %q is not a duration of a second or more", v)
			}
			sb.CPUTime = caddy.Duration(dur)
		case "cpus":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			n, err := strconv.ParseFloat(v, 64)
			if err != nil || !(n >= 0.01 && n <= 4096) {
				return nil, d.Errf("sandbox cpus: %q is not a number of CPUs (0.01 to 4096)", v)
			}
			sb.CPUs = n
		case "cgroup":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			if v != "off" && !strings.HasPrefix(v, "/") {
				return nil, d.Errf("sandbox cgroup: %q is not off or an absolute path", v)
			}
			sb.Cgroup = v
		case "seccomp":
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			if v != "on" && v != "off" {
				return nil, d.Errf("sandbox seccomp: %q is not on or off", v)
			}
			on := v == "on"
			sb.Seccomp = &on
		default:
			return nil, d.Errf("unrecognized sandbox option %q", opt)
		}
	}
	return sb, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
