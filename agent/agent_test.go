package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/agent"
	"github.com/moatsh/moat/agent/wire"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/agentd"
)

// serve starts an in-process agent server on a fresh socket and returns a client for it.
func serve(t *testing.T) *agent.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "moat-agent-test-") // t.TempDir paths can exceed sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := agentd.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &agentd.Server{Logf: t.Logf}
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &agent.Client{Socket: sock}
}

type res struct {
	code           int
	err            error
	stdout, stderr string
}

func (r res) String() string {
	return fmt.Sprintf("code %d err %v stdout %.200q stderr %.200q", r.code, r.err, r.stdout, r.stderr)
}

func run(ctx context.Context, c *agent.Client, req agent.ExecRequest) res {
	var out, errb bytes.Buffer
	req.Stdout, req.Stderr = &out, &errb
	code, err := c.Exec(ctx, &req)
	return res{code, err, out.String(), errb.String()}
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestExecBasics(t *testing.T) {
	c := serve(t)
	ctx := tctx(t)
	for _, tc := range []struct {
		argv []string
		code int
		out  string
		err  string
	}{
		{[]string{"true"}, 0, "", ""},
		{[]string{"false"}, 1, "", ""},
		{[]string{"sh", "-c", "exit 3"}, 3, "", ""},
		{[]string{"sh", "-c", "exit 255"}, 255, "", ""},
		{[]string{"sh", "-c", "kill -9 $$"}, 137, "", ""},
		{[]string{"sh", "-c", "echo out; echo err >&2"}, 0, "out\n", "err\n"},
		{[]string{"printf", `\377\376\000\200abc`}, 0, "\xff\xfe\x00\x80abc", ""},
	} {
		r := run(ctx, c, agent.ExecRequest{Argv: tc.argv})
		if r.err != nil || r.code != tc.code || r.stdout != tc.out || r.stderr != tc.err {
			t.Errorf("%q: %v; want code %d out %q err %q", tc.argv, r, tc.code, tc.out, tc.err)
		}
	}
}

func TestEnvWorkdirAndPath(t *testing.T) {
	c := serve(t)
	ctx := tctx(t)
	dir := t.TempDir()
	r := run(ctx, c, agent.ExecRequest{Argv: []string{"sh", "-c", `printf '%s|%s|' "$MOAT_X" "$HOME"; pwd`},
		Env: []string{"MOAT_X=a b=c", "HOME=/nowhere"}, Workdir: dir})
	if r.err != nil || r.stdout != "a b=c|/nowhere|"+dir+"\n" {
		t.Errorf("env/workdir: %v", r)
	}
	// The agent's own environment is the base.
	t.Setenv("MOAT_AGENT_BASE", "base")
	r = run(ctx, c, agent.ExecRequest{Argv: []string{"sh", "-c", `printf %s "$MOAT_AGENT_BASE"`}})
	if r.stdout != "base" {
		t.Errorf("base env not inherited: %v", r)
	}
	// argv[0] is looked up in the request's PATH, not the agent's.
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "moat-only-here"), []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = run(ctx, c, agent.ExecRequest{Argv: []string{"moat-only-here"}, Env: []string{"PATH=" + bin + ":/usr/bin:/bin"}})
	if r.err != nil || r.stdout != "found\n" {
		t.Errorf("lookup in request PATH: %v", r)
	}
	r = run(ctx, c, agent.ExecRequest{Argv: []string{"moat-only-here"}})
	if !errdefs.Is(r.err, errdefs.KindNotFound) {
		t.Errorf("lookup in agent PATH: %v, want NotFound", r)
	}
}

func TestStartFailures(t *testing.T) {
	c := serve(t)
	ctx := tctx(t)
	for _, tc := range []struct {
		req  agent.ExecRequest
		kind error
	}{
		{agent.ExecRequest{Argv: []string{"moat-no-such-binary", "x"}}, errdefs.ErrNotFound},
		{agent.ExecRequest{Argv: []string{"/moat/no/such/binary"}}, errdefs.ErrNotFound},
		{agent.ExecRequest{Argv: []string{"true"}, Workdir: "/moat/no/such/dir"}, errdefs.ErrNotFound},
		{agent.ExecRequest{Argv: []string{"/etc/passwd"}}, errdefs.ErrPermissionDenied},
		{agent.ExecRequest{Argv: []string{"/etc"}}, errdefs.ErrPermissionDenied},
		{agent.ExecRequest{Argv: []string{"true"}, Workdir: "/etc/passwd"}, errdefs.ErrInvalidArgument},
		{agent.ExecRequest{Argv: []string{""}}, errdefs.ErrInvalidArgument},
	} {
		r := run(ctx, c, tc.req)
		if !errors.Is(r.err, tc.kind) || r.stdout != "" || !strings.HasPrefix(r.err.Error(), "agent: ") {
			t.Errorf("%q in %q: %v; want %v", tc.req.Argv, tc.req.Workdir, r, tc.kind)
		}
		if errors.Is(r.err, agent.ErrUnreachable) {
			t.Errorf("%q: a start failure must not read as unreachable (no fallback): %v", tc.req.Argv, r.err)
		}
	}
	if r := run(ctx, c, agent.ExecRequest{Argv: []string{"moat-no-such-binary"}}); !strings.Contains(r.err.Error(), "moat-no-such-binary") {
		t.Errorf("error does not name the program: %v", r.err)
	}
}

func TestStdin(t *testing.T) {
	c := serve(t)
	ctx := tctx(t)
	// Larger than the window several times over: flow control must keep it moving.
	in := bytes.Repeat([]byte("0123456789abcdef\x00\xff"), (3*wire.StdinWindow)/18+7)
	r := run(ctx, c, agent.ExecRequest{Argv: []string{"cat"}, Stdin: bytes.NewReader(in)})
	if r.err != nil || r.code != 0 || r.stdout != string(in) {
		t.Errorf("cat of %d bytes: code %d err %v, got %d bytes", len(in), r.code, r.err, len(r.stdout))
	}
	// nil stdin reads EOF at once.
	r = run(ctx, c, agent.ExecRequest{Argv: []string{"cat"}})
	if r.err != nil || r.code != 0 || r.stdout != "" {
		t.Errorf("cat with nil stdin: %v", r)
	}
	// A command that never reads its endless input still finishes, and a KILL can still
	// reach the agent while its stdin pipe is full.
	pr := endlessInput(t)
	start := time.Now()
	r = run(ctx, c, agent.ExecRequest{Argv: []string{"sh", "-c", "sleep 0.3; echo done"}, Stdin: pr})
	if r.err != nil || r.stdout != "done\n" || time.Since(start) > 20*time.Second {
		t.Errorf("command ignoring endless stdin: %v after %v", r, time.Since(start))
	}
	pr2 := endlessInput(t)
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	r = run(cctx, c, agent.ExecRequest{Argv: []string{"sleep", "60"}, Stdin: pr2})
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("cancel while stdin is backed up: %v", r)
	}
}

func TestLargeOutput(t *testing.T) {
	c := serve(t)
	r := run(tctx(t), c, agent.ExecRequest{Argv: []string{"head", "-c", "10485760", "/dev/zero"}})
	if r.err != nil || r.code != 0 || len(r.stdout) != 10<<20 || strings.Trim(r.stdout, "\x00") != "" {
		t.Errorf("10 MiB: code %d err %v len %d", r.code, r.err, len(r.stdout))
	}
}

// pidsDead waits until none of pids is alive (missing or a zombie).
func pidsDead(pids []int, within time.Duration) []int {
	deadline := time.Now().Add(within)
	for {
		var alive []int
		for _, pid := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 && s[i+2] == 'Z' {
				continue
			}
			alive = append(alive, pid)
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lineWriter collects output and signals when n lines have arrived.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	n    int
	once sync.Once
	ch   chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Count(w.buf.String(), "\n") >= w.n {
		w.once.Do(func() { close(w.ch) })
	}
	return len(p), nil
}

func (w *lineWriter) pids(t *testing.T) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int
	for _, f := range strings.Fields(w.buf.String()) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("bad pid line %q", f)
		}
		out = append(out, pid)
	}
	return out
}

// TestCancelKillsTree cancels a command whose children include one that left the process
// group with setsid, by ctx (KILL frame) and by dropping the connection.
func TestCancelKillsTree(t *testing.T) {
	c := serve(t)
	script := `sleep 4241 & echo $!; setsid sleep 4242 & echo $!; echo $$; wait`
	for _, how := range []string{"kill", "disconnect"} {
		t.Run(how, func(t *testing.T) {
			w := &lineWriter{n: 3, ch: make(chan struct{})}
			ctx, cancel := context.WithCancel(tctx(t))
			errc := make(chan error, 1)
			cl := c
			if how == "disconnect" {
				// A client that cannot send KILL: its HELLO timeout is irrelevant, so
				// emulate by closing the raw connection after EXEC.
				errc <- nil
			}
			if how == "kill" {
				go func() {
					_, err := cl.Exec(ctx, &agent.ExecRequest{Argv: []string{"sh", "-c", script}, Stdout: w, Stderr: io.Discard})
					errc <- err
				}()
			} else {
				go rawExec(t, c.Socket, []string{"sh", "-c", script}, w, ctx)
			}
			select {
			case <-w.ch:
			case <-time.After(30 * time.Second):
				t.Fatal("command did not start")
			}
			start := time.Now()
			cancel()
			if err := <-errc; how == "kill" && !errors.Is(err, context.Canceled) {
				t.Fatalf("exec after cancel: %v", err)
			}
			if alive := pidsDead(w.pids(t), 5*time.Second); len(alive) > 0 {
				t.Fatalf("processes %v survived %s", alive, how)
			}
			t.Logf("tree dead %v after %s", time.Since(start).Round(time.Millisecond), how)
		})
	}
}

// rawExec speaks the protocol by hand and closes the connection when ctx ends, without KILL.
func rawExec(t *testing.T, sock string, argv []string, out io.Writer, ctx context.Context) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	context.AfterFunc(ctx, func() { conn.Close() })
	w, r := wire.NewWriter(conn), wire.NewReader(conn)
	_ = w.WriteJSON(wire.Hello, wire.ClientHello{Versions: []int{1}})
	if typ, _, err := r.Next(); err != nil || typ != wire.Hello {
		t.Errorf("hello: %v %v", typ, err)
		return
	}
	_ = w.WriteJSON(wire.Exec, wire.ExecRequest{Argv: argv})
	for {
		typ, p, err := r.Next()
		if err != nil {
			return
		}
		if typ == wire.Stdout {
			out.Write(p)
		}
	}
}

func TestConcurrent(t *testing.T) {
	c := serve(t)
	ctx := tctx(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := fmt.Sprintf("tok-%d", i)
			r := run(ctx, c, agent.ExecRequest{Argv: []string{"sh", "-c", `echo "$1"; echo "$1" >&2`, "sh", tok}})
			if r.err != nil || r.stdout != tok+"\n" || r.stderr != tok+"\n" {
				t.Errorf("exec %d: %v", i, r)
			}
		}()
	}
	wg.Wait()
}

// TestOutputGrace: a background child holding stdout does not hold Exec past the grace.
func TestOutputGrace(t *testing.T) {
	c := serve(t)
	start := time.Now()
	r := run(tctx(t), c, agent.ExecRequest{Argv: []string{"sh", "-c", "sleep 30 & echo hi"}})
	if r.err != nil || r.code != 0 || r.stdout != "hi\n" {
		t.Errorf("background holder: %v", r)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("exec waited %v for a background child's stdout", d)
	}
}

func TestUnreachable(t *testing.T) {
	ctx := tctx(t)
	dir, err := os.MkdirTemp("", "moat-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	check := func(name string, c *agent.Client) {
		t.Helper()
		r := run(ctx, c, agent.ExecRequest{Argv: []string{"true"}})
		if !errors.Is(r.err, agent.ErrUnreachable) {
			t.Errorf("%s: %v, want ErrUnreachable", name, r)
		}
	}
	check("missing socket", &agent.Client{Socket: filepath.Join(dir, "none.sock")})
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	check("not a socket", &agent.Client{Socket: file})

	// A stale socket: nothing listens.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	check("stale socket", &agent.Client{Socket: stale})

	// A symlink to a real agent is refused: the socket's directory belongs to the sandbox.
	real := serve(t)
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(real.Socket, link); err != nil {
		t.Fatal(err)
	}
	check("symlink", &agent.Client{Socket: link})

	// A frozen agent accepts but never answers: Exec gives up after the HELLO timeout
	// without ever sending the command.
	silent := filepath.Join(dir, "silent.sock")
	sl, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	got := make(chan []wire.Type, 1)
	go func() {
		conn, err := sl.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := wire.NewReader(conn)
		var types []wire.Type
		for {
			typ, _, err := r.Next()
			if err != nil {
				got <- types
				return
			}
			types = append(types, typ)
		}
	}()
	start := time.Now()
	check("silent", &agent.Client{Socket: silent, HelloTimeout: 200 * time.Millisecond})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("silent agent held Exec for %v", d)
	}
	if types := <-got; len(types) != 1 || types[0] != wire.Hello {
		t.Errorf("silent agent received %v, want only HELLO", types)
	}
}

func TestVersionNegotiation(t *testing.T) {
	c := serve(t)
	h, err := c.Ping(tctx(t))
	if err != nil || h.Version != wire.Version || !strings.HasPrefix(h.Agent, "moat-agent") {
		t.Fatalf("ping = %+v, %v", h, err)
	}
	conn, err := net.Dial("unix", c.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, r := wire.NewWriter(conn), wire.NewReader(conn)
	_ = w.WriteJSON(wire.Hello, wire.ClientHello{Versions: []int{99}})
	typ, p, err := r.Next()
	var m wire.ErrorMsg
	if err != nil || typ != wire.Error || wire.Decode(typ, p, &m) != nil || m.Kind != wire.KindFailedPrecondition {
		t.Errorf("hello with an unknown version: %v %q %v", typ, p, err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Errorf("connection not closed after a version mismatch: %v", err)
	}
}

// TestConnectionLost: an agent that vanishes after the command was sent is
// ErrConnectionLost (Unavailable, never a fallback); an agent-reported failure is not.
func TestConnectionLost(t *testing.T) {
	dir, err := os.MkdirTemp("", "moat-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "dying.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		r, w := wire.NewReader(conn), wire.NewWriter(conn)
		r.Next()
		w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1, Agent: "dying"})
		r.Next()
		w.WriteJSON(wire.Started, wire.StartedMsg{PID: 1})
		w.Write(wire.Stdout, []byte("partial"))
		conn.Close()
	}()
	r := run(tctx(t), &agent.Client{Socket: sock}, agent.ExecRequest{Argv: []string{"x"}})
	if !errors.Is(r.err, agent.ErrConnectionLost) || !errdefs.Is(r.err, errdefs.KindUnavailable) ||
		errors.Is(r.err, agent.ErrUnreachable) || r.stdout != "partial" {
		t.Errorf("agent died mid-exec: %v", r)
	}

	// A file that is executable but not a program: the agent reports it, the connection
	// is fine.
	c := serve(t)
	noexec := filepath.Join(dir, "garbage")
	os.WriteFile(noexec, []byte("\x01\x02\x03 not a program"), 0o755)
	r = run(tctx(t), c, agent.ExecRequest{Argv: []string{noexec}})
	if r.err == nil || errors.Is(r.err, agent.ErrConnectionLost) || errors.Is(r.err, agent.ErrUnreachable) {
		t.Errorf("exec format error: %v", r)
	}
}

// TestRunningCommandsDoNotCostThreads: each running command must not pin an agent thread,
// since threads count against a sandbox's pids limit.
func TestRunningCommandsDoNotCostThreads(t *testing.T) {
	c := serve(t)
	threads := func() int {
		ents, _ := os.ReadDir("/proc/self/task")
		return len(ents)
	}
	const n = 60
	before := threads()
	ctx, cancel := context.WithCancel(tctx(t))
	defer cancel()
	started := make(chan struct{}, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &lineWriter{n: 1, ch: make(chan struct{})}
			go func() {
				select {
				case <-w.ch:
					started <- struct{}{}
				case <-ctx.Done():
				}
			}()
			c.Exec(ctx, &agent.ExecRequest{Argv: []string{"sh", "-c", "echo up; exec sleep 30"}, Stdout: w, Stderr: io.Discard})
		}()
	}
	for range n {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("commands did not start")
		}
	}
	during := threads()
	cancel()
	wg.Wait()
	t.Logf("threads: %d before, %d with %d commands running", before, during, n)
	if during-before >= n/2 {
		t.Errorf("%d running commands added %d threads", n, during-before)
	}
}

// endlessInput is a stdin that never ends: it writes until t ends and closes it.
func endlessInput(t *testing.T) io.Reader {
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	return pr
}
