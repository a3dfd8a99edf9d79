// Package agentd answers "what runs inside a sandbox to start commands fast?": the
// moat-agent server. It listens on a unix socket and, per connection, runs one command
// with the argv, env and workdir it is given, streaming stdio as frames of the protocol in
// docs/agent-protocol.md (package agent/wire). It imports only the standard library, agent/wire
// and internal/proctree, so cmd/moat-agent builds into a small static binary.
package agentd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moatsh/moat/agent/wire"
	"github.com/moatsh/moat/internal/oomcount"
	"github.com/moatsh/moat/internal/proctree"
)

// Version names this build of the agent in its HELLO.
var Version = "moat-agent 1"

// outputGrace is how long the server waits, after the process was reaped, for something
// it started to close stdout and stderr: the grace `docker exec` gives too.
const outputGrace = 2 * time.Second

// handshakeTimeout bounds how long a connection may take to send HELLO and EXEC.
const handshakeTimeout = 30 * time.Second

// Server serves the agent protocol. The zero value serves with the process environment.
type Server struct {
	// Environ is the base environment of every command (request variables override it);
	// nil means os.Environ() at the time of each exec.
	Environ []string
	// Logf, when set, receives one line per connection-level failure.
	Logf func(format string, args ...any)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen removes a stale socket at path and listens there. The socket is made 0600 and
// given to the owner of its directory, so that an unprivileged moat on the host that owns
// the bind-mounted directory can connect to an agent running as root inside.
func Listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		_ = os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("agentd: listen: %w", err)
	}
	_ = os.Chmod(path, 0o600)
	if fi, err := os.Stat(filepath.Dir(path)); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != uint32(os.Geteuid()) {
			_ = os.Chown(path, int(st.Uid), int(st.Gid))
		}
	}
	return ln, nil
}

// Serve accepts connections until ctx ends or ln fails; each connection is served in its
// own goroutine. Ending ctx closes ln and every open connection (which kills their
// commands).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("agentd: accept: %w", err)
		}
		s.track(c, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.track(c, false)
			s.ServeConn(c)
		}()
	}
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// ServeConn serves one connection (one operation) and closes it.
func (s *Server) ServeConn(c net.Conn) {
	defer c.Close()
	r := wire.NewReader(c)
	w := wire.NewWriter(c)
	_ = c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	t, p, err := r.Next()
	if err != nil || t != wire.Hello {
		s.logf("agentd: handshake: %v %v", t, err)
		return
	}
	var hello wire.ClientHello
	if err := wire.Decode(t, p, &hello); err != nil {
		s.logf("agentd: %v", err)
		return
	}
	v := wire.Choose(hello.Versions, wire.Versions)
	if v == 0 {
		_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: wire.KindFailedPrecondition,
			Message: fmt.Sprintf("agent speaks protocol versions %v, client %v", wire.Versions, hello.Versions)})
		return
	}
	if err := w.WriteJSON(wire.Hello, wire.ServerHello{Version: v, Agent: Version,
		Ops: []string{wire.OpExec, wire.OpReadFile, wire.OpWriteFile}}); err != nil {
		return
	}
	t, p, err = r.Next()
	if err != nil {
		return // the client gave up after HELLO (a probe, or it timed out): nothing to do
	}
	switch t {
	case wire.Exec:
	case wire.ReadFile, wire.WriteFile:
		var req wire.FileRequest
		if err := wire.Decode(t, p, &req); err != nil {
			_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: wire.KindInvalidArgument, Message: err.Error()})
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		var err error
		if t == wire.ReadFile {
			err = readFile(w, req.Path)
		} else {
			err = writeFile(r, req.Path, req.Mode)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		_ = w.WriteJSON(wire.Done, struct{}{})
		return
	default:
		s.logf("agentd: unexpected %v frame", t)
		return
	}
	var req wire.ExecRequest
	if err := wire.Decode(t, p, &req); err != nil {
		_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: wire.KindInvalidArgument, Message: err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.exec(c, r, w, &req)
}

// startError is a failure to start a command, with its wire kind.
type startError struct{ kind, msg string }

func (e *startError) Error() string { return e.msg }

// writeError answers err on w: a startError with its own kind, any other as unavailable.
func writeError(w *wire.Writer, err error) {
	var se *startError
	if !errors.As(err, &se) {
		se = &startError{wire.KindUnavailable, err.Error()}
	}
	_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: se.kind, Message: se.msg})
}

func (s *Server) environ(extra []string) []string {
	base := s.Environ
	if base == nil {
		base = os.Environ()
	}
	return mergeEnv(base, extra)
}

// mergeEnv returns base with the variables of extra added or overriding, in base's order
// followed by new ones.
func mergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	idx := map[string]int{}
	for _, kv := range append(append([]string(nil), base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// defaultPath is what runc uses when a process has no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath resolves file like execvp against the command's PATH (not the agent's), with
// relative entries and relative paths taken from cwd.
func lookPath(file, pathEnv, cwd string) (string, error) {
	abs := func(p string) string {
		if filepath.IsAbs(p) || cwd == "" {
			return p
		}
		return filepath.Join(cwd, p)
	}
	if strings.Contains(file, "/") {
		fi, err := os.Stat(abs(file))
		switch {
		case err != nil && errors.Is(err, os.ErrNotExist):
			return "", &startError{wire.KindNotFound, fmt.Sprintf("exec: %q: no such file or directory", file)}
		case err != nil:
			return "", &startError{wire.KindPermissionDenied, fmt.Sprintf("exec: %q: %v", file, errors.Unwrap(err))}
		case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
			return "", &startError{wire.KindPermissionDenied, fmt.Sprintf("exec: %q: permission denied", file)}
		}
		return abs(file), nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := abs(filepath.Join(dir, file))
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &startError{wire.KindNotFound, fmt.Sprintf("exec: %q: executable file not found in $PATH", file)}
}

// start starts req, returning the process and the parent's ends of its pipes.
func (s *Server) start(req *wire.ExecRequest) (*process, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, &startError{wire.KindInvalidArgument, "empty argv"}
	}
	env := s.environ(req.Env)
	if req.Workdir != "" {
		fi, err := os.Stat(req.Workdir)
		switch {
		case err != nil && errors.Is(err, os.ErrNotExist):
			return nil, &startError{wire.KindNotFound, fmt.Sprintf("chdir to cwd %q: no such file or directory", req.Workdir)}
		case err != nil:
			return nil, &startError{wire.KindPermissionDenied, fmt.Sprintf("chdir to cwd %q: %v", req.Workdir, errors.Unwrap(err))}
		case !fi.IsDir():
			return nil, &startError{wire.KindInvalidArgument, fmt.Sprintf("chdir to cwd %q: not a directory", req.Workdir)}
		}
	}
	pathEnv, ok := getenv(env, "PATH")
	if !ok {
		pathEnv = defaultPath
	}
	cwd := req.Workdir
	if cwd == "" {
		cwd, _ = os.Getwd()
	}
	path, err := lookPath(req.Argv[0], pathEnv, cwd)
	if err != nil {
		return nil, err
	}
	p := &process{}
	var closeOnErr []*os.File
	defer func() {
		for _, f := range closeOnErr {
			_ = f.Close()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			closeOnErr = append(closeOnErr, r, w)
		}
		return
	}
	attr := &os.ProcAttr{Dir: req.Workdir, Env: env, Files: make([]*os.File, 3),
		Sys: &syscall.SysProcAttr{Setsid: true}}
	var childIn, childOut, childErr *os.File
	if req.Stdin {
		if childIn, p.stdin, err = pipe(); err != nil {
			return nil, &startError{wire.KindUnavailable, err.Error()}
		}
	} else if childIn, err = os.Open(os.DevNull); err != nil {
		return nil, &startError{wire.KindUnavailable, err.Error()}
	} else {
		closeOnErr = append(closeOnErr, childIn)
	}
	if p.stdout, childOut, err = pipe(); err != nil {
		return nil, &startError{wire.KindUnavailable, err.Error()}
	}
	if p.stderr, childErr, err = pipe(); err != nil {
		return nil, &startError{wire.KindUnavailable, err.Error()}
	}
	attr.Files[0], attr.Files[1], attr.Files[2] = childIn, childOut, childErr
	proc, err := os.StartProcess(path, req.Argv, attr)
	if err != nil {
		kind := wire.KindUnavailable
		switch {
		case errors.Is(err, syscall.ENOENT):
			kind = wire.KindNotFound
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			kind = wire.KindPermissionDenied
		}
		return nil, &startError{kind, fmt.Sprintf("exec: %q: %v", req.Argv[0], errors.Unwrap(err))}
	}
	closeOnErr = nil
	_ = childIn.Close()
	_ = childOut.Close()
	_ = childErr.Close()
	p.proc = proc
	return p, nil
}

// process is a started command.
type process struct {
	proc                  *os.Process
	stdin, stdout, stderr *os.File // parent ends; stdin is nil without input

	mu     sync.Mutex
	reaped bool
}

// kill stops and kills the process's tree unless it was reaped already (its pid could be
// reused then).
func (p *process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		proctree.Kill(p.proc.Pid, nil)
	}
}

func (s *Server) exec(c net.Conn, r *wire.Reader, w *wire.Writer, req *wire.ExecRequest) {
	oomBefore, oomBeforeOK := oomcount.Own()
	p, err := s.start(req)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := w.WriteJSON(wire.Started, wire.StartedMsg{PID: p.proc.Pid}); err != nil {
		p.kill()
	}

	// Output pumps: they drain the pipes even when the client is gone, so the process
	// never blocks on a full pipe while it is being killed.
	var pumps sync.WaitGroup
	pump := func(f *os.File, t wire.Type) {
		defer pumps.Done()
		buf := make([]byte, wire.ChunkSize)
		broken := false
		for {
			n, err := f.Read(buf)
			if n > 0 && !broken {
				if w.Write(t, buf[:n]) != nil {
					broken = true
				}
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump(p.stdout, wire.Stdout)
	go pump(p.stderr, wire.Stderr)

	var in *stdinQueue
	if p.stdin != nil {
		in = newStdinQueue()
		go in.run(p.stdin, w)
	}
	finished := make(chan struct{})
	go func() { // frames from the client
		for {
			t, payload, err := r.Next()
			select {
			case <-finished:
				return
			default:
			}
			if err != nil {
				p.kill() // the client is gone: nobody wants the result
				in.close()
				return
			}
			switch t {
			case wire.Stdin:
				if in == nil || !in.push(payload) {
					s.logf("agentd: stdin beyond the window or without stdin: killing")
					p.kill()
					_ = c.Close()
					return
				}
			case wire.StdinClose:
				in.close()
			case wire.Kill:
				p.kill()
			default:
				s.logf("agentd: unexpected %v frame during exec", t)
				p.kill()
				_ = c.Close()
				return
			}
		}
	}()

	awaitExit(p.proc.Pid)
	st, werr := p.proc.Wait()
	p.mu.Lock()
	p.reaped = true
	p.mu.Unlock()
	// Stdout and stderr end when the last holder closes them; something the command left
	// running may hold them, so wait a bounded time, as docker does.
	pumped := make(chan struct{})
	go func() { pumps.Wait(); close(pumped) }()
	select {
	case <-pumped:
	case <-time.After(outputGrace):
		_ = p.stdout.Close()
		_ = p.stderr.Close()
		<-pumped
	}
	close(finished)
	_ = p.stdout.Close()
	_ = p.stderr.Close()
	in.close()
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
	if werr != nil {
		_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: wire.KindUnavailable, Message: "wait: " + werr.Error()})
		return
	}
	code := exitCode(st)
	msg := wire.ExitMsg{Code: code}
	if code == 128+int(syscall.SIGKILL) {
		after, afterOK := oomcount.Own()
		msg.OOMKilled = oomcount.OOMKilled(code, oomBefore, oomBeforeOK, after, afterOK)
	}
	_ = w.WriteJSON(wire.Exit, msg)
}

// exitCode is the status as a shell reports it: 128+signal for a killed process.
func exitCode(st *os.ProcessState) int {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// stdinQueue holds stdin frames between the frame reader (which must never block) and
// the pipe writer (which blocks while the process does not read). The client's window
// bounds it.
type stdinQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	chunks  [][]byte
	pending int
	closed  bool
}

func newStdinQueue() *stdinQueue {
	q := &stdinQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues a copy of p; false when the client overran its window.
func (q *stdinQueue) push(p []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true // input after close is dropped (the process is gone or stdin ended)
	}
	if q.pending+len(p) > wire.StdinWindow {
		return false
	}
	q.pending += len(p)
	q.chunks = append(q.chunks, append([]byte(nil), p...))
	q.cond.Signal()
	return true
}

// close ends the input once the queued chunks are written. It accepts a nil queue.
func (q *stdinQueue) close() {
	if q == nil {
		return
	}
	q.mu.Lock()
	q.closed = true
	q.cond.Signal()
	q.mu.Unlock()
}

// run writes queued chunks to f, acknowledging each, and closes f at the end of input.
func (q *stdinQueue) run(f *os.File, w *wire.Writer) {
	defer f.Close()
	broken := false
	for {
		q.mu.Lock()
		for len(q.chunks) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.chunks) == 0 {
			q.mu.Unlock()
			return
		}
		c := q.chunks[0]
		q.chunks = q.chunks[1:]
		q.mu.Unlock()
		if !broken {
			if _, err := f.Write(c); err != nil {
				broken = true // the process closed its stdin: discard the rest, still ack
			}
		}
		q.mu.Lock()
		q.pending -= len(c)
		q.mu.Unlock()
		_ = w.Write(wire.StdinAck, wire.Ack(len(c)))
	}
}
