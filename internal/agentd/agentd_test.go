package agentd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/agent/wire"
)

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2", "PATH=/bin"}, []string{"B=x=y", "C=3", "A="})
	if strings.Join(got, ",") != "A=,B=x=y,PATH=/bin,C=3" {
		t.Errorf("mergeEnv = %q", got)
	}
	if v, ok := getenv(got, "B"); !ok || v != "x=y" {
		t.Errorf("getenv B = %q %v", v, ok)
	}
	if _, ok := getenv(got, "NOPE"); ok {
		t.Error("getenv of a missing key")
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "prog")
	noexec := filepath.Join(dir, "data")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(noexec, []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "data2"), []byte("x"), 0o644)
	kind := func(err error) string {
		var se *startError
		if errors.As(err, &se) {
			return se.kind
		}
		return ""
	}
	if p, err := lookPath("prog", "/nonexistent:"+dir, "/"); err != nil || p != exe {
		t.Errorf("PATH search = %q, %v", p, err)
	}
	if p, err := lookPath("./prog", "", dir); err != nil || p != exe {
		t.Errorf("relative path = %q, %v", p, err)
	}
	if p, err := lookPath("prog", ".", dir); err != nil || p != exe {
		t.Errorf("relative PATH entry = %q, %v", p, err)
	}
	if _, err := lookPath("data2", dir, "/"); kind(err) != wire.KindNotFound {
		t.Errorf("non-executable in PATH: %v, want not found (as execvp skips it)", err)
	}
	if _, err := lookPath(noexec, "", "/"); kind(err) != wire.KindPermissionDenied {
		t.Errorf("non-executable path: %v", err)
	}
	if _, err := lookPath(dir, "", "/"); kind(err) != wire.KindPermissionDenied {
		t.Errorf("directory: %v", err)
	}
	if _, err := lookPath("nope", dir, "/"); kind(err) != wire.KindNotFound || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing: %v", err)
	}
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "moat-agent 1 protocol [1]") {
		t.Errorf("version: %d %q", code, out.String())
	}
	if code := Main(nil, &out, &errb); code != 2 {
		t.Errorf("no args: %d", code)
	}
	if code := Main([]string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code := Main([]string{"serve", "-socket", "/nonexistent/dir/a.sock"}, &out, &errb); code != 1 {
		t.Errorf("serve on an impossible path: %d", code)
	}
}
