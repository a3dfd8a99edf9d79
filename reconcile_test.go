package moat_test

import (
	"context"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/store"
)

// A sandbox created while Reconcile runs (after it read the records, before it listed the
// backend) is not an orphan: its record was written before the backend was called.
func TestReconcileSparesSandboxCreatedDuringSweep(t *testing.T) {
	ctx := context.Background()
	m, st, fb := fakeManager(t)
	var created *moat.Sandbox
	fb.SetFault(fake.OpList, func(context.Context) error {
		fb.SetFault(fake.OpList, nil)
		sb, err := m.Create(ctx, moat.Spec{})
		if err != nil {
			t.Errorf("create during reconcile: %v", err)
		}
		created = sb
		return nil
	})
	rep, err := m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if created == nil {
		t.Fatal("the list hook did not run")
	}
	if len(rep.Orphans) != 0 || len(fb.IDs()) != 1 {
		t.Fatalf("reconcile removed a sandbox created during the sweep: %+v; left %v", rep, fb.IDs())
	}
	if rec, _ := st.Get(ctx, created.ID()); rec.Status != store.StatusActive {
		t.Fatalf("record: %s", rec.Status)
	}
	if _, err := created.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); err != nil {
		t.Fatalf("exec after reconcile: %v", err)
	}
}
