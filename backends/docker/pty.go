package docker

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/moatsh/moat/backend"
)

// Timing of the end-of-file typed when the keystrokes end (see typeEOF).
const (
	eofQuiet   = 150 * time.Millisecond // output silence that suggests the program waits for input
	eofMaxSent = 16
)

// ExecPTY implements backend.PTYExecer with an Engine API exec on a TTY. In TTY mode the
// attach stream is the raw terminal (no stdcopy framing) and the daemon allocates the
// pty. The size is set at create (ConsoleSize, honoured from API 1.42) and again right
// after the start through the resize endpoint: older daemons (20.10 speaks 1.41) ignore
// ConsoleSize, so there a program that reads the size at its very first instruction may
// see 0x0; keystrokes are held back until the size is set. Every value from resize
// follows. Cancellation kills the process tree as Exec does.
func (i *Instance) ExecPTY(ctx context.Context, req *backend.ExecRequest, size backend.WinSize, resize <-chan backend.WinSize) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("docker: exec %s: %w", req.Argv[0], err)
	}
	env, marker := i.execEnv(ctx, req.Env)
	var console *[2]uint
	if size.Rows > 0 && size.Cols > 0 {
		console = &[2]uint{uint(size.Rows), uint(size.Cols)}
	}
	created, err := i.b.cli.ContainerExecCreate(ctx, i.id, container.ExecOptions{
		Cmd:        req.Argv,
		Env:        env,
		WorkingDir: req.Workdir,
		Tty:        true,
		// Stdin is always attached: with a terminal, end of input is a typed ^D, not a
		// closed stream (the daemon ends the whole attach when stdin closes in TTY mode).
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		ConsoleSize:  console,
	})
	if err != nil {
		return -1, i.execErr(err)
	}
	resp, err := i.b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{Tty: true, ConsoleSize: console})
	if err != nil {
		if ctx.Err() != nil {
			i.kill(ctx, created.ID, marker)
			return -1, fmt.Errorf("docker: exec %s: %w", req.Argv[0], ctx.Err())
		}
		return -1, i.execErr(err)
	}
	var closeOnce sync.Once
	closeConn := func() { closeOnce.Do(resp.Close) }
	defer closeConn()

	// Helpers end when ExecPTY returns; their API calls are bounded by this context.
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	resizeTo := func(sz backend.WinSize) error {
		return i.b.cli.ContainerExecResize(hctx, created.ID, container.ResizeOptions{Height: uint(sz.Rows), Width: uint(sz.Cols)})
	}

	sniffer := &failureSniffer{w: req.Stdout}
	out := &ttyOutput{w: sniffer}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, resp.Reader)
		done <- err
	}()

	// Keystrokes wait for the initial size, so a command typed at once sees it. The
	// daemon answers a resize once the process started (or fails it: a process that
	// could not start); the wait is bounded either way.
	sized := make(chan struct{})
	go func() {
		defer close(sized)
		if console == nil {
			return
		}
		rctx, cancel := context.WithTimeout(hctx, 5*time.Second)
		defer cancel()
		_ = i.b.cli.ContainerExecResize(rctx, created.ID, container.ResizeOptions{Height: console[0], Width: console[1]})
	}()
	go func() {
		select {
		case <-sized:
		case <-hctx.Done():
			return
		}
		last := byte('\n')
		if req.Stdin != nil {
			w := &lastByteWriter{w: resp.Conn}
			// Not waited for: req.Stdin may block forever; closing the connection ends it.
			// A failed write leaves typeEOF nothing to do: its own write fails too.
			_, _ = io.Copy(w, req.Stdin)
			if w.n > 0 {
				last = w.last
			}
		}
		typeEOF(hctx, resp.Conn, out, last)
	}()
	if resize != nil {
		go func() {
			for {
				select {
				case <-hctx.Done():
					return
				case sz, ok := <-resize:
					if !ok {
						return
					}
					if sz.Rows > 0 && sz.Cols > 0 {
						_ = resizeTo(sz) // a failed resize leaves the old size: not fatal
					}
				}
			}
		}()
	}

	// ttyOutput swallows write errors, so a copy error can only be the stream's own end;
	// the exit code is what counts.
	code, _, err := i.waitExec(ctx, created.ID, marker, req.Argv[0], "terminal", sniffer, done, closeConn)
	return code, err
}

// typeEOF types the terminal's end-of-file (^D) after the keystrokes ended. The terminal's
// state is inside the container, out of sight, so this goes by the output: ^D is typed
// once the output has been quiet for eofQuiet (the program probably waits for input), and
// again only after new output appeared and went quiet again while the process lives on.
// That matters because a ^D typed while a shell runs a command in canonical mode reaches
// its line editor, once back in raw mode, as a NUL byte; the next prompt is the new output
// that triggers another ^D. At most eofMaxSent are typed.
func typeEOF(ctx context.Context, w io.Writer, out *ttyOutput, last byte) {
	sentAt := int64(-1) // output count when ^D was last typed
	begin := time.Now()
	for sent := 0; sent < eofMaxSent; {
		select {
		case <-ctx.Done():
			return
		case <-time.After(eofQuiet / 3):
		}
		n, at := out.state()
		if at.Before(begin) {
			at = begin
		}
		if n == sentAt || time.Since(at) < eofQuiet {
			continue
		}
		seq := []byte{0x04}
		if sent == 0 && last != '\n' && last != '\r' {
			// In canonical mode the first ^D delivers the unfinished line.
			seq = []byte{0x04, 0x04}
		}
		if _, err := w.Write(seq); err != nil {
			return
		}
		sent++
		sentAt = n
	}
}

// ttyOutput passes terminal output on and records how much came and when.
type ttyOutput struct {
	w    io.Writer
	mu   sync.Mutex
	n    int64
	last time.Time
	werr atomic.Bool
}

func (o *ttyOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.n += int64(len(p))
	o.last = time.Now()
	o.mu.Unlock()
	if o.werr.Load() {
		return len(p), nil
	}
	if _, err := o.w.Write(p); err != nil {
		// Keep draining: the process must not block on a full terminal.
		o.werr.Store(true)
	}
	return len(p), nil
}

func (o *ttyOutput) state() (int64, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n, o.last
}

// lastByteWriter remembers the last byte written through it.
type lastByteWriter struct {
	w    io.Writer
	n    int64
	last byte
}

func (l *lastByteWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.n += int64(n)
		l.last = p[n-1]
	}
	return n, err
}

var _ backend.PTYExecer = (*Instance)(nil)
