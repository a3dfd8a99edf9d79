package daytonafake_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/daytona/daytonafake"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/internal/testenv"
)

const token = "fake-sdk-token-1f2e3d"

func newFake(t *testing.T) (*daytonafake.Server, *httptest.Server) {
	t.Helper()
	local, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fake := daytonafake.New(daytonafake.Options{Token: token, Backend: local, ExecFiles: true, Workdir: "/tmp"})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return fake, srv
}

// TestOfficialSDK drives the fake with @daytonaio/sdk (sdktest/contract.mjs).
func TestOfficialSDK(t *testing.T) {
	dir, err := filepath.Abs("sdktest")
	if err != nil {
		t.Fatal(err)
	}
	reason := ""
	node, lerr := exec.LookPath("node")
	if lerr != nil {
		reason = "node not installed"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "@daytonaio", "sdk")); err != nil {
		reason = "sdktest/node_modules missing (run npm ci in " + dir + ")"
	}
	testenv.Require(t, "npm-sdk", reason)

	fake, srv := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "contract.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"DAYTONA_API_URL="+srv.URL+"/api",
		"DAYTONA_API_KEY="+token,
		"DAYTONA_OTEL_ENABLED=false",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("contract.mjs failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "contract: all ok") {
		t.Fatalf("contract.mjs did not finish:\n%s", out)
	}
	if ids := fake.SandboxIDs(); len(ids) != 0 {
		t.Errorf("sandboxes left after the contract: %v", ids)
	}
}

func TestWrongTokenIsRejectedLikeTheAPI(t *testing.T) {
	_, srv := newFake(t)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/sandbox", nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("wrong token: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
