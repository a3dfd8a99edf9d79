package moat_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	_ "github.com/moatsh/moat/store/sqlite"
)

// crashingBackend wraps a backend and SIGKILLs its own process right after the wrapped
// Create succeeded: the moment between "backend created" and "record updated".
type crashingBackend struct{ backend.Backend }

func (c crashingBackend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := c.Backend.Create(ctx, req)
	if err == nil {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
	return inst, err
}

func hostBackend(t testing.TB, stateDir string) backend.Backend {
	b, err := host.New(backend.Config{StateDir: stateDir, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCrashBetweenCreateAndRecordLeaksNothing kills a real process in the middle of Create
// and checks that the next manager to open the store removes the sandbox the dead process
// left behind and marks its record.
func TestCrashBetweenCreateAndRecordLeaksNothing(t *testing.T) {
	if os.Getenv("MOAT_CRASH_CHILD") != "" {
		crashChild(t)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenCreateAndRecordLeaksNothing$")
	cmd.Env = append(os.Environ(), "MOAT_CRASH_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child should die by SIGKILL mid-create, got %v:\n%s", err, out)
	}

	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.List(ctx, store.Filter{IncludeDestroyed: true})
	if err != nil || len(recs) != 1 || recs[0].Status != store.StatusCreating {
		t.Fatalf("after the crash want one creating record, got %v %v", recs, err)
	}
	hb := hostBackend(t, filepath.Join(dir, "host"))
	listed, err := hb.(backend.Lister).List(ctx)
	if err != nil || len(listed) != 1 || listed[0].ID != recs[0].ID {
		t.Fatalf("the crashed create should have left its sandbox %s behind: %v %v", recs[0].ID, listed, err)
	}

	m, err := moat.Open(context.Background(), moat.Config{Storage: st, Sandbox: moat.SandboxConfig{AllowUnisolated: true}}, moat.WithoutRegistered(), moat.WithBackend("host", hb))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Interrupted) != 1 || len(rep.Orphans) != 1 {
		t.Fatalf("reconcile report = %+v; want one interrupted create and one orphan removed", rep)
	}
	if listed, _ := hb.(backend.Lister).List(ctx); len(listed) != 0 {
		t.Fatalf("sandbox leaked: %v", listed)
	}
	rec, _ := st.Get(ctx, recs[0].ID)
	if rec.Status != store.StatusError || rec.LastError == "" {
		t.Fatalf("record = %s %q; want error with a reason", rec.Status, rec.LastError)
	}
	if _, err := m.Get(ctx, rec.ID); err != nil {
		t.Fatalf("the record must stay visible: %v", err)
	}
	// A second reconcile finds nothing more to do.
	if rep, err := m.Reconcile(ctx); err != nil || !rep.Empty() {
		t.Fatalf("second reconcile = %+v, %v", rep, err)
	}
}

func crashChild(t *testing.T) {
	dir := os.Getenv("MOAT_CRASH_CHILD")
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: st, Sandbox: moat.SandboxConfig{AllowUnisolated: true, Backend: "host"}}, moat.WithoutRegistered(), moat.WithBackend("host", crashingBackend{hostBackend(t, filepath.Join(dir, "host"))}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Create(ctx, moat.Spec{})
	t.Fatalf("Create returned (%v) instead of crashing", errdefs.KindOf(err))
}
