package docker

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/versions"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/internal/ptyrun/ptytest"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/store/memstore"
)

func TestPTY(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hostPID bool
	}{
		{"HostKill", true},
		// Cancellation through a second exec inside the container (remote daemons,
		// sandboxed runtimes).
		{"InContainerKill", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBackend(t)
			b.hostPID = tc.hostPID
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			inst, err := b.Create(ctx, backendtest.CreateRequest(t, testenv.DockerImage()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
			noSize := ""
			if v := b.cli.ClientVersion(); versions.LessThan(v, "1.42") {
				noSize = "docker: API " + v + " has no exec ConsoleSize: the size is set just after the start"
			}
			ptytest.Run(t, inst.(backend.PTYExecer), ptytest.Options{
				NoSizeAtStart: noSize,
				Workdir:       backendtest.Workdir,
				Env:           map[string]string{"TERM": "xterm"},
				AfterCancel:   func(t *testing.T, pid string) { waitGoneInContainer(t, inst, pid) },
			})
		})
	}
}

// TestManagerTerminal runs a terminal through moat.Manager on docker (`moat shell`).
func TestManagerTerminal(t *testing.T) {
	b := newTestBackend(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New()}, moat.WithoutRegistered(), moat.WithBackend(Name, b))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.Create(ctx, moat.Spec{Backend: Name, Env: map[string]string{"GREETING": "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	out := ptytest.NewBuffer()
	res, err := sb.Terminal(ctx, moat.TerminalRequest{Stdout: out, Size: moat.WinSize{Rows: 33, Cols: 101},
		Stdin: strings.NewReader("echo $GREETING-$((6*7)); stty size; tty; exit 4\n")})
	if err != nil {
		t.Fatalf("Terminal: %v; output %q", err, out.String())
	}
	s := out.String()
	if res.ExitCode != 4 || !strings.Contains(s, "hello-42\r\n") || !strings.Contains(s, "33 101\r\n") || !strings.Contains(s, "/dev/pts/") {
		t.Fatalf("Terminal exit %d, output %q; want exit 4, hello-42, 33 101, /dev/pts/", res.ExitCode, s)
	}
}

// waitGoneInContainer waits until pid (as the container sees it) is gone or a zombie.
func waitGoneInContainer(t *testing.T, inst backend.Instance, pid string) {
	t.Helper()
	var last string
	for range 50 {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// A fixed script; the pid is passed as $1.
		code, err := inst.Exec(ctx, &backend.ExecRequest{
			Argv:   []string{"sh", "-c", `cat "/proc/$1/stat" 2>/dev/null || echo gone`, "sh", pid},
			Stdout: &out, Stderr: &out})
		cancel()
		if err != nil || code != 0 {
			t.Fatalf("checking pid %s: %d %v %q", pid, code, err, out.String())
		}
		last = out.String()
		if strings.Contains(last, "gone") || strings.Contains(last, ") Z ") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("process %s still alive in the container after cancel: %q", pid, last)
}
