//go:build linux

package childproc

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setParentDeathSignal kills the child if Caddy itself dies without a
// chance to clean up.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

// markInheritableFDs sets close-on-exec on every descriptor above stderr,
// so a child gets exactly stdin, stdout and stderr even when Caddy holds
// descriptors it inherited without close-on-exec (systemd socket
// activation, a supervisor's pipe). Go opens its own with close-on-exec.
func markInheritableFDs() {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	markFDsIn("/proc/self/fd") // kernels before 5.11
}

// sweepMarked kills every process whose environment carries one of the
// markers (our CADDYMCP_CHILD variable with a child's value): descendants
// that left their child's process group (setsid, double fork) and outlived
// it. It adds what it killed to killed, per marker, and returns the total.
func sweepMarked(markers map[string]bool, killed map[string]int) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	prefix := []byte(markerVar + "=")
	self := os.Getpid()
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for len(env) > 0 {
			entry := env
			if i := bytes.IndexByte(env, 0); i >= 0 {
				entry, env = env[:i], env[i+1:]
			} else {
				env = nil
			}
			if !bytes.HasPrefix(entry, prefix) || !markers[string(entry)] {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed[string(entry)]++
				n++
			}
			break
		}
	}
	return n
}

// sweepBatch kills what sweepMarked finds for markers, in passes until one
// finds nothing: a descendant caught in execve (its environment unreadable
// for a moment) or forking while a pass runs is found by the next. At most
// 6 passes, 10 ms apart and growing.
func sweepBatch(markers map[string]bool) map[string]int {
	killed := map[string]int{}
	for pass, wait := 0, 10*time.Millisecond; pass < 6; pass, wait = pass+1, wait*2 {
		if sweepMarked(markers, killed) == 0 && pass > 0 {
			break
		}
		time.Sleep(wait)
	}
	return killed
}

// sweeper batches the sweeps of children that end together (a reload, a
// stop, a burst of DELETEs): each pass reads every process's environment
// once for all of them, where each child's own sweep read all of /proc
// twice or more (1 000 sessions ending at a stop: 3 s of CPU). A child
// that ends while a batch runs is swept by the next batch, with passes of
// its own. sweeper.mu is taken alone and not held across I/O.
var sweeper struct {
	mu      sync.Mutex
	pending map[string][]chan int // marker → the children's exit goroutines waiting on it
	running bool
}

// sweepDescendants kills the processes marked with marker that outlived
// the child (in a batch with other children's markers) and returns how
// many it killed.
func sweepDescendants(marker string) int {
	done := make(chan int, 1)
	sweeper.mu.Lock()
	if sweeper.pending == nil {
		sweeper.pending = map[string][]chan int{}
	}
	sweeper.pending[marker] = append(sweeper.pending[marker], done)
	if !sweeper.running {
		sweeper.running = true
		go runSweeps()
	}
	sweeper.mu.Unlock()
	return <-done
}

// runSweeps sweeps batches of pending markers until none is left.
func runSweeps() {
	for {
		sweeper.mu.Lock()
		batch := sweeper.pending
		sweeper.pending = nil
		if len(batch) == 0 {
			sweeper.running = false
			sweeper.mu.Unlock()
			return
		}
		sweeper.mu.Unlock()
		markers := make(map[string]bool, len(batch))
		for m := range batch {
			markers[m] = true
		}
		killed := sweepBatch(markers)
		for m, waiters := range batch {
			for _, w := range waiters {
				w <- killed[m]
			}
		}
	}
}

// Reaping without a thread per child. os/exec's Wait blocks an OS thread in
// waitid for as long as the child lives, so N idle sessions held N threads
// (2 007 threads with 2 000 sessions) and Go's limit of 10 000 threads would
// have ended Caddy with a fatal error at about 10 000 children. Here the
// child is started with a pidfd (clone with CLONE_PIDFD, one descriptor, as
// os/exec holds too); the pidfd becomes readable when the child exits, so
// the waiting goroutine parks in the netpoller and the child is reaped with
// wait4(WNOHANG) once it has exited. Where pidfds do not work (kernels
// before 5.3, some seccomp profiles) children start through os/exec as
// before.

// pidfdWorks reports whether this kernel gives pidfds (pidfd_open came in
// Linux 5.3, after clone's CLONE_PIDFD and pollable pidfds).
var pidfdWorks = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// startChild starts cmd's process (its resolved path, arguments,
// environment and directory) in its own process group, with the parent
// death signal, holding a pidfd for it.
func startChild(cmd *exec.Cmd, stdin, stdout, stderr *os.File, ns func(*syscall.SysProcAttr)) (*child, error) {
	if !pidfdWorks() {
		return startWithExec(cmd, stdin, stdout, stderr, ns)
	}
	if cmd.Err != nil { // the command was not found (exec.Command's LookPath)
		return nil, cmd.Err
	}
	setProcessGroup(cmd) // the attributes os/exec would start it with
	if ns != nil {
		ns(cmd.SysProcAttr)
	}
	pidfd := -1
	sys := *cmd.SysProcAttr
	sys.PidFD = &pidfd
	pid, _, err := syscall.StartProcess(cmd.Path, cmd.Args, &syscall.ProcAttr{
		Dir:   cmd.Dir,
		Env:   cmd.Environ(),
		Files: []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()},
		Sys:   &sys,
	})
	if err != nil {
		return nil, &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: err}
	}
	c := &child{pid: pid}
	if pidfd < 0 {
		c.wait = func() error { return waitBlocking(pid, &c.cpu) }
	} else {
		c.wait = func() error { return waitPidfd(pid, pidfd, &c.cpu) }
	}
	return c, nil
}

// cpuOf is the user and system time in ru.
func cpuOf(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitPidfd parks until pidfd is readable (the child exited), then reaps
// the child. It closes pidfd.
func waitPidfd(pid, pidfd int, cpu *time.Duration) error {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return waitBlocking(pid, cpu)
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return waitBlocking(pid, cpu)
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	var werr error
	reaped := false
	err = rc.Read(func(uintptr) bool {
		for {
			got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, &ru)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			reaped = got == pid
			return reaped // 0: still running; park until the pidfd is readable
		}
	})
	switch {
	case werr != nil:
		return os.NewSyscallError("wait4", werr)
	case err != nil || !reaped:
		// the netpoller refused the pidfd: wait the blocking way
		return waitBlocking(pid, cpu)
	}
	*cpu = cpuOf(&ru)
	return exitError(ws)
}

// waitBlocking reaps pid with a blocking wait4 (one OS thread while it waits).
func waitBlocking(pid int, cpu *time.Duration) error {
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	for {
		_, err := syscall.Wait4(pid, &ws, 0, &ru)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("wait4", err)
		}
		*cpu = cpuOf(&ru)
		return exitError(ws)
	}
}

// exitError is nil for exit status 0, else how the child ended.
func exitError(ws syscall.WaitStatus) error {
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	return waitStatusError(ws)
}

// waitStatusError words a wait status as os.ProcessState.String does.
type waitStatusError syscall.WaitStatus

// WaitStatus is the status itself (sandbox.WaitStatus).
func (e waitStatusError) WaitStatus() syscall.WaitStatus { return syscall.WaitStatus(e) }

func (e waitStatusError) Error() string {
	ws := syscall.WaitStatus(e)
	var s string
	switch {
	case ws.Exited():
		s = "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s = "signal: " + ws.Signal().String()
	default:
		s = "wait status " + strconv.Itoa(int(ws))
	}
	if ws.CoreDump() {
		s += " (core dumped)"
	}
	return s
}

// sweepSupported: descendants that leave the group are found (by marker).
const sweepSupported = true
