package daytona_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/daytona"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
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
	_, apiURL := fakeServer(t, hostBackend(t))
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
	ctx := testCtx(t)
	fake, apiURL := fakeServer(t, hostBackend(t))
	st := memstore.New()
	b := client(t, apiURL, testToken)
	m, err := moat.New(moat.WithStore(st), moat.WithBackend(daytona.Name, b))
	if err != nil {
		t.Fatal(err)
	}
	// /tmp: the host runner's commands see the host's root.
	sb, err := m.Create(ctx, moat.Spec{Backend: daytona.Name, Workdir: "/tmp", Recreate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(ctx) })
	rec, err := st.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !fake.Vanish(handleID(t, rec.Handle)) {
		t.Fatal("fake has no such sandbox")
	}

	m2, err := moat.New(moat.WithStore(st), moat.WithBackend(daytona.Name, client(t, apiURL, testToken)))
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
