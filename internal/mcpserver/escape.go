//go:build linux

package mcpserver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runEscape is the fake's mode "escape": a stdio MCP server whose tools try
// to get out of a sandbox, each answering what happened ("ok: …" or
// "refused: <error>"), so that a test can show each attempt refused under
// the sandbox and succeeding without it:
//
//	read {path}          reads a file or lists a directory
//	write {path}         creates a file
//	environ {pid}        reads /proc/<pid>/environ
//	connect {addr}       opens a TCP connection
//	unix {path}          connects to a UNIX socket
//	listen {addr}        listens on a TCP address
//	fork {n}             starts n processes that sleep, and says how many started
//	alloc {mib}          allocates and touches mib MiB (the process dies if it cannot)
//	spin                 burns CPU until it is killed
//	grandchild {tag}     starts a process in a session of its own, without the
//	                     bridge's marker, ignoring SIGTERM, named caddymcp-orphan-<tag>
//	pid                  its pid as Caddy's /proc sees it
//	uid                  its uid and gid
//	sys {op, addr}       a raw system call a filter must read as the kernel does
//	                     (escapeSyscall)
func runEscape() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name            string         `json:"name"`
				Arguments       map[string]any `json:"arguments"`
				ProtocolVersion string         `json:"protocolVersion"`
			} `json:"params"`
		}
		if json.Unmarshal(in.Bytes(), &msg) != nil || msg.ID == nil {
			continue
		}
		var result any
		switch msg.Method {
		case "initialize":
			result = map[string]any{"protocolVersion": msg.Params.ProtocolVersion, "capabilities": map[string]any{"tools": map[string]any{}},
				"serverInfo": map[string]any{"name": "escape", "version": "1"}}
		case "tools/list":
			var tools []any
			for _, n := range []string{"read", "write", "environ", "connect", "unix", "listen", "fork", "alloc", "spin", "grandchild", "pid", "uid", "sys", "cgroup", "cgroup_move"} {
				tools = append(tools, map[string]any{"name": n, "inputSchema": map[string]any{"type": "object"}})
			}
			result = map[string]any{"tools": tools}
		case "tools/call":
			text := escapeTool(msg.Params.Name, msg.Params.Arguments)
			result = map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}}
		case "ping":
			result = map[string]any{}
		default:
			_ = out.Encode(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32601, "message": "method not found"}})
			continue
		}
		_ = out.Encode(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": result})
	}
}

func escapeTool(name string, args map[string]any) string {
	str := func(k string) string { s, _ := args[k].(string); return s }
	num := func(k string) int { f, _ := args[k].(float64); return int(f) }
	refused := func(err error) string { return "refused: " + err.Error() }
	switch name {
	case "read":
		st, err := os.Stat(str("path"))
		if err == nil && st.IsDir() {
			ents, err := os.ReadDir(str("path"))
			if err != nil {
				return refused(err)
			}
			return fmt.Sprintf("ok: %d entries", len(ents))
		}
		b, err := os.ReadFile(str("path"))
		if err != nil {
			return refused(err)
		}
		return fmt.Sprintf("ok: %d bytes", len(b))
	case "write":
		if err := os.WriteFile(str("path"), []byte("written by a server\n"), 0o600); err != nil {
			return refused(err)
		}
		return "ok: written"
	case "environ":
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", num("pid")))
		if err != nil {
			return refused(err)
		}
		return "ok: " + strings.ReplaceAll(string(b), "\x00", "\n")
	case "connect":
		c, err := net.DialTimeout("tcp", str("addr"), 5*time.Second)
		if err != nil {
			return refused(err)
		}
		c.Close()
		return "ok: connected"
	case "unix":
		c, err := net.DialTimeout("unix", str("path"), 5*time.Second)
		if err != nil {
			return refused(err)
		}
		c.Close()
		return "ok: connected"
	case "listen":
		l, err := net.Listen("tcp4", str("addr"))
		if err != nil {
			return refused(err)
		}
		l.Close()
		return "ok: listening on " + l.Addr().String()
	case "fork":
		// the processes are ended and reaped here, one goroutine, so that
		// no goroutine blocked in wait makes the runtime start threads
		// (which count against the same limit)
		var started []*exec.Cmd
		var firstErr error
		for i := 0; i < num("n"); i++ {
			cmd := exec.Command("sleep", "30")
			if err := cmd.Start(); err != nil {
				firstErr = err
				break
			}
			started = append(started, cmd)
		}
		// killed first, then reaped without blocking: a wait that blocks
		// at the limit would make the runtime start a thread it cannot
		for _, cmd := range started {
			_ = cmd.Process.Kill()
		}
		for _, cmd := range started {
			for {
				var ws syscall.WaitStatus
				if pid, err := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WNOHANG, nil); pid != 0 || err != nil {
					break
				}
				runtime.Gosched()
			}
			_ = cmd.Process.Release()
		}
		if firstErr != nil {
			return fmt.Sprintf("refused: %d started, then %v", len(started), firstErr)
		}
		return fmt.Sprintf("ok: %d started", len(started))
	case "alloc":
		var keep [][]byte
		for i := 0; i < num("mib"); i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		return fmt.Sprintf("ok: %d MiB", len(keep))
	case "spin":
		for x := 0; ; x++ {
			_ = x
		}
	case "grandchild":
		exe, _ := os.Executable()
		cmd := exec.Command(exe)
		cmd.Args = []string{"caddymcp-orphan-" + str("tag")}
		cmd.Env = []string{FakeEnv + "=orphan"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return refused(err)
		}
		return fmt.Sprintf("ok: started %d", cmd.Process.Pid)
	case "sys":
		return escapeSyscall(str("op"), str("addr"))
	case "cgroup":
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return refused(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "0::"); ok {
				return "ok: " + rest
			}
		}
		return "refused: no cgroup v2"
	case "cgroup_move":
		// leave its cgroup for another (path: that cgroup's cgroup.procs)
		if err := os.WriteFile(str("path"), []byte(fmt.Sprint(os.Getpid())), 0); err != nil {
			return refused(err)
		}
		return "ok: moved"
	case "uid":
		return fmt.Sprintf("ok: uid=%d gid=%d", os.Getuid(), os.Getgid())
	case "pid":
		self, err := os.Readlink("/proc/self")
		if err != nil {
			return refused(err)
		}
		return "ok: " + self
	}
	return "refused: no such tool"
}

// runOrphan is a grandchild that tries to outlive its server: it ignores
// SIGTERM and SIGHUP and sleeps.
func runOrphan() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	time.Sleep(10 * time.Minute)
	os.Exit(0)
}

// escapeSyscall tries what a seccomp filter must refuse however it is
// spelled: a socket of an unconfined protocol or family with the int
// argument's high bits set (the kernel reads the low 32), a TCP Fast Open
// sendto (a connect without connect), listen without bind, and namespaces
// through clone and clone3. "ok: ..." when the kernel did it.
func escapeSyscall(op, addr string) string {
	result := func(r1 uintptr, errno syscall.Errno) string {
		if errno != 0 {
			return "refused: " + errno.Error()
		}
		if op != "clone3" {
			syscall.Close(int(r1))
		}
		return "ok: done"
	}
	switch op {
	case "mptcp_high_bits":
		return result(rawSyscall(syscall.SYS_SOCKET, syscall.AF_INET, syscall.SOCK_STREAM, 262|1<<32))
	case "unix_high_bits":
		return result(rawSyscall(syscall.SYS_SOCKET, syscall.AF_UNIX|1<<32, syscall.SOCK_STREAM, 0))
	case "vsock":
		return result(rawSyscall(syscall.SYS_SOCKET, 40 /* AF_VSOCK */, syscall.SOCK_STREAM, 0))
	case "listen_unbound":
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			return "refused: " + err.Error()
		}
		defer syscall.Close(fd)
		if err := syscall.Listen(fd, 1); err != nil {
			return "refused: " + err.Error()
		}
		sa, _ := syscall.Getsockname(fd)
		return fmt.Sprintf("ok: listening on port %d", sa.(*syscall.SockaddrInet4).Port)
	case "tcp_fast_open":
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			return "refused: " + err.Error()
		}
		defer syscall.Close(fd)
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		sa := &syscall.SockaddrInet4{Port: p}
		copy(sa.Addr[:], net.ParseIP(host).To4())
		if err := syscall.Sendto(fd, []byte("x"), 0x20000000 /* MSG_FASTOPEN */, sa); err != nil {
			return "refused: " + err.Error()
		}
		return "ok: sent"
	case "clone_newuser":
		return forkInUserNamespace(&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER})
	case "unshare_newuser":
		// unshare in a forked child (a threaded process cannot unshare a
		// user namespace)
		return forkInUserNamespace(&syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWUSER})
	case "io_uring":
		// a bad argument: EFAULT where io_uring_setup is let through
		_, _, errno := syscall.RawSyscall(425 /* io_uring_setup */, 1, 0, 0)
		if errno == syscall.EPERM {
			return "refused: " + errno.Error()
		}
		return "ok: io_uring_setup reached the kernel (" + errno.Error() + ")"
	case "sysv_shm":
		// the segment the test made under key addr, in Caddy's IPC namespace
		key, _ := strconv.Atoi(addr)
		id, _, errno := syscall.RawSyscall(syscall.SYS_SHMGET, uintptr(key), 0, 0)
		if errno != 0 {
			return "refused: " + errno.Error()
		}
		return fmt.Sprintf("ok: segment %d", id)
	case "clone3":
		// a zero-sized argument: EINVAL where clone3 is let through
		_, _, errno := syscall.RawSyscall(435 /* clone3 */, 0, 0, 0)
		if errno == syscall.ENOSYS {
			return "refused: " + errno.Error()
		}
		return "ok: clone3 reached the kernel (" + errno.Error() + ")"
	}
	return "refused: no such op"
}

// forkInUserNamespace starts this program (exiting at once) with attr,
// which asks for a user namespace by clone or by unshare.
func forkInUserNamespace(attr *syscall.SysProcAttr) string {
	exe, _ := os.Executable()
	pid, err := syscall.ForkExec(exe, []string{"caddymcp-newuser"}, &syscall.ProcAttr{Env: []string{FakeEnv + "=exit"}, Sys: attr})
	if err != nil {
		return "refused: " + err.Error()
	}
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, 0, nil)
	return "ok: a process in a user namespace of its own"
}

func rawSyscall(nr, a, b, c uintptr) (uintptr, syscall.Errno) {
	r1, _, errno := syscall.RawSyscall(nr, a, b, c)
	return r1, errno
}
