package limits

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/oomcount"
)

// Cmd is one child process to run.
type Cmd struct {
	// Argv is the command. When limits wrap it, the wrappers look Argv[0] up in the PATH of
	// Env; otherwise Path is executed with Argv as its argument vector.
	Argv []string
	// Path is Argv[0] resolved (absolute, or relative to Dir); "" means Argv[0].
	Path   string
	Dir    string
	Env    []string // the complete environment; nothing is inherited
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Group applies limits; nil runs without limits.
	Group *Group
	// Started, when set, is called with the pid after the process started.
	Started func(pid int)
	// Detail, when set, learns whether the command was OOM-killed (from the Group's
	// memory cgroup counter, where there is one).
	Detail *backend.ExecDetail
}

// Grace periods for output after the main process exited: a background grandchild may
// hold the pipes (or the terminal) open forever, so reading stops when they stay idle this
// long, or after this many bytes (more than any pipe buffer can hold from before the exit).
const (
	OutputIdleGrace  = 500 * time.Millisecond
	OutputAfterLimit = 4 << 20
)

// Run runs c in its own process group under c.Group's limits and returns its exit code
// (128+signal for a signaled process). When ctx ends, the whole process group gets
// SIGKILL and Run returns ctx.Err() wrapped. A failure to start is an error; ENOENT is
// errdefs NotFound. Stdout and Stderr are drained until EOF, or until they stay idle
// briefly after the process exited (so background grandchildren cannot hang Run), and a
// failing writer does not stop the draining.
func Run(ctx context.Context, c Cmd) (int, error) {
	before, beforeOK := c.Group.OOMKills()
	code, err := run(ctx, c)
	if err == nil && c.Detail != nil && code == 128+int(syscall.SIGKILL) {
		after, afterOK := c.Group.OOMKills()
		c.Detail.OOMKilled = oomcount.OOMKilled(code, before, beforeOK, after, afterOK)
	}
	return code, err
}

func run(ctx context.Context, c Cmd) (int, error) {
	cmd := c.Group.Command(c.Argv, c.Path, c.Dir, c.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	release, err := c.Group.sysProcAttr(cmd.SysProcAttr)
	if err != nil {
		return -1, err
	}
	defer release()

	outR, outW, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("limits: pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return -1, fmt.Errorf("limits: pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	var inW *os.File
	if c.Stdin != nil {
		if f, ok := c.Stdin.(*os.File); ok {
			cmd.Stdin = f
		} else {
			var inR *os.File
			inR, inW, err = os.Pipe()
			if err != nil {
				outR.Close()
				outW.Close()
				errR.Close()
				errW.Close()
				return -1, fmt.Errorf("limits: pipe: %w", err)
			}
			cmd.Stdin = inR
		}
	}
	if err := ctx.Err(); err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		if inW != nil {
			inW.Close()
			cmd.Stdin.(*os.File).Close()
		}
		return -1, fmt.Errorf("limits: %w", err)
	}
	err = cmd.Start()
	// The child has its copies; ours would keep the pipes open after it exits.
	outW.Close()
	errW.Close()
	if f, ok := cmd.Stdin.(*os.File); ok && inW != nil {
		f.Close()
	}
	if err != nil {
		outR.Close()
		errR.Close()
		if inW != nil {
			inW.Close()
		}
		return -1, StartError("limits", c.Argv[0], err)
	}
	pid := cmd.Process.Pid
	if c.Started != nil {
		c.Started(pid)
	}

	if inW != nil {
		go func() {
			// Ends at EOF, or when the child closes its stdin (EPIPE). A reader that blocks
			// forever keeps this goroutine, never Run.
			_, _ = io.Copy(inW, c.Stdin)
			inW.Close()
		}()
	}
	var exited atomic.Bool
	var wg sync.WaitGroup
	for _, p := range []struct {
		r *os.File
		w io.Writer
	}{{outR, c.Stdout}, {errR, c.Stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.r.Close()
			Pump(p.w, p.r, &exited)
		}()
	}

	waitDone := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// Negative pid: the whole process group, grandchildren included.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		case <-waitDone:
		}
	}()
	werr := cmd.Wait()
	close(waitDone)
	exited.Store(true)
	now := time.Now()
	_ = outR.SetReadDeadline(now.Add(OutputIdleGrace))
	_ = errR.SetReadDeadline(now.Add(OutputIdleGrace))
	wg.Wait()
	if inW != nil {
		inW.Close() // unblocks the stdin copier if it is writing
	}
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("limits: exec %s: %w", c.Argv[0], err)
	}
	return ExitCode(cmd.ProcessState, werr)
}

// Command returns the exec.Cmd that starts argv under g's limits: path is argv[0]
// resolved ("" means argv[0]); when g puts wrappers in front of argv, the first wrapper is
// started instead and they look argv[0] up in env's PATH themselves. The environment is
// env and nothing else (nil is empty, never moat's own). A nil Group wraps nothing.
func (g *Group) Command(argv []string, path, dir string, env []string) *exec.Cmd {
	wrapped := argv
	if g != nil {
		wrapped = g.Wrap(argv)
	}
	if path == "" || len(wrapped) != len(argv) {
		path = wrapped[0]
	}
	if env == nil {
		env = []string{} // nil would inherit moat's environment
	}
	return &exec.Cmd{Path: path, Args: wrapped, Dir: dir, Env: env}
}

// StartError wraps a failure to start argv0 with prefix: NotFound when the executable is
// missing.
func StartError(prefix, argv0 string, err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return errdefs.NotFoundf("%s: start %s: %w", prefix, argv0, err)
	}
	return fmt.Errorf("%s: start %s: %w", prefix, argv0, err)
}

// ExitCode is the exit code of a command Wait returned werr for: 128+signal for a
// signaled process.
func ExitCode(ps *os.ProcessState, werr error) (int, error) {
	if ps == nil {
		return -1, fmt.Errorf("limits: wait: %w", werr)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

// Pump copies r (a pipe or a pty master) to w until EOF or another read error (a pty's
// EIO once no process holds its slave side, a closed r). Once exited is set, with a read
// deadline armed by the caller, it also stops when r stays idle for OutputIdleGrace or
// OutputAfterLimit bytes arrived. Time spent blocked in w.Write does not count as idle. A
// failing writer does not stop the draining, so the child never blocks on a full pipe.
func Pump(w io.Writer, r *os.File, exited *atomic.Bool) {
	buf := make([]byte, 64<<10)
	var after int64
	writeOK := true
	for {
		n, err := r.Read(buf)
		if n > 0 && writeOK {
			if _, werr := w.Write(buf[:n]); werr != nil {
				writeOK = false
			}
		}
		if exited.Load() {
			after += int64(n)
			if after > OutputAfterLimit {
				return
			}
			_ = r.SetReadDeadline(time.Now().Add(OutputIdleGrace))
		}
		if err != nil {
			return
		}
	}
}
