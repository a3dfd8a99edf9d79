package agent_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatsh/moat/agent"
	"github.com/moatsh/moat/agent/wire"
	"github.com/moatsh/moat/errdefs"
)

// The agent runs inside the sandbox, so everything on its side of the socket is hostile:
// these tests play a compromised agent.

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "moat-agent-test-") // t.TempDir paths can exceed sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeAgent listens on dir/name and runs script for every connection after reading the
// client's HELLO.
func fakeAgent(t *testing.T, sock string, script func(r *wire.Reader, w *wire.Writer)) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, w := wire.NewReader(c), wire.NewWriter(c)
				if _, _, err := r.Next(); err != nil {
					return
				}
				script(r, w)
			}()
		}
	}()
}

// TestSocketSwappedForSymlink: the sandbox can replace agent.sock with a symlink to any
// socket on the host at any moment; the client must never connect through it.
func TestSocketSwappedForSymlink(t *testing.T) {
	dir := tempDir(t)
	real := filepath.Join(dir, "real.sock")
	fakeAgent(t, real, func(r *wire.Reader, w *wire.Writer) {
		_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1, Agent: "real"})
	})
	decoy := filepath.Join(dir, "decoy.sock")
	var hits atomic.Int64
	fakeAgent(t, decoy, func(r *wire.Reader, w *wire.Writer) {
		hits.Add(1)
		_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1, Agent: "decoy"})
	})
	sock := filepath.Join(dir, "agent.sock")
	if err := os.Link(real, sock); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var swaps sync.WaitGroup
	swaps.Add(1)
	go func() { // the sandbox flips agent.sock between the real socket and a symlink
		defer swaps.Done()
		tmp := filepath.Join(dir, "tmp")
		for ctx.Err() == nil {
			os.Remove(tmp)
			_ = os.Symlink(decoy, tmp)
			_ = os.Rename(tmp, sock)
			os.Remove(tmp)
			_ = os.Link(real, tmp)
			_ = os.Rename(tmp, sock)
		}
	}()
	c := &agent.Client{Socket: sock}
	ok := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		h, err := c.Ping(ctx)
		if err == nil {
			ok++
			if h.Agent != "real" {
				t.Fatalf("connected to %q through a symlink", h.Agent)
			}
		} else if !errors.Is(err, agent.ErrUnreachable) {
			t.Fatalf("ping: %v", err)
		}
	}
	cancel()
	swaps.Wait()
	if n := hits.Load(); n > 0 {
		t.Errorf("the decoy behind the symlink got %d connections", n)
	}
	if ok == 0 {
		t.Error("never reached the real agent")
	}
}

// TestHostileExitCode: an exit code is a number from 0 to 255; anything else is a
// protocol error, never passed on as the command's status.
func TestHostileExitCode(t *testing.T) {
	for _, code := range []int{-1, 256, 1 << 40} {
		sock := filepath.Join(tempDir(t), "agent.sock")
		fakeAgent(t, sock, func(r *wire.Reader, w *wire.Writer) {
			_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1, Agent: "liar"})
			_, _, _ = r.Next()
			_ = w.WriteJSON(wire.Exit, wire.ExitMsg{Code: code})
		})
		r := run(tctx(t), &agent.Client{Socket: sock}, agent.ExecRequest{Argv: []string{"x"}})
		if !errdefs.Is(r.err, errdefs.KindUnavailable) || !errors.Is(r.err, wire.ErrProtocol) {
			t.Errorf("exit code %d: %v, want an Unavailable protocol error", code, r)
		}
	}
}

// TestHostileMessages: text from the agent reaches host errors and logs bounded and
// without control characters.
func TestHostileMessages(t *testing.T) {
	huge := strings.Repeat("\x1b[2J\nfake log line\r", 100000)
	check := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		msg := err.Error()
		if len(msg) > 4096 || strings.ContainsAny(msg, "\x1b\n\r") {
			t.Errorf("%s: error of %d bytes: %.300q", name, len(msg), msg)
		}
	}
	sock := filepath.Join(tempDir(t), "agent.sock")
	fakeAgent(t, sock, func(r *wire.Reader, w *wire.Writer) {
		_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: wire.KindFailedPrecondition, Message: huge})
	})
	_, err := (&agent.Client{Socket: sock}).Ping(tctx(t))
	check("hello error", err)

	sock = filepath.Join(tempDir(t), "agent.sock")
	fakeAgent(t, sock, func(r *wire.Reader, w *wire.Writer) {
		_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1, Agent: huge, Ops: []string{wire.OpExec}})
	})
	err = (&agent.Client{Socket: sock}).ReadFile(tctx(t), "/f", &strings.Builder{})
	if !errors.Is(err, agent.ErrUnreachable) {
		t.Errorf("read from an agent without read_file: %v, want ErrUnreachable", err)
	}
	check("agent name", err)

	sock = filepath.Join(tempDir(t), "agent.sock")
	fakeAgent(t, sock, func(r *wire.Reader, w *wire.Writer) {
		_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1})
		_, _, _ = r.Next()
		_ = w.WriteJSON(wire.Error, wire.ErrorMsg{Kind: wire.KindNotFound, Message: huge})
	})
	r := run(tctx(t), &agent.Client{Socket: sock}, agent.ExecRequest{Argv: []string{"x"}})
	if !errdefs.Is(r.err, errdefs.KindNotFound) {
		t.Errorf("exec error frame: %v, want NotFound", r.err)
	}
	check("exec error", r.err)
}

// guardedWriter counts writes that end after close.
type guardedWriter struct {
	mu     sync.Mutex
	closed bool
	late   int
}

// Write is slow, like a writer to a network peer: a write that is still in progress when
// Exec returns counts as late too.
func (g *guardedWriter) Write(p []byte) (int, error) {
	time.Sleep(5 * time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.late++
	}
	return len(p), nil
}

func (g *guardedWriter) close() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return g.late
}

// TestNoWritesAfterCancel: an agent that ignores KILL and keeps streaming cannot make
// Exec write to the caller's writers after Exec returned.
func TestNoWritesAfterCancel(t *testing.T) {
	defer agent.SetKillWait(100 * time.Millisecond)()
	sock := filepath.Join(tempDir(t), "agent.sock")
	fakeAgent(t, sock, func(r *wire.Reader, w *wire.Writer) {
		_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1})
		_, _, _ = r.Next()
		_ = w.WriteJSON(wire.Started, wire.StartedMsg{PID: 1})
		go func() { // read (and ignore) KILL
			for {
				if _, _, err := r.Next(); err != nil {
					return
				}
			}
		}()
		for w.Write(wire.Stdout, []byte("spam")) == nil {
		}
	})
	out := &guardedWriter{}
	ctx, cancel := context.WithTimeout(tctx(t), 200*time.Millisecond)
	defer cancel()
	_, err := (&agent.Client{Socket: sock}).Exec(ctx, &agent.ExecRequest{Argv: []string{"x"}, Stdout: out, Stderr: out})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("exec: %v, want DeadlineExceeded", err)
	}
	out.close()
	time.Sleep(50 * time.Millisecond)
	if n := out.close(); n > 0 {
		t.Errorf("%d writes to stdout after Exec returned", n)
	}
}

// slowReader yields data forever, slowly, and counts Reads that end after close.
type slowReader struct{ guardedWriter }

func (s *slowReader) Read(p []byte) (int, error) {
	n, _ := s.Write(p)
	return min(n, 100), nil
}

// TestWriteFileEarlyDone: an agent that claims success before the body ended is lying,
// and WriteFile must not go on reading the caller's reader after it returned.
func TestWriteFileEarlyDone(t *testing.T) {
	sock := filepath.Join(tempDir(t), "agent.sock")
	fakeAgent(t, sock, func(r *wire.Reader, w *wire.Writer) {
		_ = w.WriteJSON(wire.Hello, wire.ServerHello{Version: 1, Ops: []string{wire.OpWriteFile}})
		_, _, _ = r.Next()
		_ = w.WriteJSON(wire.Done, struct{}{})
		for { // swallow the body
			if _, _, err := r.Next(); err != nil {
				return
			}
		}
	})
	in := &slowReader{}
	err := (&agent.Client{Socket: sock}).WriteFile(tctx(t), "/f", in, 0o644)
	in.close()
	if !errdefs.Is(err, errdefs.KindUnavailable) || !errors.Is(err, wire.ErrProtocol) {
		t.Errorf("early DONE: %v, want an Unavailable protocol error", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := in.close(); n > 0 {
		t.Errorf("%d reads of the input after WriteFile returned", n)
	}
}
