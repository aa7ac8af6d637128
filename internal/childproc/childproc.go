// Package childproc runs stdio MCP server processes: it starts one from a
// process config in a process group of its own (with the parent death
// signal, a pidfd reaper on Linux and every inherited descriptor closed),
// frames its stdout into JSON message lines within a size bound, logs its
// stderr bounded in size and rate, writes messages to its stdin, and ends
// it (stdin closed, SIGTERM, SIGKILL to the group) together with any
// descendant that left the group. stdiobridge owns what a message means;
// this package owns the process.
package childproc

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddymcp/caddymcp/internal/sandbox"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Config is everything needed to start one child.
type Config struct {
	// Command is the program; a name without a slash is looked up in PATH.
	Command string
	// Args are its arguments.
	Args []string
	// Env is its whole environment (NAME=value); the marker is added.
	Env []string
	// Dir is its working directory ("": Caddy's).
	Dir string
	// MaxMessageSize bounds one stdout line, read when a line begins (a
	// reload may change it); a longer line is reported to Sink.ChildOversized.
	MaxMessageSize func() int
	// Sandbox, if set, confines the child (internal/sandbox): it is
	// started through the launcher, in the policy's namespaces, with a
	// private temporary directory removed once it has exited.
	Sandbox *sandbox.Policy
}

// markerVar names the variable that marks a child's environment, so that
// descendants which leave its process group can be found and ended.
const markerVar = "CADDYMCP_CHILD"

// Process is one stdio MCP server child in its own process group.
type Process struct {
	child  *child
	stdin  *os.File
	logger *zap.Logger

	writeMu sync.Mutex
	exited  chan struct{} // closed after Wait returned and stdout is drained
	exitErr error
	oom     atomic.Bool    // its stderr reported running out of memory (sandbox memory limit)
	conf    *sandbox.Child // its sandbox, nil: none

	termOnce sync.Once
}

// Sink receives what the child writes. Its methods are called from the
// child's reader goroutines, never with a lock of this package held.
type Sink interface {
	// ChildMessage is called for each JSON message line, in order; line
	// is valid only during the call.
	ChildMessage(line []byte)
	// ChildOversized is called for a line larger than the limit, with its
	// top-level id (nil if it has none), so a pending request can be
	// answered.
	ChildOversized(id []byte, size int)
	// ChildExited is called once after the process exited and its stdout
	// was drained.
	ChildExited(err error)
}

// Start spawns the child. The child gets its own process group so that
// terminating it reaches grandchildren too.
func Start(cfg Config, sink Sink, logger *zap.Logger) (*Process, error) {
	cmd := exec.Command(cfg.Command, cfg.Args...)
	marker := markerVar + "=" + randomMarker()
	cmd.Env = append(cfg.Env[:len(cfg.Env):len(cfg.Env)], marker)
	cmd.Dir = cfg.Dir
	markInheritableFDs()

	var ns func(*syscall.SysProcAttr) // the sandbox's namespaces, session and cgroup
	var conf *sandbox.Child
	cleanup := func() {}
	if cfg.Sandbox != nil {
		var err error
		if conf, err = cfg.Sandbox.Wrap(cmd); err != nil {
			return nil, err
		}
		ns = conf.Attr
		cleanup = func() {
			if err := conf.Cleanup(); err != nil {
				logger.Warn("could not remove the sandbox's cgroup or temporary directory of a server process", zap.Error(err))
			}
		}
	}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		cleanup()
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		cleanup()
		return nil, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		stdoutR.Close()
		stdoutW.Close()
		cleanup()
		return nil, err
	}
	c, err := startChild(cmd, stdinR, stdoutW, stderrW, ns)
	if err != nil {
		for _, f := range []*os.File{stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW} {
			f.Close()
		}
		cleanup()
		return nil, err
	}
	// the child holds its ends now
	stdinR.Close()
	stdoutW.Close()
	stderrW.Close()

	p := &Process{child: c, stdin: stdinW, logger: logger.With(zap.Int("pid", c.pid)), exited: make(chan struct{}), conf: conf}
	stdoutDone := make(chan struct{})
	stderrDone := make(chan struct{})
	go func() {
		defer close(stdoutDone)
		p.readStdout(stdoutR, cfg.MaxMessageSize, sink)
	}()
	go func() {
		defer close(stderrDone)
		p.readStderr(stderrR, cfg.Sandbox != nil && cfg.Sandbox.WatchesMemory())
	}()
	go func() {
		err := c.wait()
		// the group may live on (a grandchild holding stdout); end it,
		// and any descendant that left the group
		killGroup(c, true)
		if conf != nil {
			conf.Kill() // its cgroup: every descendant, wherever it went
		}
		if n := sweepDescendants(marker); n > 0 {
			p.logger.Info("ended descendants that outlived the server process", zap.Int("processes", n))
		}
		<-stdoutDone
		stdoutR.Close()
		<-stderrDone
		stderrR.Close()
		if cfg.Sandbox != nil {
			if l := conf.Classify(err, c.cpuTime(), p.oom.Load()); l != nil {
				err = &LimitError{Limit: *l, Err: err}
			}
			cleanup()
		}
		p.exitErr = err
		close(p.exited)
		stdinW.Close()
		sink.ChildExited(err)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.child.pid }

// Cgroup is the directory of the child's cgroup ("": it has none of its own).
func (p *Process) Cgroup() string {
	if p.conf == nil {
		return ""
	}
	return p.conf.Cgroup()
}

// Send writes one message line to the child's stdin, within timeout
// (0: none); it fails once the child has exited.
func (p *Process) Send(msg []byte, timeout time.Duration) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	select {
	case <-p.exited:
		return errors.New("server process has exited")
	default:
	}
	if timeout > 0 {
		_ = p.stdin.SetWriteDeadline(time.Now().Add(timeout))
	}
	buf := make([]byte, 0, len(msg)+1)
	buf = append(buf, msg...)
	buf = append(buf, '\n')
	_, err := p.stdin.Write(buf)
	return err
}

// Terminate ends the child: stdin closed, then SIGTERM, then SIGKILL to the
// whole group, each step after grace. It returns when the child has exited.
// It may be called more than once, from any goroutine.
func (p *Process) Terminate(grace time.Duration) {
	p.termOnce.Do(func() {
		p.writeMu.Lock()
		p.stdin.Close()
		p.writeMu.Unlock()
		select {
		case <-p.exited:
			return
		case <-time.After(grace):
		}
		p.logger.Debug("server process did not exit after stdin closed; sending SIGTERM")
		killGroup(p.child, false)
		select {
		case <-p.exited:
			return
		case <-time.After(grace):
		}
		p.logger.Warn("server process ignored SIGTERM; sending SIGKILL")
		killGroup(p.child, true)
		if p.conf != nil {
			p.conf.Kill()
		}
	})
	<-p.exited
}

// readStdout splits stdout into lines and hands JSON lines to the sink. A
// line longer than max is not kept: only its top-level id is (found by an
// idScanner as the line streams past), so the request it answers still
// gets an error.
func (p *Process) readStdout(r io.Reader, limit func() int, sink Sink) {
	br := bufio.NewReaderSize(r, 64<<10)
	max := 0
	var long []byte // a line that did not fit in br's buffer (while within max)
	inLong := false // reading the rest of a line that did not fit
	var scan idScanner
	size := 0
	warn := rate.NewLimiter(rate.Every(time.Second), 5)
	for {
		chunk, err := br.ReadSlice('\n')
		if size == 0 {
			max = limit() // a line is held to the bound in force when it begins
		}
		size += len(chunk)
		complete := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		if !complete || inLong {
			if !inLong {
				inLong, scan = true, idScanner{}
			}
			scan.feed(chunk)
			if size <= max {
				long = append(long, chunk...)
			} else {
				long = nil
			}
		}
		if complete {
			line := chunk
			if inLong {
				line = long
			}
			if size > max {
				if !inLong { // the whole line came in one chunk (a bound below the buffer)
					scan = idScanner{}
					scan.feed(chunk)
				}
				sink.ChildOversized(scan.result(), size)
			} else if line = bytes.TrimSpace(line); len(line) > 0 {
				if json.Valid(line) {
					sink.ChildMessage(line)
				} else if warn.Allow() {
					p.logger.Warn("server process wrote a line that is not JSON to stdout; skipped",
						zap.ByteString("line", truncate(line, 256)))
				}
			}
			long, inLong, size = nil, false, 0
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// stderrLineMax bounds one logged stderr line.
const stderrLineMax = 2048

// readStderr logs the child's stderr line by line, bounded in size and rate.
func (p *Process) readStderr(r io.Reader, watchOOM bool) {
	br := bufio.NewReaderSize(r, 16<<10)
	limit := rate.NewLimiter(rate.Limit(50), 200)
	dropped := 0
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line) < stderrLineMax {
			line = append(line, chunk[:min(len(chunk), stderrLineMax-len(line))]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if text := bytes.TrimRight(line, "\r\n"); len(text) > 0 {
			if watchOOM && sandbox.OutOfMemory(text) {
				p.oom.Store(true)
			}
			if limit.Allow() {
				if dropped > 0 {
					p.logger.Warn("server stderr lines dropped (rate limit)", zap.Int("dropped", dropped))
					dropped = 0
				}
				p.logger.Info("server stderr", zap.ByteString("line", text))
			} else {
				dropped++
			}
		}
		line = line[:0]
		if err != nil {
			if dropped > 0 {
				p.logger.Warn("server stderr lines dropped (rate limit)", zap.Int("dropped", dropped))
			}
			return
		}
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[:n]
}

// child is a started server process, however the platform started it.
type child struct {
	pid int
	// wait blocks until the process has exited and been reaped; nil for
	// exit status 0, else an error worded as os.ProcessState words it.
	wait func() error
	// cmd is set where os/exec started the process (everywhere but
	// Linux with pidfds); nil on the pidfd path.
	cmd *exec.Cmd
	// cpu is the CPU time the process used, set when wait returns (the
	// pidfd path; the os/exec path reads cmd's ProcessState).
	cpu time.Duration
}

// cpuTime is the user and system time the exited process used.
func (c *child) cpuTime() time.Duration {
	if c.cmd != nil && c.cmd.ProcessState != nil {
		return c.cmd.ProcessState.UserTime() + c.cmd.ProcessState.SystemTime()
	}
	return c.cpu
}

// startWithExec starts cmd through os/exec, in its own process group. Its
// Wait holds an OS thread in waitid while the child lives.
func startWithExec(cmd *exec.Cmd, stdin, stdout, stderr *os.File, ns func(*syscall.SysProcAttr)) (*child, error) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	setProcessGroup(cmd)
	if ns != nil {
		ns(cmd.SysProcAttr)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{pid: cmd.Process.Pid, wait: cmd.Wait, cmd: cmd}, nil
}

// LimitError is how a child that a sandbox limit ended exited.
type LimitError struct {
	Limit sandbox.Limit
	Err   error // how it exited
}

func (e *LimitError) Error() string {
	return sandbox.CauseMessage(&e.Limit) + "; " + ExitDescription(e.Err)
}

func (e *LimitError) Unwrap() error { return e.Err }

// ExitCause is the sandbox limit that ended a child (memory, cpu,
// file_size), or "".
func ExitCause(err error) string {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Limit.Cause
	}
	return ""
}

// ExitDescription renders how a child ended, for clients and logs.
func ExitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var le *LimitError
	if errors.As(err, &le) {
		return le.Error()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return fmt.Sprint(err)
}

// randomMarker is the value of a child's marker variable: unguessable, so
// that a process cannot make itself look like another child's descendant.
func randomMarker() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
