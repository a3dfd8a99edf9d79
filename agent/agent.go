// Package agent answers "how does the host run a command through moat-agent?": the Go
// client of the moat-agent protocol (docs/agent-protocol.md; frames in agent/wire). A
// Client dials the agent's unix socket once per command, so it holds no connection state
// and is safe for concurrent use.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moatsh/moat/agent/wire"
	"github.com/moatsh/moat/errdefs"
)

// ErrUnreachable is wrapped by errors that happened before the command was sent (no
// socket, nothing listening, no HELLO in time, no common protocol version): the command
// did not run, so the caller may run it another way.
var ErrUnreachable = errors.New("agent unreachable")

// ErrConnectionLost is wrapped (with errdefs.ErrUnavailable) by errors of an operation
// whose connection broke after the request was sent: the agent, or its sandbox, went away.
var ErrConnectionLost = errors.New("agent connection lost")

// DefaultHelloTimeout is how long Exec waits for the agent's HELLO. A healthy agent
// answers in microseconds; one in a frozen (paused) sandbox accepts the connection and
// never answers.
const DefaultHelloTimeout = time.Second

// killWait bounds how long Exec waits, after sending KILL, for the agent to report the
// process dead.
var killWait = 5 * time.Second

// Client runs commands through the agent listening on Socket.
type Client struct {
	// Socket is the host path of the agent's unix socket.
	Socket string
	// Prefix starts every error message ("docker" gives "docker: exec ..."); "" is "agent".
	Prefix string
	// HelloTimeout bounds connect + HELLO; 0 is DefaultHelloTimeout.
	HelloTimeout time.Duration
}

// ExecRequest is one command to run through the agent.
type ExecRequest struct {
	Argv []string
	// Env are "KEY=value" entries overriding the agent's environment (the sandbox's).
	Env []string
	// Workdir is the command's working directory; "" is the agent's.
	Workdir string
	// Stdin may be nil: the command reads /dev/null. It is read from a goroutine that Exec
	// does not wait for, since a command may exit without reading its input.
	Stdin io.Reader
	// Stdout and Stderr must not be nil.
	Stdout, Stderr io.Writer
	// OOMKilled, when set, receives the EXIT's oom_killed: the agent saw the command
	// OOM-killed.
	OOMKilled *bool
}

func (c *Client) prefix() string {
	if c.Prefix == "" {
		return "agent"
	}
	return c.Prefix
}

func (c *Client) unreachable(err error) error {
	return fmt.Errorf("%s: agent at %s: %w: %w", c.prefix(), c.Socket, ErrUnreachable, err)
}

// connect dials the socket and completes the HELLO exchange. It refuses a socket path that
// is a symlink (see dialSocket): the directory is writable from inside the sandbox.
func (c *Client) connect(ctx context.Context) (net.Conn, *wire.Reader, *wire.Writer, wire.ServerHello, error) {
	var hello wire.ServerHello
	timeout := c.HelloTimeout
	if timeout <= 0 {
		timeout = DefaultHelloTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	d := net.Dialer{Deadline: deadline}
	conn, err := dialSocket(ctx, &d, c.Socket)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, nil, hello, ctx.Err()
		}
		return nil, nil, nil, hello, c.unreachable(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	_ = conn.SetDeadline(deadline)
	r, w := wire.NewReader(conn), wire.NewWriter(conn)
	fail := func(err error) (net.Conn, *wire.Reader, *wire.Writer, wire.ServerHello, error) {
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, nil, nil, hello, ctx.Err()
		}
		return nil, nil, nil, hello, c.unreachable(err)
	}
	if err := w.WriteJSON(wire.Hello, wire.ClientHello{Versions: wire.Versions}); err != nil {
		return fail(err)
	}
	t, p, err := r.Next()
	if err != nil {
		return fail(err)
	}
	switch t {
	case wire.Hello:
		if err := wire.Decode(t, p, &hello); err != nil {
			return fail(err)
		}
		if wire.Choose([]int{hello.Version}, wire.Versions) == 0 {
			return fail(fmt.Errorf("agent chose protocol version %d", hello.Version))
		}
	case wire.Error:
		var m wire.ErrorMsg
		_ = wire.Decode(t, p, &m)
		return fail(errors.New(clip(m.Message)))
	default:
		return fail(fmt.Errorf("%w: %v frame instead of HELLO", wire.ErrProtocol, t))
	}
	if !stop() && ctx.Err() != nil {
		return fail(ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, r, w, hello, nil
}

// Ping connects and exchanges HELLO; it reports what the agent said.
func (c *Client) Ping(ctx context.Context) (wire.ServerHello, error) {
	conn, _, _, hello, err := c.connect(ctx)
	if err != nil {
		return hello, err
	}
	_ = conn.Close()
	return hello, nil
}

// Exec runs req to completion and returns its exit code (128+signal for a killed process).
// A missing executable or workdir is an errdefs NotFound error. When ctx ends, the agent
// kills the command's process tree and Exec returns ctx.Err() wrapped. Errors wrapping
// ErrUnreachable mean the command was never sent.
func (c *Client) Exec(ctx context.Context, req *ExecRequest) (int, error) {
	argv0 := ""
	if len(req.Argv) > 0 {
		argv0 = req.Argv[0]
	}
	ctxErr := func() error { return fmt.Errorf("%s: exec %s: %w", c.prefix(), argv0, ctx.Err()) }
	if ctx.Err() != nil {
		return -1, ctxErr()
	}
	conn, r, w, _, err := c.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctxErr()
		}
		return -1, err
	}
	defer conn.Close()
	if err := w.WriteJSON(wire.Exec, wire.ExecRequest{Argv: req.Argv, Env: req.Env,
		Workdir: req.Workdir, Stdin: req.Stdin != nil}); err != nil {
		return -1, errdefs.Unavailablef("%s: exec %s: sending request: %v", c.prefix(), argv0, err)
	}

	win := newWindow(wire.StdinWindow)
	defer win.close()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := c.readLoop(r, req, win, argv0)
		done <- result{code, err}
	}()
	if req.Stdin != nil {
		go sendStdin(w, req.Stdin, win)
	}
	select {
	case res := <-done:
		return res.code, res.err
	case <-ctx.Done():
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		if w.Write(wire.Kill, nil) == nil {
			select {
			case <-done:
				return -1, ctxErr()
			case <-time.After(killWait):
			}
		}
		// The agent did not confirm: hang up (it kills the command when the connection
		// ends) and let readLoop finish, so nothing is written to the caller's writers
		// after Exec returned, however long a hostile agent keeps talking.
		_ = conn.Close()
		<-done
		return -1, ctxErr()
	}
}

// readLoop handles the agent's frames until EXIT or ERROR.
func (c *Client) readLoop(r *wire.Reader, req *ExecRequest, win *window, argv0 string) (int, error) {
	for {
		t, p, err := r.Next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return -1, errdefs.Unavailablef("%s: exec %s: %w: %v", c.prefix(), argv0, ErrConnectionLost, err)
		}
		switch t {
		case wire.Started:
		case wire.Stdout:
			if _, err := req.Stdout.Write(p); err != nil {
				return -1, fmt.Errorf("%s: exec %s: writing stdout: %w", c.prefix(), argv0, err)
			}
		case wire.Stderr:
			if _, err := req.Stderr.Write(p); err != nil {
				return -1, fmt.Errorf("%s: exec %s: writing stderr: %w", c.prefix(), argv0, err)
			}
		case wire.StdinAck:
			n, err := wire.ParseAck(p)
			if err != nil {
				return -1, errdefs.Unavailablef("%s: exec %s: %v", c.prefix(), argv0, err)
			}
			win.release(n)
		case wire.Exit:
			var m wire.ExitMsg
			if err := wire.Decode(t, p, &m); err != nil {
				return -1, errdefs.Unavailablef("%s: exec %s: %v", c.prefix(), argv0, err)
			}
			if m.Code < 0 || m.Code > 255 {
				return -1, errdefs.Unavailablef("%s: exec %s: %w: exit code %d", c.prefix(), argv0, wire.ErrProtocol, m.Code)
			}
			if req.OOMKilled != nil {
				*req.OOMKilled = m.OOMKilled
			}
			return m.Code, nil
		case wire.Error:
			var m wire.ErrorMsg
			if err := wire.Decode(t, p, &m); err != nil {
				return -1, errdefs.Unavailablef("%s: exec %s: %v", c.prefix(), argv0, err)
			}
			return -1, c.remoteErr(m)
		default:
			return -1, errdefs.Unavailablef("%s: exec %s: %w: unexpected %v frame", c.prefix(), argv0, wire.ErrProtocol, t)
		}
	}
}

// remoteErr gives an agent ERROR its errdefs kind. Kinds the client does not know stay
// unclassified rather than trusting the sandbox to pick any kind it likes.
func (c *Client) remoteErr(m wire.ErrorMsg) error {
	msg := fmt.Sprintf("%s: %s", c.prefix(), clip(m.Message))
	switch m.Kind {
	case wire.KindNotFound:
		return errdefs.New(errdefs.ErrNotFound, msg)
	case wire.KindPermissionDenied:
		return errdefs.New(errdefs.ErrPermissionDenied, msg)
	case wire.KindInvalidArgument:
		return errdefs.New(errdefs.ErrInvalidArgument, msg)
	case wire.KindUnavailable:
		return errdefs.New(errdefs.ErrUnavailable, msg)
	case wire.KindFailedPrecondition:
		return errdefs.New(errdefs.ErrFailedPrecondition, msg)
	}
	return errors.New(msg)
}

// clip bounds a message that came from inside the sandbox and makes it one line of
// printable text, so it can neither flood nor forge host logs.
func clip(s string) string {
	const limit = 1024
	long := len(s) > limit
	if long {
		s = s[:limit]
	}
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if long {
		s += "..."
	}
	return s
}

// sendStdin copies in to STDIN frames within the window, then sends STDIN_CLOSE. It stops
// when the window closes (the exec ended).
func sendStdin(w *wire.Writer, in io.Reader, win *window) {
	buf := make([]byte, wire.ChunkSize)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if !win.acquire(n) || w.Write(wire.Stdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			if win.open() {
				_ = w.Write(wire.StdinClose, nil)
			}
			return
		}
	}
}

// window counts stdin bytes the agent has not acknowledged.
type window struct {
	mu     sync.Mutex
	cond   *sync.Cond
	avail  int
	closed bool
}

func newWindow(n int) *window {
	w := &window{avail: n}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func (w *window) acquire(n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.avail < n && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return false
	}
	w.avail -= n
	return true
}

func (w *window) release(n int) {
	w.mu.Lock()
	w.avail += n
	w.cond.Broadcast()
	w.mu.Unlock()
}

func (w *window) open() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.closed
}

func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}
