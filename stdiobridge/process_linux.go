//go:build linux

package stdiobridge

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

// sweepMarked kills every process whose environment carries marker (our
// CADDYMCP_CHILD variable): descendants that left the child's process
// group (setsid, double fork) and outlived it.
func sweepMarked(marker string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	needle := []byte(marker + "\x00")
	self := os.Getpid()
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, needle) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// sweepDescendants kills what sweepMarked finds, in passes until one finds
// nothing: a descendant caught in execve (its environment unreadable for a
// moment) or forking while a pass runs is found by the next. At most 6
// passes, 10 ms apart and growing.
func sweepDescendants(marker string) int {
	total := 0
	for pass, wait := 0, 10*time.Millisecond; pass < 6; pass, wait = pass+1, wait*2 {
		n := sweepMarked(marker)
		total += n
		if n == 0 && pass > 0 {
			break
		}
		time.Sleep(wait)
	}
	return total
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
func startChild(cmd *exec.Cmd, stdin, stdout, stderr *os.File) (*child, error) {
	if !pidfdWorks() {
		return startWithExec(cmd, stdin, stdout, stderr)
	}
	if cmd.Err != nil { // the command was not found (exec.Command's LookPath)
		return nil, cmd.Err
	}
	pidfd := -1
	sys := &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd}
	setParentDeathSignal(sys)
	pid, _, err := syscall.StartProcess(cmd.Path, cmd.Args, &syscall.ProcAttr{
		Dir:   cmd.Dir,
		Env:   cmd.Environ(),
		Files: []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()},
		Sys:   sys,
	})
	if err != nil {
		return nil, &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: err}
	}
	if pidfd < 0 {
		return &child{pid: pid, wait: func() error { return waitBlocking(pid) }}, nil
	}
	return &child{pid: pid, wait: func() error { return waitPidfd(pid, pidfd) }}, nil
}

// waitPidfd parks until pidfd is readable (the child exited), then reaps
// the child. It closes pidfd.
func waitPidfd(pid, pidfd int) error {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return waitBlocking(pid)
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return waitBlocking(pid)
	}
	var ws syscall.WaitStatus
	var werr error
	reaped := false
	err = rc.Read(func(uintptr) bool {
		for {
			got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
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
		return waitBlocking(pid)
	}
	return exitError(ws)
}

// waitBlocking reaps pid with a blocking wait4 (one OS thread while it waits).
func waitBlocking(pid int) error {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("wait4", err)
		}
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
