package vercelfake_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/backends/vercel/vercelfake"
	"github.com/moatsh/moat/internal/testenv"
)

const (
	testToken   = "vercel-fake-test-token"
	testTeam    = "team_fake"
	testProject = "prj_fake"
)

// localBackend is the moat backend the fake runs commands with.
func localBackend(t *testing.T) backend.Backend {
	t.Helper()
	b, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startFake(t *testing.T) (*vercelfake.Server, *httptest.Server) {
	t.Helper()
	srv := vercelfake.New(vercelfake.Options{Token: testToken, TeamID: testTeam, Backend: localBackend(t)})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(srv.Close)
	return srv, ts
}

// TestOfficialSDK drives the fake with the official @vercel/sandbox SDK (sdktest/).
func TestOfficialSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	reason := ""
	if err != nil {
		reason = "node not installed"
	} else if _, err := os.Stat(filepath.Join("sdktest", "node_modules", "@vercel", "sandbox")); err != nil {
		reason = "sdktest/node_modules missing (run npm ci in backends/vercel/vercelfake/sdktest)"
	}
	testenv.Require(t, "npm-sdk", reason)

	srv, ts := startFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "contract.mjs")
	cmd.Dir = "sdktest"
	cmd.Env = append(os.Environ(),
		"VERCEL_FAKE_URL="+ts.URL+"/api",
		"VERCEL_TOKEN="+testToken,
		"VERCEL_TEAM_ID="+testTeam,
		"VERCEL_PROJECT_ID="+testProject,
		"VERCEL_SANDBOX_TELEMETRY_DISABLED=1",
		"VERCEL_TELEMETRY_DISABLED=1",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("official SDK contract failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if names := srv.SandboxNames(); len(names) != 0 {
		t.Errorf("sandboxes left after the contract deleted its own: %v", names)
	}
}
