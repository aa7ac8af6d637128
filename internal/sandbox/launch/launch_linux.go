// Package launch is the sandbox's launcher: Caddy's own executable started
// as argv[0] "caddymcp-sandbox" applies a Spec to itself and executes the
// server. It imports nothing of Caddy's, so that Go initializes it (and its
// init execs the server) before Caddy's own packages: the launcher then
// costs the Go runtime's start, not Caddy's.
package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/landlock-lsm/go-landlock/landlock"
	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Name is argv[0] of Caddy's executable started as a launcher.
const Name = "caddymcp-sandbox"

// Exit is the launcher's exit status when a restriction could not
// be applied (the server was not started).
const Exit = 126

// Spec is what one launcher applies, passed as its only argument.
type Spec struct {
	Path string   `json:"path,omitempty"` // the server; "" for a probe
	Args []string `json:"args,omitempty"`

	ABI        int      `json:"abi"`       // the go-landlock preset (0: no Landlock)
	NetHandled uint64   `json:"net"`       // the TCP rights Landlock handles
	Connect    []uint16 `json:"connect"`   // TCP ports connect is allowed to
	RODirs     []string `json:"ro_dirs"`   // read and execute beneath
	ROFiles    []string `json:"ro_files"`  // read and execute
	RWDirs     []string `json:"rw_dirs"`   // read, write, create, remove beneath
	RWFiles    []string `json:"rw_files"`  // read and write
	LoUp       bool     `json:"lo_up"`     // bring loopback up (a network namespace of its own)
	UID        int      `json:"uid"`       // -1: Caddy's
	GID        int      `json:"gid"`       // -1: Caddy's
	DropCaps   bool     `json:"drop_caps"` // empty the bounding set (needs CAP_SETPCAP)
	Rlimits    []Rlimit `json:"rlimits"`   // set after the user switch
	Seccomp    bool     `json:"seccomp"`   // load the deny list
	Unix       bool     `json:"unix"`      // allow socket(AF_UNIX)
	UnixDirs   []string `json:"unix_dirs"` // with Unix: where Landlock (ABI 9+) lets a connect reach a socket
	UnixFiles  []string `json:"unix_files"`
	BestEffort bool     `json:"best_effort"` // skip what cannot be applied, saying so
}

// Rlimit is one resource limit.
type Rlimit struct {
	Name     string `json:"name"`
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// Report is what a probe launcher prints: what it applied and skipped.
type Report struct {
	Applied []string `json:"applied"`
	Skipped []string `json:"skipped"`
}

func init() {
	if len(os.Args) == 2 && os.Args[0] == Name {
		launch(os.Args[1]) // never returns
	}
}

// launch applies s to this process and executes the server (or, for a
// probe, reports what it applied). Every step runs on this one OS thread,
// which is never unlocked: Landlock, the capability sets, no_new_privs and
// seccomp are per thread, and execve keeps the thread's.
func launch(arg string) {
	runtime.LockOSThread()
	var s Spec
	if err := json.Unmarshal([]byte(arg), &s); err != nil {
		fmt.Fprintln(os.Stderr, "caddymcp sandbox: bad launcher argument:", err)
		os.Exit(Exit)
	}
	var rep Report
	step := func(name string, err error) {
		if err == nil {
			rep.Applied = append(rep.Applied, name)
			return
		}
		if s.BestEffort {
			rep.Skipped = append(rep.Skipped, name+": "+err.Error())
			if s.Path != "" {
				fmt.Fprintf(os.Stderr, "caddymcp sandbox: best_effort: not applied: %s: %v\n", name, err)
			}
			return
		}
		fmt.Fprintf(os.Stderr, "caddymcp sandbox: %s: %v\n", name, err)
		os.Exit(Exit)
	}
	if s.LoUp {
		step("loopback", loopbackUp())
	}
	// the Landlock ruleset is built before the user switch: its paths are
	// opened with Caddy's rights (another user may not reach /root/.npm to
	// name it), and enforced once no_new_privs is set
	ruleset, flags := -1, uint32(0)
	if s.ABI > 0 {
		var err error
		ruleset, flags, err = buildLandlock(&s)
		if err != nil {
			step(fmt.Sprintf("landlock (ABI %d)", s.ABI), err)
		}
	}
	if s.DropCaps {
		step("capability bounding set", dropBounding())
	}
	if s.UID >= 0 {
		step(fmt.Sprintf("user %d:%d", s.UID, s.GID), switchUser(s.UID, s.GID))
	}
	step("no_new_privs", unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
	step("no capabilities", dropCaps())
	for _, r := range s.Rlimits {
		step("rlimit "+r.Name, setRlimit(r))
	}
	if ruleset >= 0 {
		err := llsyscall.LandlockRestrictSelf(ruleset, flags)
		unix.Close(ruleset)
		step(fmt.Sprintf("landlock (ABI %d)", s.ABI), err)
	}
	name := "seccomp (network protocols, native ABI)"
	if s.Seccomp {
		name = "seccomp"
	}
	step(name, loadSeccomp(s.Seccomp, s.Unix))
	if s.Path == "" {
		b, _ := json.Marshal(rep)
		os.Stdout.Write(append(b, '\n'))
		os.Exit(0)
	}
	err := syscall.Exec(s.Path, s.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "caddymcp sandbox: could not execute %s: %v\n", s.Path, err)
	os.Exit(Exit)
}

// loopbackUp brings lo up in the process's own network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dropBounding empties the capability bounding set, so that not even a
// root server regains a capability at execve.
func dropBounding() error {
	for c := 0; c <= 63; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) && c > 0 {
				return nil // past the last capability this kernel knows
			}
			return err
		}
	}
	return nil
}

// switchUser becomes uid:gid with no supplementary groups (all threads).
func switchUser(uid, gid int) error {
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return err
	}
	if err := syscall.Setgid(gid); err != nil {
		return err
	}
	return syscall.Setuid(uid)
}

// dropCaps empties the effective, permitted, inheritable and ambient sets.
func dropCaps() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	return unix.Capset(&hdr, &data[0])
}

// setRlimit lowers one limit; a hard limit already below it stays.
func setRlimit(r Rlimit) error {
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(r.Resource, &cur); err != nil {
		return err
	}
	want := syscall.Rlimit{Cur: min(r.Cur, cur.Max), Max: min(r.Max, cur.Max)}
	// syscall.Setrlimit (not x/sys/unix): for RLIMIT_NOFILE it also drops
	// the soft limit Go would restore at execve
	return syscall.Setrlimit(r.Resource, &want)
}

// buildLandlock makes the ruleset of the file system, TCP and IPC scope
// rules (a close-on-exec descriptor).
func buildLandlock(s *Spec) (int, uint32, error) {
	cfg := Presets[s.ABI]
	cfg.HandledAccessNet &= landlock.AccessNetSet(s.NetHandled)
	if s.BestEffort {
		cfg = cfg.BestEffort()
	}
	var rules []landlock.Rule
	if len(s.RODirs) > 0 {
		rules = append(rules, landlock.RODirs(s.RODirs...).IgnoreIfMissing())
	}
	if len(s.ROFiles) > 0 {
		rules = append(rules, landlock.ROFiles(s.ROFiles...).IgnoreIfMissing())
	}
	if len(s.RWDirs) > 0 {
		// WithRefer: a rename or link from one writable directory to another
		// (Landlock refuses it with EXDEV otherwise)
		rules = append(rules, landlock.RWDirs(s.RWDirs...).WithRefer().IgnoreIfMissing())
	}
	if len(s.RWFiles) > 0 {
		rules = append(rules, landlock.RWFiles(s.RWFiles...).IgnoreIfMissing())
	}
	if s.Unix {
		// Landlock ABI 9+ also confines connect(2) on pathname UNIX
		// sockets: the read and write paths may be connected to (a
		// right older ABIs do not have, and drop from these rules)
		if len(s.UnixDirs) > 0 {
			rules = append(rules, landlock.RODirs(s.UnixDirs...).WithResolveUnix().IgnoreIfMissing())
		}
		if len(s.UnixFiles) > 0 {
			rules = append(rules, landlock.ROFiles(s.UnixFiles...).WithResolveUnix().IgnoreIfMissing())
		}
	}
	if cfg.HandledAccessNet&llsyscall.AccessNetConnectTCP != 0 {
		for _, p := range s.Connect {
			rules = append(rules, landlock.ConnectTCP(p))
		}
	}
	fd, flags, err := cfg.NewRulesetFD(rules...)
	if err != nil {
		return -1, 0, err
	}
	if fd < 0 {
		return -1, 0, errors.New("Landlock is not available on this kernel")
	}
	return fd, flags, nil
}

// Presets are go-landlock's configs by ABI (index: ABI version).
var Presets = []landlock.Config{{}, landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5,
	landlock.V6, landlock.V7, landlock.V8, landlock.V9, landlock.V10, landlock.V11}

// deniedSyscalls are refused with EPERM: no stdio MCP server needs them,
// and each is a way out of the sandbox or into the kernel (Docker's
// default profile refuses the same ones).
var deniedSyscalls = []string{
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	"mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
	"unshare", "setns",
	"init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
	"kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
	"keyctl", "add_key", "request_key",
	"bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "fanotify_init",
	"acct", "quotactl", "quotactl_fd", "nfsservctl", "uselib", "_sysctl", "syslog", "vhangup",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
	"iopl", "ioperm", "open_by_handle_at", "name_to_handle_at",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
}

// Protocols that Landlock's TCP rules do not cover: a socket of one would
// connect or listen past them, so none can be created.
const (
	ipprotoSCTP  = 132
	ipprotoMPTCP = 262
	msgFastOpen  = 0x20000000 // MSG_FASTOPEN: a sendto that connects, past Landlock's connect check
	cloneNewMask = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWTIME
)

// loadSeccomp installs the filters on this thread: always the argument
// filter (loadArgFilter), and with deny the deny list of system calls no
// stdio server needs.
func loadSeccomp(deny, unixSockets bool) error {
	info, err := arch.GetInfo("")
	if err != nil {
		return err
	}
	if err := loadArgFilter(uint32(info.ID), unixSockets); err != nil {
		return err
	}
	if !deny {
		return nil
	}
	var names []string
	for _, n := range deniedSyscalls {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	return seccomp.LoadFilter(seccomp.Filter{
		NoNewPrivs: true,
		Policy: seccomp.Policy{DefaultAction: seccomp.ActionAllow,
			Syscalls: []seccomp.SyscallGroup{{Action: seccomp.ActionErrno, Names: names}}},
	})
}

// loadArgFilter installs the filter that decides on arguments. It is
// written here, not with go-seccomp-bpf, because that library compares an
// argument's 64 bits while the kernel reads an int argument's low 32: a
// rule on socket's protocol is passed by 262 | 1<<32. It refuses:
//   - every system call of another ABI than the process's own (ENOSYS: a
//     32-bit call of an x86-64 process is numbered otherwise);
//   - socket() of a family other than INET, INET6, NETLINK (and UNIX with
//     unixSockets): no packet, vsock or other sockets the namespaces and
//     Landlock do not confine; and of protocol MPTCP or SCTP (Landlock's TCP
//     rules do not cover them);
//   - sendto, sendmsg and sendmmsg with MSG_FASTOPEN (it connects without
//     connect(), past Landlock's port rule);
//   - listen() (the kernel binds a port to a socket that listens unbound,
//     past Landlock's bind rule);
//   - clone() and unshare() with a namespace flag, setns(), and clone3()
//     (ENOSYS: libc falls back to clone), so that no user namespace gives
//     the server capabilities;
//   - socketpair() of another family than UNIX;
//   - on x86-64, x32 system calls (ENOSYS);
//   - io_uring, whose operations make sockets, connect and send without
//     the system calls this filter reads.
func loadArgFilter(native uint32, unixSockets bool) error {
	low := func(n uint32) uint32 { // offset of args[n]'s low 32 bits in seccomp_data
		off := 16 + 8*n
		if bigEndian() {
			off += 4
		}
		return off
	}
	const (
		allow = unix.SECCOMP_RET_ALLOW
		eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		enosy = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	families := []uint32{unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}
	if unixSockets {
		families = append(families, unix.AF_UNIX)
	}
	// labels are resolved by a second pass: each jump names its target
	type ins struct {
		in          bpf.Instruction
		jt, jf, jmp string // label targets of a conditional or plain jump
		label       string
	}
	var prog []ins
	add := func(i ins) { prog = append(prog, i) }
	ret := func(label string, v uint32) { add(ins{label: label, in: bpf.RetConstant{Val: v}}) }
	add(ins{in: bpf.LoadAbsolute{Off: 4, Size: 4}}) // arch
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpEqual, Val: native}, jt: "native", jf: "foreign"})
	ret("foreign", enosy)
	add(ins{label: "native", in: bpf.LoadAbsolute{Off: 0, Size: 4}}) // nr
	if runtime.GOARCH == "amd64" {
		// x32 system calls carry the x86-64 arch, numbered from 1<<30
		add(ins{in: bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 0x40000000}, jt: "enosys", jf: ""})
	}
	for _, c := range []struct {
		nr     uintptr
		target string
	}{{unix.SYS_SOCKET, "socket"}, {unix.SYS_SENDTO, "flags3"}, {unix.SYS_SENDMSG, "flags2"}, {unix.SYS_SENDMMSG, "flags3"},
		{unix.SYS_SOCKETPAIR, "pair"}, {unix.SYS_LISTEN, "eperm"}, {unix.SYS_CLONE, "clone"}, {unix.SYS_CLONE3, "enosys"},
		{unix.SYS_UNSHARE, "clone"}, {unix.SYS_SETNS, "eperm"},
		// io_uring makes sockets, connects and sends without these system
		// calls: it would pass every rule above
		{unix.SYS_IO_URING_SETUP, "eperm"}, {unix.SYS_IO_URING_ENTER, "eperm"}, {unix.SYS_IO_URING_REGISTER, "eperm"}} {
		add(ins{in: bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(c.nr)}, jt: c.target, jf: ""})
	}
	add(ins{in: bpf.Jump{}, jmp: "allow"})
	add(ins{label: "socket", in: bpf.LoadAbsolute{Off: low(0), Size: 4}})
	for _, f := range families {
		target := "proto"
		if f == unix.AF_NETLINK || f == unix.AF_UNIX {
			target = "allow"
		}
		add(ins{in: bpf.JumpIf{Cond: bpf.JumpEqual, Val: f}, jt: target, jf: ""})
	}
	add(ins{in: bpf.Jump{}, jmp: "eperm"})
	add(ins{label: "proto", in: bpf.LoadAbsolute{Off: low(2), Size: 4}})
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpEqual, Val: ipprotoMPTCP}, jt: "eperm", jf: ""})
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpEqual, Val: ipprotoSCTP}, jt: "eperm", jf: "allow"})
	add(ins{label: "flags2", in: bpf.LoadAbsolute{Off: low(2), Size: 4}})
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: msgFastOpen}, jt: "eperm", jf: "allow"})
	add(ins{label: "flags3", in: bpf.LoadAbsolute{Off: low(3), Size: 4}})
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: msgFastOpen}, jt: "eperm", jf: "allow"})
	add(ins{label: "clone", in: bpf.LoadAbsolute{Off: low(0), Size: 4}}) // clone's and unshare's flags
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: cloneNewMask}, jt: "eperm", jf: "allow"})
	add(ins{label: "pair", in: bpf.LoadAbsolute{Off: low(0), Size: 4}}) // socketpair: UNIX only
	add(ins{in: bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_UNIX}, jt: "allow", jf: "eperm"})
	// the verdicts last: BPF jumps only forward
	ret("allow", allow)
	ret("eperm", eperm)
	ret("enosys", enosy)

	at := map[string]int{}
	for i, p := range prog {
		if p.label != "" {
			at[p.label] = i
		}
	}
	skip := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil // the next instruction
		}
		to, ok := at[label]
		if !ok || to <= from || to-from-1 > 255 {
			return 0, fmt.Errorf("seccomp filter: bad jump to %q", label)
		}
		return uint8(to - from - 1), nil
	}
	out := make([]bpf.Instruction, len(prog))
	for i, p := range prog {
		switch in := p.in.(type) {
		case bpf.JumpIf:
			var err error
			if in.SkipTrue, err = skip(i, p.jt); err != nil {
				return err
			}
			if in.SkipFalse, err = skip(i, p.jf); err != nil {
				return err
			}
			out[i] = in
		case bpf.Jump:
			to, ok := at[p.jmp]
			if !ok || to <= i {
				return fmt.Errorf("seccomp filter: bad jump to %q", p.jmp)
			}
			out[i] = bpf.Jump{Skip: uint32(to - i - 1)}
		default:
			out[i] = in
		}
	}
	raw, err := bpf.Assemble(out)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, in := range raw {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filter)
	if errno != 0 {
		return errno
	}
	return nil
}

func bigEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 0
}
