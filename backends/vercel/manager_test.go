package vercel_test

import (
	"encoding/json"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/vercel"
	"github.com/moatsh/moat/moattest"
)

// TestHandleSurvivesRestart attaches from a handle that went through JSON, as a restarted
// moatd reads it from its store, and uses the sandbox.
func TestHandleSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	inst := e.create(t)
	raw, err := json.Marshal(inst.Handle())
	if err != nil {
		t.Fatal(err)
	}
	var h backend.Handle
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	again, err := newBackend(t, e.ts.URL+"/api", testToken).Attach(tctx(t), h)
	if err != nil {
		t.Fatalf("Attach after restart: %v", err)
	}
	if code, out, _, err := run(tctx(t), again, nil, "echo", "back"); err != nil || code != 0 || out != "back\n" {
		t.Fatalf("exec after attach = %d %q %v", code, out, err)
	}
}

// TestManagerRecreatesVanishedSandbox: a sandbox deleted on Vercel's side is created again
// from the stored spec by the next Reconcile, and the record says so.
func TestManagerRecreatesVanishedSandbox(t *testing.T) {
	e := newEnv(t)
	moattest.CheckRecreate(t, moattest.Recreate{
		Name: vercel.Name,
		New:  func(t *testing.T) backend.Backend { return newBackend(t, e.ts.URL+"/api", testToken) },
		Vanish: func(t *testing.T, h backend.Handle) {
			inst, err := e.b.Attach(tctx(t), h)
			if err != nil {
				t.Fatal(err)
			}
			if !e.srv.Vanish(inst.(*vercel.Instance).Name()) {
				t.Fatal("fake has no such sandbox")
			}
		},
	})
}
