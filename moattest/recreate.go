package moattest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

// Recreate describes a backend whose sandboxes a test can make vanish behind moat's back
// (a provider reaping one), for CheckRecreate.
type Recreate struct {
	// Name is the backend's registered name.
	Name string
	// New returns a fresh backend; the second call stands for a restarted moatd.
	New func(t *testing.T) backend.Backend
	// Spec is the base spec (Backend and Recreate are set by CheckRecreate).
	Spec moat.Spec
	// Vanish removes the sandbox with this handle on the backend's side.
	Vanish func(t *testing.T, h backend.Handle)
}

// CheckRecreate proves the manager's recreate-from-spec path on r: a sandbox created with
// Spec.Recreate vanishes, a new manager on the same store reconciles, the report and the
// record say "recreated", and the recreated sandbox runs commands.
func CheckRecreate(t *testing.T, r Recreate) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := memstore.New()
	m, err := moat.Open(context.Background(), moat.Config{Storage: st}, moat.WithoutRegistered(), moat.WithBackend(r.Name, r.New(t)))
	if err != nil {
		t.Fatal(err)
	}
	spec := r.Spec
	spec.Backend, spec.Recreate = r.Name, true
	sb, err := m.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	rec, err := st.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	r.Vanish(t, rec.Handle)

	m2, err := moat.Open(context.Background(), moat.Config{Storage: st}, moat.WithoutRegistered(), moat.WithBackend(r.Name, r.New(t)))
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
	if rec, err = st.Get(ctx, sb.ID()); err != nil {
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
