package host

import (
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/internal/ptyrun/ptytest"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/store/memstore"
)

func TestPTY(t *testing.T) {
	ptytest.Require(t)
	b := newFactory(t)(t)
	inst := backendtest.Create(t, b, &backend.CreateRequest{ID: "pty-" + strconv.Itoa(os.Getpid()), Workdir: "/workspace"})
	ptytest.Run(t, inst.(backend.PTYExecer), ptytest.Options{
		Workdir: "/workspace",
		Env:     map[string]string{"TERM": "xterm"},
		AfterCancel: func(t *testing.T, pid string) {
			n, _ := strconv.Atoi(pid)
			ptytest.WaitGone(t, n)
		},
	})
}

// TestPTYSandboxed checks the terminal gets Exec's sandbox: workdir in the private root,
// clean environment with the request's variables, limits.
func TestPTYSandboxed(t *testing.T) {
	ptytest.Require(t)
	t.Setenv("MOAT_TEST_SECRET", "hunter2")
	b, err := New(backend.Config{StateDir: t.TempDir(), Decode: func(v any) error {
		v.(*Config).MaxOpenFiles = 91
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	inst := backendtest.Create(t, b, &backend.CreateRequest{ID: "pty-env-" + strconv.Itoa(os.Getpid()), Workdir: "/workspace"})
	out := ptytest.NewBuffer()
	code, err := inst.(backend.PTYExecer).ExecPTY(context.Background(), &backend.ExecRequest{
		Argv: []string{"sh", "-c", "pwd; env; ulimit -n"}, Env: map[string]string{"GREETING": "hi"},
		Workdir: "/workspace/sub", Stdout: out, Stderr: out}, backend.WinSize{Rows: 24, Cols: 80}, nil)
	if err != nil || code != 0 {
		t.Fatalf("ExecPTY = %d, %v; output %q", code, err, out.String())
	}
	s := out.String()
	root := inst.(*Instance).m.Root
	if !strings.Contains(s, root+"/workspace/sub\r\n") {
		t.Errorf("pwd is not %s/workspace/sub: %q", root, s)
	}
	if strings.Contains(s, "hunter2") || !strings.Contains(s, "GREETING=hi") || !strings.Contains(s, "HOME="+root+"/home") {
		t.Errorf("environment not Exec's: %q", s)
	}
	if !strings.Contains(s, "91\r\n") {
		t.Errorf("open-files limit 91 not applied: %q", s)
	}
}

// TestPTYDestroyKills: Destroy ends a running terminal, and a destroyed sandbox has none.
func TestPTYDestroyKills(t *testing.T) {
	ptytest.Require(t)
	inst, err := newFactory(t)(t).Create(context.Background(), &backend.CreateRequest{ID: "pty-destroy-" + strconv.Itoa(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	ptytest.DestroyKills(t, inst, ptytest.Options{})
}

// TestManagerTerminal goes through moat.Manager: Sandbox.Terminal defaults (sh, 24x80),
// the spec's env and workdir, resize, exit code.
func TestManagerTerminal(t *testing.T) {
	ptytest.Require(t)
	ctx := context.Background()
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{AllowUnisolated: true}}, moat.WithoutRegistered(), moat.WithBackend(Name, newFactory(t)(t)))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.Create(ctx, moat.Spec{Backend: Name, Env: map[string]string{"GREETING": "hello"}, Workdir: "/work"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })

	inR, inW := io.Pipe()
	defer inW.Close()
	resize := make(chan moat.WinSize, 1)
	out := ptytest.NewBuffer()
	type res struct {
		r   moat.ExitResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := sb.Terminal(ctx, moat.TerminalRequest{Stdin: inR, Stdout: out, Resize: resize,
			Env: map[string]string{"EXTRA": "x1"}})
		done <- res{r, err}
	}()
	if _, err := io.WriteString(inW, "echo $GREETING-$EXTRA; pwd; stty size\n"); err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, regexp.MustCompile(`hello-x1\r\n`), 0, 20*time.Second)
	out.WaitFor(t, regexp.MustCompile(`/work\r\n`), 0, 20*time.Second)
	_, off := out.WaitFor(t, regexp.MustCompile(`24 80\r\n`), 0, 20*time.Second)
	resize <- moat.WinSize{Rows: 50, Cols: 132}
	for attempt := 0; ; attempt++ {
		if _, err := io.WriteString(inW, "stty size\n"); err != nil {
			t.Fatal(err)
		}
		var got string
		got, off = out.WaitFor(t, regexp.MustCompile(`([0-9]+ [0-9]+)\r\n`), off, 20*time.Second)
		if got == "50 132" {
			break
		}
		if attempt == 20 {
			t.Fatalf("size after resize %q; output %q", got, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := io.WriteString(inW, "exit 9\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.r.ExitCode != 9 {
			t.Fatalf("Terminal = %+v, %v; want exit 9", r.r, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Terminal did not return; output %q", out.String())
	}

	// Cancellation through the manager.
	cctx, cancel := context.WithCancel(ctx)
	cout := ptytest.NewBuffer()
	cdone := make(chan error, 1)
	go func() {
		_, err := sb.Terminal(cctx, moat.TerminalRequest{Cmd: []string{"sh", "-c", "echo up; exec sleep 60"}, Stdout: cout})
		cdone <- err
	}()
	cout.WaitFor(t, regexp.MustCompile(`up`), 0, 20*time.Second)
	cancel()
	if err := testenv.Returned(t, cdone, 15*time.Second, "cancelled Terminal"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Terminal: %v, want context.Canceled", err)
	}
}
