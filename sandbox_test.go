package moat_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

// One Sandbox handle is used from several goroutines: state changes through it and
// commands on it must not race (go test -race).
func TestSandboxHandleIsSafeForConcurrentUse(t *testing.T) {
	ctx := context.Background()
	m, _, _ := fakeManager(t)
	sb := mustCreate(t, ctx, m, moat.Spec{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			_ = sb.Pause(ctx)
			_ = sb.Resume(ctx)
		}
	}()
	for range 20 {
		_, _ = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
		_ = sb.ID() + sb.Backend()
	}
	<-done
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

// The caller gives up just as the backend finishes creating: the sandbox is removed and
// the record says why, instead of staying "creating" for as long as this process lives.
func TestCreateCancelledAfterBackendCreateLeavesNoCreatingRecord(t *testing.T) {
	m, st, fb := fakeManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fb.SetFaultAfter(fake.OpCreate, func(context.Context) error { cancel(); return nil })
	if _, err := m.Create(ctx, moat.Spec{}); !errdefs.Is(err, errdefs.KindCanceled) {
		t.Fatalf("create: %v", err)
	}
	if ids := fb.IDs(); len(ids) != 0 {
		t.Fatalf("sandboxes left: %v", ids)
	}
	recs, err := st.List(context.Background(), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Status != store.StatusError || recs[0].LastError == "" {
		t.Fatalf("records = %+v", recs)
	}
}

// Every configured default limit applies, the disk limit too.
func TestDefaultLimitsApplyToEveryField(t *testing.T) {
	ctx := context.Background()
	fb := fake.New()
	def := moat.Limits{MemoryBytes: 64 << 20, CPUs: 1.5, PIDs: 100, DiskBytes: 1 << 30}
	m := newManager(t, memstore.New(), moat.Config{Sandbox: moat.SandboxConfig{Backend: "fake", Limits: def}},
		map[string]backend.Backend{"fake": fb})
	sb := mustCreate(t, ctx, m, moat.Spec{})
	defer sb.Destroy(ctx)
	info, err := sb.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Spec.Limits != def {
		t.Fatalf("limits = %+v, want %+v", info.Spec.Limits, def)
	}
	for _, cpus := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := m.Create(ctx, moat.Spec{Limits: moat.Limits{CPUs: cpus}}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("cpus %v: %v", cpus, err)
		}
	}
}

// Telling a missing program from a vanished sandbox asks the backend for the sandbox's
// status; that call is bounded by the caller's ctx like everything else.
func TestExecNotFoundStatusCheckHonoursCtx(t *testing.T) {
	m, _, fb := fakeManager(t)
	sb := mustCreate(t, context.Background(), m, moat.Spec{})
	defer sb.Destroy(context.Background())
	fb.SetFault(fake.OpStatus, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	defer fb.SetFault(fake.OpStatus, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"no-such-program-moat"}})
		done <- err
	}()
	if err := testenv.Returned(t, done, 10*time.Second, "exec after its ctx ended"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("exec: %v", err)
	}
}
