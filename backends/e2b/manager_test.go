package e2b_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/e2b"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/moattest"
)

// TestHandleSurvivesRestart attaches from a handle that went through JSON, as a restarted
// moatd reads it from its store, with a new client, and uses the sandbox.
func TestHandleSurvivesRestart(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	raw, err := json.Marshal(inst.Handle())
	if err != nil {
		t.Fatal(err)
	}
	var hd backend.Handle
	if err := json.Unmarshal(raw, &hd); err != nil {
		t.Fatal(err)
	}
	again, err := newClient(t, h.srv.URL, testToken).Attach(testCtx(t), hd)
	if err != nil {
		t.Fatalf("Attach after restart: %v", err)
	}
	var out strings.Builder
	code, err := again.Exec(testCtx(t), &backend.ExecRequest{Argv: []string{"echo", "back"}, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 || out.String() != "back\n" {
		t.Fatalf("exec after attach = %d %q %v", code, out.String(), err)
	}
}

// TestManagerRecreatesVanishedSandbox: a sandbox killed on E2B's side is created again
// from the stored spec by the next Reconcile, and the record says so.
func TestManagerRecreatesVanishedSandbox(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	moattest.CheckRecreate(t, moattest.Recreate{
		Name: e2b.Name,
		New:  func(t *testing.T) backend.Backend { return newClient(t, h.srv.URL, testToken) },
		Spec: moat.Spec{Workdir: "/tmp"}, // the host runner's commands see the host's root
		Vanish: func(t *testing.T, hd backend.Handle) {
			inst, err := h.b.Attach(testCtx(t), hd)
			if err != nil {
				t.Fatal(err)
			}
			if !h.fake.Vanish(sandboxID(t, inst)) {
				t.Fatal("fake has no such sandbox")
			}
		},
	})
}
