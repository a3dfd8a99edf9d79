package cli

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	_ "github.com/moatsh/moat/backends/daytona"
	"github.com/moatsh/moat/backends/daytona/daytonafake"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/settings"
	"github.com/moatsh/moat/store"
)

// Settings saved through the API (here: straight into the store, as moatd does) are what a
// CLI process on the same MOAT_HOME uses: `moat backends` reports daytona ready, and a
// sandbox created through it talks to the saved api_url, not the provider's public host.
func TestCLIUsesSavedSettings(t *testing.T) {
	e := newCLIEnv(t)
	local, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	df := daytonafake.New(daytonafake.Options{Token: "saved-key", Backend: local, Workdir: "/tmp", ExecFiles: true})
	srv := httptest.NewServer(df)
	t.Cleanup(func() { srv.Close(); df.Close() })

	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(e.home, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = settings.Save(ctx, st, settings.NewKeyring(filepath.Join(e.home, "settings.key")), "daytona", map[string]string{"token": "saved-key", "api_url": srv.URL + "/api"})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := e.run("", "backends", "-o", "json")
	if code != 0 {
		t.Fatalf("backends: %d %s", code, errOut)
	}
	var rep struct {
		Backends []struct {
			Name   string `json:"name"`
			Health struct {
				State  string `json:"state"`
				Reason string `json:"reason"`
			} `json:"health"`
		} `json:"backends"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	var state string
	for _, b := range rep.Backends {
		if b.Name == "daytona" {
			state = b.Health.State + " " + b.Health.Reason
		}
	}
	if !strings.HasPrefix(state, "ready") {
		t.Fatalf("daytona in the CLI: %q, want ready from the saved settings", state)
	}
	code, out, errOut = e.run("", "create", "--backend", "daytona")
	if code != 0 {
		t.Fatalf("create on daytona: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if code, out, errOut := e.run("", "exec", id, "--", "echo", "via saved url"); code != 0 || out != "via saved url\n" {
		t.Fatalf("exec in the next process: %d %q %s", code, out, errOut)
	}
	if code, _, errOut := e.run("", "rm", id); code != 0 {
		t.Fatalf("rm: %s", errOut)
	}
	// Rotating the key keeps the settings usable by the next process.
	if code, _, errOut := e.run("", "settings", "rotate-key"); code != 0 {
		t.Fatalf("rotate-key: %s", errOut)
	}
	if code, out, errOut := e.run("", "backends", "-o", "json"); code != 0 || !strings.Contains(out, `"auto"`) {
		t.Fatalf("backends after rotation: %d %s", code, errOut)
	}
	if code, _, errOut := e.run("", "create", "--backend", "daytona"); code != 0 {
		t.Fatalf("create after rotation: %d %s", code, errOut)
	}
}
