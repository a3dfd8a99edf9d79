package ptyrun

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/limits"
	"github.com/moatsh/moat/backends/internal/ptyrun/ptytest"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
)

// hostPTY runs commands on this machine through Run, as the host backend does, minus its
// sandbox directory.
type hostPTY struct{ group *limits.Group }

func (h hostPTY) ExecPTY(ctx context.Context, req *backend.ExecRequest, size backend.WinSize, resize <-chan backend.WinSize) (int, error) {
	path, err := exec.LookPath(req.Argv[0])
	if err != nil {
		return -1, errdefs.NotFoundf("test: %v", err)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range req.Env {
		env = append(env, k+"="+v)
	}
	return Run(ctx, Cmd{Argv: req.Argv, Path: path, Dir: req.Workdir, Env: env,
		Stdin: req.Stdin, Stdout: req.Stdout, Group: h.group, Size: size, Resize: resize})
}

func TestTerminal(t *testing.T) {
	ptytest.Require(t)
	ptytest.Run(t, hostPTY{}, ptytest.Options{AfterCancel: func(t *testing.T, pid string) {
		n, _ := strconv.Atoi(pid)
		ptytest.WaitGone(t, n)
	}})
}

// TestTerminalWithLimits runs under a limits group (rlimits via the prlimit wrapper, and
// cgroups where writable), so the wrapper's argv and CLONE_INTO_CGROUP paths are covered.
func TestTerminalWithLimits(t *testing.T) {
	ptytest.Require(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		testenv.Require(t, "limits", "prlimit (util-linux) not installed")
	}
	g, err := limits.New("ptyrun-test-"+strconv.Itoa(os.Getpid()), limits.Options{
		Limits: backend.Limits{PIDs: 100}, Extra: limits.Extra{NoFile: 77}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	t.Logf("limits: %s", g.Report())
	out := ptytest.NewBuffer()
	code, err := hostPTY{g}.ExecPTY(context.Background(), &backend.ExecRequest{
		Argv: []string{"sh", "-c", "ulimit -n; tty"}, Workdir: "/", Stdout: out, Stderr: out},
		backend.WinSize{Rows: 10, Cols: 20}, nil)
	if err != nil || code != 0 {
		t.Fatalf("ExecPTY = %d, %v; output %q", code, err, out.String())
	}
	if s := out.String(); !strings.Contains(s, "77\r\n") || !strings.Contains(s, "/dev/pts/") {
		t.Fatalf("output %q lacks the nofile limit 77 or a /dev/pts terminal", s)
	}
}

func TestSignalExitCode(t *testing.T) {
	ptytest.Require(t)
	out := ptytest.NewBuffer()
	code, err := hostPTY{}.ExecPTY(context.Background(), &backend.ExecRequest{
		Argv: []string{"sh", "-c", "kill -9 $$"}, Workdir: "/", Stdout: out, Stderr: out},
		backend.WinSize{Rows: 24, Cols: 80}, nil)
	if err != nil || code != 137 {
		t.Fatalf("ExecPTY = %d, %v; want 137", code, err)
	}
}

// TestBackgroundHolderDoesNotHang: a process that keeps the terminal open after the
// command exited must not keep Run waiting for the terminal to close.
func TestBackgroundHolderDoesNotHang(t *testing.T) {
	ptytest.Require(t)
	out := ptytest.NewBuffer()
	begin := time.Now()
	code, err := hostPTY{}.ExecPTY(context.Background(), &backend.ExecRequest{
		Argv: []string{"sh", "-c", "trap '' HUP; (trap '' HUP; exec sleep 30) & echo bg=$!"}, Workdir: "/", Stdout: out, Stderr: out},
		backend.WinSize{Rows: 24, Cols: 80}, nil)
	if err != nil || code != 0 {
		t.Fatalf("ExecPTY = %d, %v; output %q", code, err, out.String())
	}
	if d := time.Since(begin); d > 15*time.Second {
		t.Fatalf("Run waited %v for a background process holding the terminal", d)
	}
	s := out.String()
	if i := strings.Index(s, "bg="); i >= 0 {
		if pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(s[i+3:], "\n", 2)[0])); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
