package moat_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

func fakeManager(t *testing.T) (*moat.Manager, store.Store, *fake.Backend) {
	fb := fake.New(fake.WithDescriptor(backend.Descriptor{Name: "fake", Isolation: backend.IsolationContainer}))
	st := memstore.New()
	return newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{Backend: "fake"}}, map[string]backend.Backend{"fake": fb}), st, fb
}

func TestBackendDyingMidCallLosesNothing(t *testing.T) {
	ctx := context.Background()
	m, st, fb := fakeManager(t)
	sb := mustCreate(t, ctx, m, moat.Spec{})
	// The runtime goes away during exec: the error keeps its kind, the record stays active.
	fb.SetFault(fake.OpExec, func(context.Context) error { return errdefs.Unavailablef("fake: runtime crashed") })
	if _, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("exec during outage: %v", err)
	}
	// Destroy during the outage fails and leaves the record as it was, so it can be retried.
	fb.SetFault(fake.OpDestroy, func(context.Context) error { return errdefs.Unavailablef("fake: runtime crashed") })
	if err := sb.Destroy(ctx); !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("destroy during outage: %v", err)
	}
	if rec, _ := st.Get(ctx, sb.ID()); rec.Status != store.StatusActive {
		t.Fatalf("record after failed destroy: %s", rec.Status)
	}
	fb.SetFault(fake.OpExec, nil)
	fb.SetFault(fake.OpDestroy, nil)
	if res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "back"}}); err != nil || string(res.Stdout) != "back\n" {
		t.Fatalf("exec after recovery: %q %v", res.Stdout, err)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if len(fb.IDs()) != 0 {
		t.Fatalf("sandboxes left: %v", fb.IDs())
	}
}

func TestCreateThatFailsAfterTakingEffectIsSwept(t *testing.T) {
	ctx := context.Background()
	m, st, fb := fakeManager(t)
	// The backend creates the sandbox, then the call fails (a timeout on the way back).
	fb.SetFaultAfter(fake.OpCreate, func(context.Context) error { return errdefs.Newf(errdefs.ErrDeadlineExceeded, "fake: response lost") })
	if _, err := m.Create(ctx, moat.Spec{}); !errdefs.Is(err, errdefs.KindDeadlineExceeded) {
		t.Fatalf("create: %v", err)
	}
	fb.SetFaultAfter(fake.OpCreate, nil)
	recs, _ := st.List(ctx, store.Filter{})
	if len(recs) != 1 || recs[0].Status != store.StatusError || !strings.Contains(recs[0].LastError, "response lost") {
		t.Fatalf("records = %+v", recs)
	}
	if len(fb.IDs()) != 1 {
		t.Fatalf("the fake should hold the half-created sandbox: %v", fb.IDs())
	}
	rep, err := m.Reconcile(ctx)
	if err != nil || len(rep.Orphans) != 1 || len(fb.IDs()) != 0 {
		t.Fatalf("reconcile = %+v %v; left %v", rep, err, fb.IDs())
	}
}

func TestCancelledContexts(t *testing.T) {
	m, _, fb := fakeManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Create(ctx, moat.Spec{}); !errdefs.Is(err, errdefs.KindCanceled) {
		t.Fatalf("create with cancelled ctx: %v", err)
	}
	bg := context.Background()
	sb, err := m.Create(bg, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(bg)
	ctx, cancel = context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"sleep", "30"}})
	if !errdefs.Is(err, errdefs.KindDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("exec past deadline: %v after %s", err, time.Since(start))
	}
	if fb.Calls(fake.OpExec) != 1 {
		t.Fatalf("exec calls = %d", fb.Calls(fake.OpExec))
	}
}

func TestStopStartAndExecOnStopped(t *testing.T) {
	ctx := context.Background()
	m, _, _ := fakeManager(t)
	sb := mustCreate(t, ctx, m, moat.Spec{})
	defer sb.Destroy(ctx)
	if err := sb.WriteFile(ctx, "/workspace/keep", strings.NewReader("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	sb2, _ := m.Get(ctx, sb.ID())
	if _, err := sb2.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("exec on stopped: %v", err)
	}
	if err := sb2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sb3, _ := m.Get(ctx, sb.ID())
	var buf bytes.Buffer
	if err := sb3.ReadFile(ctx, "/workspace/keep", &buf); err != nil || buf.String() != "x" {
		t.Fatalf("file after restart: %q %v", buf.String(), err)
	}
}

func TestProbeUnavailableIsExplained(t *testing.T) {
	ctx := context.Background()
	m, _, fb := fakeManager(t)
	fb.SetHealth(backend.Health{State: backend.Unavailable, Reason: "fake: cannot reach the runtime"})
	_, err := m.Create(ctx, moat.Spec{})
	if !errdefs.Is(err, errdefs.KindUnavailable) || !strings.Contains(err.Error(), "cannot reach the runtime") {
		t.Fatalf("create on unavailable backend: %v", err)
	}
	rep := m.Backends(ctx)
	if rep.Auto != "" || !strings.Contains(rep.AutoExplain, "fake: never picked by auto") || rep.Backends[0].Health.Reason != "fake: cannot reach the runtime" {
		t.Fatalf("report = %+v", rep)
	}
}

func TestReconcileLeavesOtherInstallationsAlone(t *testing.T) {
	ctx := context.Background()
	fb := fake.New()
	cfg := moat.Config{Sandbox: moat.SandboxConfig{Backend: "fake"}}
	mine := newManager(t, memstore.New(), cfg, map[string]backend.Backend{"fake": fb})
	theirs := newManager(t, memstore.New(), cfg, map[string]backend.Backend{"fake": fb})
	sb := mustCreate(t, ctx, theirs, moat.Spec{})
	own, err := mine.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID()[:9] == own.ID()[:9] {
		t.Fatalf("two stores share an id prefix: %s %s", sb.ID(), own.ID())
	}
	rep, err := mine.Reconcile(ctx)
	if err != nil || len(rep.Orphans) != 0 {
		t.Fatalf("reconcile removed another installation's sandbox: %+v %v", rep, err)
	}
	if len(fb.IDs()) != 2 {
		t.Fatalf("sandboxes = %v", fb.IDs())
	}
	if res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); err != nil || res.ExitCode != 0 {
		t.Fatalf("their sandbox after my reconcile: %v", err)
	}
}

func TestPauseSnapshotAndUnsupportedAbilities(t *testing.T) {
	ctx := context.Background()
	m, _, _ := fakeManager(t)
	sb := mustCreate(t, ctx, m, moat.Spec{})
	defer sb.Destroy(ctx)
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := sb.Info(ctx); info.Status != moat.StatusPaused {
		t.Fatalf("status after pause: %s", info.Status)
	}
	if err := sb.Stop(ctx); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("stop while paused: %v", err)
	}
	if err := sb.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.WriteFile(ctx, "/workspace/snap.txt", strings.NewReader("in the snapshot"), 0); err != nil {
		t.Fatal(err)
	}
	snap, err := sb.Snapshot(ctx, "s1")
	if err != nil || snap.Image == "" {
		t.Fatalf("snapshot = %+v %v", snap, err)
	}
	from, err := m.Create(ctx, moat.Spec{Image: snap.Image})
	if err != nil {
		t.Fatal(err)
	}
	defer from.Destroy(ctx)
	var buf bytes.Buffer
	if err := from.ReadFile(ctx, "/workspace/snap.txt", &buf); err != nil || buf.String() != "in the snapshot" {
		t.Fatalf("file in a sandbox made from the snapshot: %q %v", buf.String(), err)
	}
	if _, err := sb.ExposePort(ctx, 8080); !errdefs.Is(err, errdefs.KindUnsupported) {
		t.Fatalf("expose port on the fake: %v", err)
	}
	if _, err := sb.ExposePort(ctx, 0); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("port 0: %v", err)
	}

	// The restricted host has none of these abilities: each says so.
	hm, _, _ := hostOnly(t)
	hs, err := hm.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Destroy(ctx)
	if err := hs.Pause(ctx); !errdefs.Is(err, errdefs.KindUnsupported) {
		t.Fatalf("pause on host: %v", err)
	}
	if _, err := hs.Snapshot(ctx, "snap"); !errdefs.Is(err, errdefs.KindUnsupported) {
		t.Fatalf("snapshot on host: %v", err)
	}
	if info, _ := hs.Info(ctx); info.Status != moat.StatusActive {
		t.Fatalf("an unsupported pause must not change the status: %s", info.Status)
	}
}

func TestMaintainExpiresWhileRunning(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, st, fb := fakeManager(t)
	sb := mustCreate(t, ctx, m, moat.Spec{TTL: moat.Duration(50 * time.Millisecond)})
	done := make(chan struct{})
	go func() { m.Maintain(ctx, 20*time.Millisecond); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, _ := st.Get(context.Background(), sb.ID())
		if rec.Status == store.StatusDestroyed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox not expired by Maintain: %s", rec.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(fb.IDs()) != 0 {
		t.Fatalf("backend still has %v", fb.IDs())
	}
	cancel()
	<-done // Maintain returns when its context ends
}

// mustCreate creates a sandbox on m with spec, ending the test if it cannot.
func mustCreate(t *testing.T, ctx context.Context, m *moat.Manager, spec moat.Spec) *moat.Sandbox {
	t.Helper()
	sb, err := m.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}
