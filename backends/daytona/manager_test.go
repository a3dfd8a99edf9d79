package daytona_test

import (
	"encoding/json"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/daytona"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/moattest"
)

func handleID(t *testing.T, h backend.Handle) string {
	t.Helper()
	var st struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(h.State, &st); err != nil || st.ID == "" {
		t.Fatalf("handle state %s: %v", h.State, err)
	}
	return st.ID
}

// TestHandleSurvivesRestart attaches from a handle that went through JSON, as a restarted
// moatd reads it from its store, with a new client, and uses the sandbox.
func TestHandleSurvivesRestart(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	raw, err := json.Marshal(inst.Handle())
	if err != nil {
		t.Fatal(err)
	}
	var h backend.Handle
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	again, err := client(t, apiURL, testToken).Attach(testCtx(t), h)
	if err != nil {
		t.Fatalf("Attach after restart: %v", err)
	}
	if code, out, _, err := run(testCtx(t), again, "echo", "back"); err != nil || code != 0 || out != "back\n" {
		t.Fatalf("exec after attach = %d %q %v", code, out, err)
	}
}

// TestManagerRecreatesVanishedSandbox: a sandbox deleted on Daytona's side is created
// again from the stored spec by the next Reconcile, and the record says so.
func TestManagerRecreatesVanishedSandbox(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	moattest.CheckRecreate(t, moattest.Recreate{
		Name: daytona.Name,
		New:  func(t *testing.T) backend.Backend { return client(t, apiURL, testToken) },
		Spec: moat.Spec{Workdir: "/tmp"}, // the host runner's commands see the host's root
		Vanish: func(t *testing.T, h backend.Handle) {
			if !fake.Vanish(handleID(t, h)) {
				t.Fatal("fake has no such sandbox")
			}
		},
	})
}
