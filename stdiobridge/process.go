package stdiobridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// spawnConfig is everything needed to start one child.
type spawnConfig struct {
	command        string
	args           []string
	env            []string
	dir            string
	maxMessageSize int
	maxSize        func() int // the bound in force now, read per line (nil: maxMessageSize); a reload may change it
	writeTimeout   time.Duration
}

// markerVar names the variable that marks a child's environment, so that
// descendants which leave its process group can be found and ended.
const markerVar = "CADDYMCP_CHILD"

// process is one stdio MCP server child in its own process group.
type process struct {
	child  *child
	stdin  *os.File
	logger *zap.Logger

	writeMu sync.Mutex
	exited  chan struct{} // closed after Wait returned and stdout is drained
	exitErr error

	termOnce sync.Once
}

// messageSink receives what the child writes.
type messageSink interface {
	// childMessage is called for each JSON message line, in order.
	childMessage(line []byte)
	// childOversized is called for a line larger than the limit, with its
	// top-level id (nil if it has none), so a pending request can be
	// answered.
	childOversized(id []byte, size int)
	// childExited is called once after the process exited and its stdout
	// was drained.
	childExited(err error)
}

// startProcess spawns the child. The child gets its own process group so
// that terminating it reaches grandchildren too.
func startProcess(cfg spawnConfig, sink messageSink, logger *zap.Logger) (*process, error) {
	cmd := exec.Command(cfg.command, cfg.args...)
	marker := markerVar + "=" + randomID(10)
	cmd.Env = append(cfg.env[:len(cfg.env):len(cfg.env)], marker)
	cmd.Dir = cfg.dir
	markInheritableFDs()

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		return nil, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		stdoutR.Close()
		stdoutW.Close()
		return nil, err
	}
	c, err := startChild(cmd, stdinR, stdoutW, stderrW)
	if err != nil {
		for _, f := range []*os.File{stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW} {
			f.Close()
		}
		return nil, err
	}
	// the child holds its ends now
	stdinR.Close()
	stdoutW.Close()
	stderrW.Close()

	p := &process{child: c, stdin: stdinW, logger: logger.With(zap.Int("pid", c.pid)), exited: make(chan struct{})}
	stdoutDone := make(chan struct{})
	stderrDone := make(chan struct{})
	go func() {
		defer close(stdoutDone)
		limit := cfg.maxSize
		if limit == nil {
			limit = func() int { return cfg.maxMessageSize }
		}
		p.readStdout(stdoutR, limit, sink)
	}()
	go func() {
		defer close(stderrDone)
		p.readStderr(stderrR)
	}()
	go func() {
		err := c.wait()
		// the group may live on (a grandchild holding stdout); end it,
		// and any descendant that left the group
		killGroup(c, true)
		if n := sweepDescendants(marker); n > 0 {
			p.logger.Info("ended descendants that outlived the server process", zap.Int("processes", n))
		}
		<-stdoutDone
		stdoutR.Close()
		<-stderrDone
		stderrR.Close()
		p.exitErr = err
		close(p.exited)
		stdinW.Close()
		sink.childExited(err)
	}()
	return p, nil
}

func (p *process) pid() int { return p.child.pid }

// send writes one message line to the child's stdin.
func (p *process) send(msg []byte, timeout time.Duration) error {
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

// terminate ends the child: stdin closed, then SIGTERM, then SIGKILL to the
// whole group, each step after grace. It returns when the child has exited.
func (p *process) terminate(grace time.Duration) {
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
	})
	<-p.exited
}

// readStdout splits stdout into lines and hands JSON lines to the sink. A
// line longer than max is not kept: only its top-level id is (found by an
// idScanner as the line streams past), so the request it answers still
// gets an error.
func (p *process) readStdout(r io.Reader, limit func() int, sink messageSink) {
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
				sink.childOversized(scan.result(), size)
			} else if line = bytes.TrimSpace(line); len(line) > 0 {
				if json.Valid(line) {
					sink.childMessage(line)
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
func (p *process) readStderr(r io.Reader) {
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
}

// startWithExec starts cmd through os/exec, in its own process group. Its
// Wait holds an OS thread in waitid while the child lives.
func startWithExec(cmd *exec.Cmd, stdin, stdout, stderr *os.File) (*child, error) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{pid: cmd.Process.Pid, wait: cmd.Wait, cmd: cmd}, nil
}

// exitDescription renders how a child ended, for clients and logs.
func exitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return fmt.Sprint(err)
}
