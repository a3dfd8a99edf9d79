package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	_ "github.com/moatsh/moat/backends/host"
	_ "github.com/moatsh/moat/store/sqlite"
)

// cliEnv runs moat commands the way separate processes would: each call loads the config
// file and opens the SQLite store anew.
type cliEnv struct {
	t    *testing.T
	home string
}

func newCLIEnv(t *testing.T) *cliEnv {
	home := t.TempDir()
	cfg := "[sandbox]\nbackend = \"host\"\nallow_unisolated = true\n"
	if err := os.WriteFile(filepath.Join(home, "moat.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &cliEnv{t: t, home: home}
}

func (e *cliEnv) run(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, openHook: moat.Open,
		getenv: func(k string) string {
			if k == "MOAT_HOME" {
				return e.home
			}
			return ""
		}}
	code = a.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestCLIEndToEnd(t *testing.T) {
	e := newCLIEnv(t)
	code, out, errOut := e.run("", "create", "--name", "box", "--env", "A=1", "--label", "k=v", "--memory", "256m")
	if code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if !strings.HasPrefix(id, "sb-") || strings.Contains(id, "\n") {
		t.Fatalf("create must print only the id, got %q", out)
	}
	// The next "process" sees it, by id and by name.
	if code, out, _ := e.run("", "exec", id, "--", "sh", "-c", "echo $A; exit 7"); code != 7 || out != "1\n" {
		t.Fatalf("exec exit code/output: %d %q", code, out)
	}
	if code, out, _ := e.run("hello stdin", "exec", "-i", "box", "--", "cat"); code != 0 || out != "hello stdin" {
		t.Fatalf("exec -i: %d %q", code, out)
	}
	if code, out, _ := e.run("ignored", "exec", "box", "--", "cat"); code != 0 || out != "" {
		t.Fatalf("exec without -i must not pass stdin: %d %q", code, out)
	}
	if code, _, errOut := e.run("", "exec", "box", "--", "no-such-program-moat"); code != ExitCmdNotFound || !strings.HasPrefix(errOut, "moat: not_found: ") {
		t.Fatalf("missing program: %d %q", code, errOut)
	}
	if code, _, errOut := e.run("", "exec", "nosuchbox", "--", "true"); code != ExitMoatError || !strings.Contains(errOut, "not_found") {
		t.Fatalf("unknown sandbox: %d %q", code, errOut)
	}

	// cp both ways, a file and a directory.
	local := t.TempDir()
	os.WriteFile(filepath.Join(local, "in.txt"), []byte("payload ✓"), 0o640)
	os.MkdirAll(filepath.Join(local, "tree", "sub"), 0o755)
	os.WriteFile(filepath.Join(local, "tree", "sub", "deep.txt"), []byte("deep"), 0o600)
	if code, _, errOut := e.run("", "cp", filepath.Join(local, "in.txt"), "box:/workspace/in.txt"); code != 0 {
		t.Fatalf("cp up: %s", errOut)
	}
	if code, _, errOut := e.run("", "cp", filepath.Join(local, "tree"), id+":/workspace/tree"); code != 0 {
		t.Fatalf("cp dir up: %s", errOut)
	}
	if code, out, _ := e.run("", "exec", "box", "--", "cat", "in.txt", "tree/sub/deep.txt"); code != 0 || out != "payload ✓deep" {
		t.Fatalf("uploaded content: %q", out)
	}
	back := t.TempDir()
	if code, _, errOut := e.run("", "cp", "box:/workspace/tree", back); code != 0 {
		t.Fatalf("cp dir down: %s", errOut)
	}
	if b, err := os.ReadFile(filepath.Join(back, "tree", "sub", "deep.txt")); err != nil || string(b) != "deep" {
		t.Fatalf("downloaded tree: %q %v", b, err)
	}
	if code, _, errOut := e.run("", "cp", "box:/workspace/missing", back); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("cp missing: %d %q", code, errOut)
	}

	code, out, _ = e.run("", "ls", "-o", "json")
	var infos []moat.Info
	if code != 0 || json.Unmarshal([]byte(out), &infos) != nil || len(infos) != 1 || infos[0].ID != id || infos[0].Spec.Limits.MemoryBytes != 256<<20 {
		t.Fatalf("ls -o json: %d %s", code, out)
	}
	code, out, _ = e.run("", "ls")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "box") {
		t.Fatalf("ls: %s", out)
	}
	code, out, _ = e.run("", "inspect", "box")
	var info moat.Info
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Labels["k"] != "v" || info.Status != moat.StatusActive {
		t.Fatalf("inspect: %s", out)
	}
	if code, _, errOut := e.run("", "pause", "box"); code != 1 || !strings.Contains(errOut, "unsupported") {
		t.Fatalf("pause on host: %d %q", code, errOut)
	}
	if code, _, errOut := e.run("", "port", "box", "80"); code != 1 || !strings.Contains(errOut, "unsupported") {
		t.Fatalf("port on host: %d %q", code, errOut)
	}
	if code, _, errOut := e.run("", "rm", id); code != 0 {
		t.Fatalf("rm: %s", errOut)
	}
	if code, _, errOut := e.run("", "rm", id); code != 0 {
		t.Fatalf("rm twice must succeed: %s", errOut)
	}
	if code, _, errOut := e.run("", "rm", "never-existed"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("rm unknown: %d %s", code, errOut)
	}
	if code, out, _ := e.run("", "ls", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls after rm: %s", out)
	}
}

func TestCLIRunIsOneShot(t *testing.T) {
	e := newCLIEnv(t)
	code, out, errOut := e.run("", "run", "--", "echo", "hi")
	if code != 0 || out != "hi\n" {
		t.Fatalf("run: %d %q %q", code, out, errOut)
	}
	if code, _, _ := e.run("", "run", "--", "sh", "-c", "exit 42"); code != 42 {
		t.Fatalf("run exit code %d", code)
	}
	if code, out, _ := e.run("", "ls", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("run must destroy its sandbox: %s", out)
	}
	if code, _, errOut := e.run("", "run", "--backend", "nope", "--", "true"); code != ExitMoatError || !strings.HasPrefix(errOut, "moat: not_found: ") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("unknown backend: %d %q", code, errOut)
	}
	if code, _, errOut := e.run("", "run", "--memory", "-5m", "--", "true"); code != ExitMoatError || !strings.Contains(errOut, "invalid_argument") {
		t.Fatalf("bad memory: %d %q", code, errOut)
	}
}

func TestCLIBackends(t *testing.T) {
	e := newCLIEnv(t)
	code, out, errOut := e.run("", "backends", "-o", "json")
	var rep moat.BackendReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("backends: %d %s %s", code, out, errOut)
	}
	var host *moat.BackendStatus
	for i := range rep.Backends {
		if rep.Backends[i].Name == "host" {
			host = &rep.Backends[i]
		}
	}
	if host == nil || host.Isolation != "none" || host.Health.Reason == "" || rep.Auto != "host" || !host.Auto {
		t.Fatalf("backend report: %+v", rep)
	}
	code, out, _ = e.run("", "backends")
	if code != 0 || !strings.Contains(out, "auto: host") {
		t.Fatalf("backends table: %s", out)
	}
}

func TestCLIConfigErrors(t *testing.T) {
	e := newCLIEnv(t)
	os.WriteFile(filepath.Join(e.home, "moat.toml"), []byte("[sandbox]\nbackendd = \"x\"\n"), 0o600)
	code, _, errOut := e.run("", "ls")
	if code != 1 || !strings.Contains(errOut, "sandbox.backendd") || !strings.HasPrefix(errOut, "moat: invalid_argument: ") {
		t.Fatalf("bad config: %d %q", code, errOut)
	}
	code, _, errOut = e.run("", "-c", filepath.Join(e.home, "none.toml"), "ls")
	if code != 1 || !strings.Contains(errOut, "none.toml") {
		t.Fatalf("missing -c file: %d %q", code, errOut)
	}
}

func TestExecSaysOutOfMemory(t *testing.T) {
	e := newCLIEnv(t)
	code, out, errOut := e.run("", "create", "--memory", "32m")
	if code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	defer e.run("", "destroy", id)
	code, _, errOut = e.run("", "exec", id, "--", "sh", "-c", "kill -9 $$")
	if code != 137 || strings.Contains(errOut, "out of memory") {
		t.Errorf("kill -9: %d %q; want 137 without an out-of-memory note", code, errOut)
	}
	code, _, errOut = e.run("", "exec", id, "--", "sh", "-c", "head -c 268435456 /dev/zero | tail >/dev/null")
	if code != 137 {
		t.Skipf("the memory hog was not killed here (exit %d): no memory cgroup", code)
	}
	if !strings.Contains(errOut, "moat: command killed: out of memory") {
		t.Errorf("OOM-killed exec: stderr %q; want the out-of-memory note", errOut)
	}
}
