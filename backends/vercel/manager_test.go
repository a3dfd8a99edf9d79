package vercel_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/vercel"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
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
	ctx := tctx(t)
	e := newEnv(t)
	st := memstore.New()
	m, err := moat.New(moat.WithStore(st), moat.WithBackend(vercel.Name, e.b))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.Create(ctx, moat.Spec{Backend: vercel.Name, Recreate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(ctx) })
	rec, err := st.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	inst, err := e.b.Attach(ctx, rec.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !e.srv.Vanish(inst.(*vercel.Instance).Name()) {
		t.Fatal("fake has no such sandbox")
	}

	m2, err := moat.New(moat.WithStore(st), moat.WithBackend(vercel.Name, newBackend(t, e.ts.URL+"/api", testToken)))
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
