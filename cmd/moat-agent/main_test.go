package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/internal/testenv"
)

// TestDependencies keeps moat-agent small and static: it runs inside every local sandbox
// and is copied next to each of them. Heavy or host-only packages must never reach it.
func TestDependencies(t *testing.T) {
	deps := testenv.Deps(t, "./cmd/moat-agent", "CGO_ENABLED=0")
	forbidden := []string{
		"github.com/docker/", "github.com/moby/", "modernc.org/sqlite", "github.com/jackc/pgx",
		"github.com/prometheus/", "google.golang.org/protobuf", "go.opentelemetry.io/",
		"github.com/moatsh/moat/errdefs", // pulls net/http in
		"net/http", "crypto/tls", "runtime/cgo",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f) && (strings.HasSuffix(f, "/") || strings.HasPrefix(d, f+"/")) {
				t.Errorf("moat-agent depends on %s (forbidden: %s)", d, f)
			}
		}
		if strings.Contains(d, ".") && !strings.HasPrefix(d, "github.com/moatsh/moat/") && !strings.HasPrefix(d, "vendor/") {
			t.Errorf("moat-agent depends on third-party package %s", d)
		}
	}
}

// TestStaticBinary builds moat-agent as `make build` does and checks it has no ELF
// interpreter, so it runs in any image (busybox, distroless).
func TestStaticBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "moat-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/moat-agent")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("moat-agent has an ELF interpreter: it is dynamically linked")
		}
	}
	fi, _ := os.Stat(bin)
	t.Logf("moat-agent is %.1f MiB", float64(fi.Size())/(1<<20))
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "moat-agent ") {
		t.Errorf("moat-agent version: %q, %v", out, err)
	}
}
