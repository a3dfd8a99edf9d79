package e2bfake_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/internal/testenv"
)

const sdkToken = "e2b_sdk_contract_token_42"

// TestOfficialSDK drives the fake with the official e2b npm SDK (sdktest/contract.mjs). If
// the SDK cannot talk to the fake, the fake is wrong.
func TestOfficialSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	reason := ""
	if err != nil {
		reason = "node not found in PATH"
	} else if _, err := os.Stat(filepath.Join("sdktest", "node_modules", "e2b")); err != nil {
		reason = "sdktest/node_modules missing (run npm ci in backends/e2b/e2bfake/sdktest)"
	}
	testenv.Require(t, "npm-sdk", reason)

	runner, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fake := e2bfake.New(e2bfake.Options{Token: sdkToken, Backend: runner})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "contract.mjs")
	cmd.Dir = "sdktest"
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "E2B_") || strings.EqualFold(k, "http_proxy") || strings.EqualFold(k, "https_proxy") {
			continue // the SDK must reach only the fake on loopback
		}
		env = append(env, kv)
	}
	cmd.Env = append(env,
		"E2B_API_KEY="+sdkToken,
		"E2B_API_URL="+srv.URL,
		"E2B_SANDBOX_URL="+srv.URL,
		"NO_PROXY=127.0.0.1,localhost",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node contract.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if !strings.Contains(string(out), "contract: all checks passed") {
		t.Fatalf("contract did not finish:\n%s", out)
	}
	if n := fake.Requests("POST /process.Process/Start"); n == 0 {
		t.Errorf("the SDK never started a process through the fake")
	}
	if left := fake.Sandboxes(); len(left) != 0 {
		t.Errorf("sandboxes left after the SDK killed them: %v", left)
	}
}
