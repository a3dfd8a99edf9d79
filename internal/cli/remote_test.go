package cli

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/store/memstore"
)

// TestCLIRemoteMode runs the CLI against moatd's API (httptest on loopback): the same
// commands, exit codes and error kinds as embedded mode, with a bearer token.
func TestCLIRemoteMode(t *testing.T) {
	hb, err := host.New(backend.Config{StateDir: t.TempDir(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{AllowUnisolated: true}}, moat.WithoutRegistered(), moat.WithBackend("host", hb))
	if err != nil {
		t.Fatal(err)
	}
	const token = "cli-remote-secret"
	srv := httpapi.New(m, httpapi.Options{Tokens: []string{token}})
	ts := httptest.NewServer(srv)
	defer ts.Close()

	run := func(stdin, tok string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb,
			openHook: func(context.Context, moat.Config, ...moat.Option) (*moat.Manager, error) {
				t.Fatal("remote mode must not open an embedded manager")
				return nil, nil
			},
			getenv: func(k string) string {
				switch k {
				case "MOAT_SERVER":
					return ts.URL
				case "MOAT_API_TOKEN":
					return tok
				}
				return ""
			}}
		code := a.run(context.Background(), args)
		return code, out.String(), errb.String()
	}
	code, out, errOut := run("", token, "create", "--name", "r1")
	if code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if code, out, _ := run("", token, "exec", "r1", "--", "sh", "-c", "echo remote; exit 4"); code != 4 || out != "remote\n" {
		t.Fatalf("exec: %d %q", code, out)
	}
	if code, out, _ := run("piped", token, "exec", "-i", id, "--", "cat"); code != 0 || out != "piped" {
		t.Fatalf("exec -i: %d %q", code, out)
	}
	if code, _, errOut := run("", token, "exec", id, "--", "no-such-program-moat"); code != ExitCmdNotFound {
		t.Fatalf("missing program over the API: %d %q", code, errOut)
	}
	local := filepath.Join(t.TempDir(), "f.txt")
	os.WriteFile(local, []byte("over the wire"), 0o644)
	if code, _, errOut := run("", token, "cp", local, id+":/workspace/f.txt"); code != 0 {
		t.Fatalf("cp: %s", errOut)
	}
	if code, out, _ := run("", token, "exec", id, "--", "cat", "f.txt"); code != 0 || out != "over the wire" {
		t.Fatalf("cat after cp: %q", out)
	}
	if code, out, _ := run("", token, "ls"); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("ls: %s", out)
	}
	if code, _, errOut := run("", "wrong", "ls"); code != 1 || !strings.Contains(errOut, "unauthenticated") || strings.Contains(errOut, token) {
		t.Fatalf("wrong token: %d %q", code, errOut)
	}
	if code, _, errOut := run("", token, "session", "set", "s9", "host"); code != 0 {
		t.Fatalf("session set: %s", errOut)
	}
	if code, out, _ := run("", token, "session", "get", "s9"); code != 0 || !strings.Contains(out, "backend: host\n") {
		t.Fatalf("session get: %q", out)
	}
	if code, _, errOut := run("", token, "rm", id); code != 0 {
		t.Fatalf("rm: %s", errOut)
	}
	if code, _, errOut := run("", token, "inspect", id); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("inspect after rm: %d %q", code, errOut)
	}
}
