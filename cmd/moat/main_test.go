package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/backends/bwrap"
	"github.com/moatsh/moat/backends/daytona/daytonafake"
	"github.com/moatsh/moat/backends/docker"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat/backend"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildBinary builds the moat binary once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moat-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "moat")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// runBinary runs bin with args and extra environment, returning its exit code and output.
func runBinary(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("moat %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// TestBinaryDaytonaThroughFake runs `moat run --backend daytona` against the in-repo
// Daytona fake, configured only through DAYTONA_API_URL and DAYTONA_API_KEY, as a user of
// a self-hosted Daytona would.
func TestBinaryDaytonaThroughFake(t *testing.T) {
	bin := buildBinary(t)
	local, err := host.New(backend.Config{StateDir: t.TempDir(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	const token = "dtn-e2e-secret-token"
	ts := httptest.NewServer(daytonafake.New(daytonafake.Options{Token: token, Backend: local, ExecFiles: true}))
	defer ts.Close()
	env := []string{"MOAT_HOME=" + t.TempDir(), "DAYTONA_API_URL=" + ts.URL + "/api", "DAYTONA_API_KEY=" + token}
	code, out, errOut := runBinary(t, bin, env, "run", "--backend", "daytona", "--", "echo", "hi")
	if code != 0 || out != "hi\n" {
		t.Fatalf("moat run --backend daytona: %d %q %q", code, out, errOut)
	}
	code, out, _ = runBinary(t, bin, env, "backends", "-o", "json")
	if code != 0 || !strings.Contains(out, `"name": "daytona"`) || strings.Contains(out, token) {
		t.Fatalf("backends must show daytona and never its token:\n%s", out)
	}
	wrong := append(env[:2:2], "DAYTONA_API_KEY=wrong-token")
	code, _, errOut = runBinary(t, bin, wrong, "run", "--backend", "daytona", "--", "true")
	// The probe fails first, so the router refuses with the provider's answer.
	if code != 125 || !strings.Contains(errOut, "401") || strings.Contains(errOut, "wrong-token") {
		t.Fatalf("wrong key: %d %q", code, errOut)
	}
}

// TestBinaryEndToEnd builds the real moat binary and drives it as a user would, one process
// per command: `moat run` on docker, bwrap and host prints hi, exit codes propagate, and a
// sandbox created by one process is usable from the next.
func TestBinaryEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	home := t.TempDir()
	rootfs, rootfsReason := testenv.RootfsTar()
	cfg := fmt.Sprintf(`[sandbox]
allow_unisolated = true

[backends.docker]
image = %q

[backends.bwrap]
rootfs = %q
`, testenv.DockerImage(), rootfs)
	if err := os.WriteFile(filepath.Join(home, "moat.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	moat := func(args ...string) (int, string, string) {
		return runBinary(t, bin, []string{"MOAT_HOME=" + home}, args...)
	}

	probe := func(b backend.Backend) string {
		h := b.(backend.Prober).Probe(context.Background())
		if h.State == backend.Unavailable {
			return h.Reason
		}
		return ""
	}
	db, err := docker.New(docker.Config{Image: testenv.DockerImage()})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := bwrap.New(backend.Config{StateDir: t.TempDir(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]func() (what, reason string){
		"docker": func() (string, string) { return "docker", probe(db) },
		"bwrap": func() (string, string) {
			if rootfsReason != "" {
				return "bwrap", rootfsReason
			}
			return "bwrap", probe(bb)
		},
		"host": func() (string, string) { return "host", "" },
	}
	for _, name := range []string{"docker", "bwrap", "host"} {
		t.Run(name, func(t *testing.T) {
			what, reason := reasons[name]()
			testenv.Require(t, what, reason)
			if code, out, errOut := moat("run", "--backend", name, "--", "echo", "hi"); code != 0 || out != "hi\n" {
				t.Fatalf("moat run: %d %q %q", code, out, errOut)
			}
			if code, _, errOut := moat("run", "--backend", name, "--", "sh", "-c", "exit 3"); code != 3 {
				t.Fatalf("exit code: %d %q", code, errOut)
			}
			code, out, errOut := moat("create", "--backend", name, "--memory", "128m")
			if code != 0 {
				t.Fatalf("create: %d %q", code, errOut)
			}
			id := strings.TrimSpace(out)
			defer moat("rm", id)
			if code, _, errOut := moat("exec", id, "--", "sh", "-c", "echo persisted > state.txt"); code != 0 {
				t.Fatalf("exec 1: %q", errOut)
			}
			if code, out, errOut := moat("exec", id, "--", "cat", "state.txt"); code != 0 || out != "persisted\n" {
				t.Fatalf("exec from the next process: %d %q %q", code, out, errOut)
			}
			if code, out, _ := moat("inspect", id); code != 0 || !strings.Contains(out, `"backend": "`+name+`"`) {
				t.Fatalf("inspect: %s", out)
			}
			if code, _, errOut := moat("rm", id); code != 0 {
				t.Fatalf("rm: %q", errOut)
			}
		})
	}
	code, out, _ := moat("backends")
	for _, name := range []string{"docker", "bwrap", "host", "vercel", "daytona", "e2b"} {
		if !strings.Contains(out, name) {
			t.Errorf("moat backends does not list %s:\n%s", name, out)
		}
	}
	if code != 0 || !strings.Contains(out, "auto: ") {
		t.Fatalf("moat backends: %d\n%s", code, out)
	}
	if code, out, _ := moat("version"); code != 0 || !strings.HasPrefix(out, "moat ") {
		t.Fatalf("version: %q", out)
	}
}
