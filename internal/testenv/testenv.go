// Package testenv answers "may this test skip?": tests that need a runtime (docker,
// bubblewrap, a Postgres server, the test images) call Require, which skips with the reason
// when the runtime is absent, unless MOAT_TEST_REQUIRE names it. `make test` sets
// MOAT_TEST_REQUIRE so that in CI a missing runtime fails instead of hiding.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// Required reports whether MOAT_TEST_REQUIRE (comma-separated, or "all") names what.
func Required(what string) bool {
	for _, w := range strings.Split(os.Getenv("MOAT_TEST_REQUIRE"), ",") {
		w = strings.TrimSpace(w)
		if w == what || w == "all" {
			return true
		}
	}
	return false
}

// Require skips t when reason is non-empty (what is absent, and why), or fails it when what
// is required by MOAT_TEST_REQUIRE.
func Require(t testing.TB, what, reason string) {
	t.Helper()
	if reason == "" {
		return
	}
	if Required(what) {
		t.Fatalf("%s is required by MOAT_TEST_REQUIRE but unavailable: %s", what, reason)
	}
	t.Skipf("%s unavailable: %s", what, reason)
}

// DockerImage is the locally built test image (scripts/build-test-images.sh).
func DockerImage() string {
	if v := os.Getenv("MOAT_TEST_DOCKER_IMAGE"); v != "" {
		return v
	}
	return "moat-test-busybox:latest"
}

// RootfsTar returns the busybox rootfs tarball built by scripts/build-test-images.sh, or ""
// with a reason when it is missing. MOAT_TEST_ROOTFS overrides the default location
// (build/testdata/busybox-rootfs.tar at the repository root).
func RootfsTar() (path, reason string) {
	p := os.Getenv("MOAT_TEST_ROOTFS")
	if p == "" {
		p = filepath.Join(RepoRoot(), "build", "testdata", "busybox-rootfs.tar")
	}
	if _, err := os.Stat(p); err != nil {
		return "", "test rootfs missing (run scripts/build-test-images.sh): " + err.Error()
	}
	return p, ""
}

// RepoRoot returns the repository root (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// VerifyNoLeaks is a package's TestMain: it runs the tests and fails them when a goroutine
// outlives them, since every goroutine has an owner that Close (or the end of a call)
// cancels and waits for.
func VerifyNoLeaks(m *testing.M) { goleak.VerifyTestMain(m) }

// VerifyNoLeaksHTTP is VerifyNoLeaks for packages whose clients use net/http's shared
// transport: its idle keep-alive connections are the transport's own, not a leak.
func VerifyNoLeaksHTTP(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"))
}

// Deps returns `go list -deps pkg` run at the repository's root with env added, failing t
// when it fails or lists suspiciously little.
func Deps(t testing.TB, pkg string, env ...string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps %s returned %d packages: %q", pkg, len(deps), out)
	}
	return deps
}
