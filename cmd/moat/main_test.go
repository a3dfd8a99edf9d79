package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backends/bwrap"
	"github.com/moatsh/moat/backends/docker"
	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat/backend"
)

// TestBinaryEndToEnd builds the real moat binary and drives it as a user would, one process
// per command: `moat run` on docker, bwrap and host prints hi, exit codes propagate, and a
// sandbox created by one process is usable from the next.
func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "moat")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "MOAT_HOME="+home)
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
