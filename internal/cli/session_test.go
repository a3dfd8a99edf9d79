package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat"
)

func TestCLISession(t *testing.T) {
	e := newCLIEnv(t)
	// An image the host backend cannot use: the backend's error, with its kind.
	if code, _, errOut := e.run("", "session", "set", "img", "--image", "busybox"); code != 0 {
		t.Fatalf("session set --image: %s", errOut)
	}
	if code, _, errOut := e.run("", "create", "--session", "img"); code != 1 || !strings.Contains(errOut, "invalid_argument") || !strings.Contains(errOut, "host: images are not supported") {
		t.Fatalf("create with the session's unusable image: %d %s", code, errOut)
	}
	code, out, errOut := e.run("", "session", "set", "s1", "--memory", "256m", "--env", "FROM=session", "--label", "team=a", "--mode", "host")
	if code != 0 || !strings.Contains(out, "memory:  256m") || !strings.Contains(out, "mode:    host") {
		t.Fatalf("session set: %d %q %s", code, out, errOut)
	}
	// A second set changes only what it names.
	if code, _, errOut := e.run("", "session", "set", "s1", "--pids", "300", "--unset-label", "team"); code != 0 {
		t.Fatalf("session set --pids: %s", errOut)
	}
	code, out, _ = e.run("", "session", "get", "s1", "-o", "json")
	var s moat.Session
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s.Limits.MemoryBytes != 256<<20 || s.Limits.PIDs != 300 ||
		s.Env["FROM"] != "session" || len(s.Labels) != 0 || s.Mode != moat.SessionHost {
		t.Fatalf("session get: %d %s", code, out)
	}
	if code, out, _ := e.run("", "session", "ls"); code != 0 || !strings.Contains(out, `"s1"`) || !strings.Contains(out, "host") {
		t.Fatalf("session ls: %s", out)
	}

	var ids []string
	for range 2 {
		code, out, errOut := e.run("", "create", "--session", "s1")
		if code != 0 {
			t.Fatalf("create --session: %s", errOut)
		}
		ids = append(ids, strings.TrimSpace(out))
	}
	code, out, _ = e.run("", "inspect", ids[0])
	var info moat.Info
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Spec.Limits.MemoryBytes != 256<<20 ||
		info.Spec.Env["FROM"] != "session" || info.SessionID != "s1" {
		t.Fatalf("inspect a session sandbox: %s", out)
	}
	_, other, _ := e.run("", "create", "--session", "s2")
	_, loose, _ := e.run("", "create")
	other, loose = strings.TrimSpace(other), strings.TrimSpace(loose)

	// rm --session destroys exactly that session's sandboxes and prints them.
	code, out, errOut = e.run("", "rm", "--session", "s1")
	if code != 0 || len(strings.Fields(out)) != 2 || !strings.Contains(out, ids[0]) || !strings.Contains(out, ids[1]) {
		t.Fatalf("rm --session: %d %q %s", code, out, errOut)
	}
	_, out, _ = e.run("", "ls")
	for _, id := range ids {
		if strings.Contains(out, id) {
			t.Errorf("%s of session s1 still listed: %s", id, out)
		}
	}
	for _, id := range []string{other, loose} {
		if !strings.Contains(out, id) {
			t.Errorf("%s (not of session s1) is gone: %s", id, out)
		}
	}
	if code, _, errOut := e.run("", "rm"); code != 1 || !strings.Contains(errOut, "--session") {
		t.Errorf("rm without ids or --session: %d %s", code, errOut)
	}
	if code, _, errOut := e.run("", "rm", other, loose); code != 0 {
		t.Errorf("rm: %s", errOut)
	}

	// Bad input.
	if code, _, errOut := e.run("", "session", "set", "bad\x1bname", "--memory", "1g"); code != 1 || !strings.Contains(errOut, "invalid_argument") {
		t.Errorf("control character: %d %s", code, errOut)
	}
	if code, _, errOut := e.run("", "session", "set", "s3", "--backend", "nope"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Errorf("unknown backend: %d %s", code, errOut)
	}
	if code, _, errOut := e.run("", "session", "set", "s3", "--cpus", "-1"); code != 1 || !strings.Contains(errOut, "invalid_argument") {
		t.Errorf("negative cpus: %d %s", code, errOut)
	}

	if code, _, errOut := e.run("", "session", "clear", "s1"); code != 0 {
		t.Fatalf("session clear: %s", errOut)
	}
	if code, _, errOut := e.run("", "session", "get", "s1"); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Errorf("get after clear: %d %s", code, errOut)
	}
}

// TestCLISessionModeHostNeedsOptIn: without allow_unisolated, mode host is refused.
func TestCLISessionModeHostNeedsOptIn(t *testing.T) {
	e := newCLIEnv(t)
	if err := os.WriteFile(filepath.Join(e.home, "moat.toml"), []byte("[sandbox]\nbackend = \"host\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := e.run("", "session", "set", "s", "--mode", "host"); code != 1 || !strings.Contains(errOut, "permission_denied") || !strings.Contains(errOut, "allow_unisolated") {
		t.Errorf("mode host without the opt-in: %d %s", code, errOut)
	}
}
