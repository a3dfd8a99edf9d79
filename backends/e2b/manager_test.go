package e2b_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/e2b"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

// TestHandleSurvivesRestart attaches from a handle that went through JSON, as a restarted
// moatd reads it from its store, with a new client, and uses the sandbox.
func TestHandleSurvivesRestart(t *testing.T) {
	h := newHarness(t, hostRunner(t), "", e2bfake.Options{})
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
	ctx := testCtx(t)
	h := newHarness(t, hostRunner(t), "", e2bfake.Options{})
	st := memstore.New()
	m, err := moat.New(moat.WithStore(st), moat.WithBackend(e2b.Name, h.b))
	if err != nil {
		t.Fatal(err)
	}
	// /tmp: the host runner's commands see the host's root.
	sb, err := m.Create(ctx, moat.Spec{Backend: e2b.Name, Workdir: "/tmp", Recreate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(ctx) })
	rec, err := st.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	inst, err := h.b.Attach(ctx, rec.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !h.fake.Vanish(sandboxID(t, inst)) {
		t.Fatal("fake has no such sandbox")
	}

	m2, err := moat.New(moat.WithStore(st), moat.WithBackend(e2b.Name, newClient(t, h.srv.URL, testToken)))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m2.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recreated) != 1 || rep.Recreated[0] != sb.ID() {
		t.Fatalf("reconcile report = %+v; want %s recreated", rep, sb.ID())
	}
	rec, err = st.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != store.StatusActive || !strings.Contains(rec.LastError, "recreated") {
		t.Fatalf("record = %s %q; want active, recreated", rec.Status, rec.LastError)
	}
	sb2, err := m2.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	res, err := sb2.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "again"}})
	if err != nil || res.ExitCode != 0 || string(res.Stdout) != "again\n" {
		t.Fatalf("exec on the recreated sandbox = %+v %v", res, err)
	}
}
