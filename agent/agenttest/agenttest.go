// Package agenttest answers "where do tests get a moat-agent binary?": Build compiles
// cmd/moat-agent once per test process (static, CGO off) with the local Go toolchain and
// module cache, so tests and benchmarks need no network and no prior `make build`.
package agenttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/moatsh/moat/internal/testenv"
)

var (
	once  sync.Once
	built string
	err   error
	out   []byte
)

// Build returns the path of a freshly built moat-agent. It builds into a temporary file
// and renames it into <repo>/build/test/moat-agent, so concurrent test processes never see
// a half-written binary. A failed build fails t.
func Build(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		root := testenv.RepoRoot()
		dir := filepath.Join(root, "build", "test")
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return
		}
		var tmp *os.File
		if tmp, err = os.CreateTemp(dir, "moat-agent-*.tmp"); err != nil {
			return
		}
		_ = tmp.Close()
		defer os.Remove(tmp.Name())
		cmd := exec.Command("go", "build", "-trimpath", "-o", tmp.Name(), "./cmd/moat-agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err = cmd.CombinedOutput(); err != nil {
			return
		}
		built = filepath.Join(dir, "moat-agent")
		err = os.Rename(tmp.Name(), built)
	})
	if err != nil {
		t.Fatalf("agenttest: building moat-agent: %v\n%s", err, out)
	}
	return built
}
