package moat_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

// flakyBackend wraps a backend: Create fails with err while failCreate is set, and
// Descriptor can claim another isolation level, to drive routing and failover.
type flakyBackend struct {
	backend.Backend
	iso        backend.Isolation
	failCreate atomic.Pointer[error]
	creates    atomic.Int32
}

func (f *flakyBackend) Descriptor() backend.Descriptor {
	d := f.Backend.Descriptor()
	if f.iso != "" {
		d.Isolation = f.iso
		// Ranked as the real backend of that isolation would be.
		d.AutoRank = map[backend.Isolation]int{backend.IsolationContainer: backend.RankDocker,
			backend.IsolationNamespace: backend.RankBwrap}[f.iso]
	}
	return d
}

func (f *flakyBackend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	f.creates.Add(1)
	if e := f.failCreate.Load(); e != nil {
		return nil, *e
	}
	return f.Backend.Create(ctx, req)
}

func (f *flakyBackend) fail(err error) { f.failCreate.Store(&err) }

func newManager(t *testing.T, st store.Store, cfg moat.Config, backends map[string]backend.Backend) *moat.Manager {
	t.Helper()
	opts := []moat.Option{moat.WithoutRegistered()}
	for n, b := range backends {
		opts = append(opts, moat.WithBackend(n, b))
	}
	cfg.Storage = st
	m, err := moat.Open(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func hostOnly(t *testing.T) (*moat.Manager, store.Store, backend.Backend) {
	st := memstore.New()
	hb := hostBackend(t, t.TempDir())
	m := newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{AllowUnisolated: true}}, map[string]backend.Backend{"host": hb})
	return m, st, hb
}

func TestManagerLifecycle(t *testing.T) {
	ctx := context.Background()
	m, st, _ := hostOnly(t)
	sb := mustCreate(t, ctx, m, moat.Spec{Name: "one", Env: map[string]string{"GREETING": "hi"}, Labels: map[string]string{"team": "a"}})
	if !strings.HasPrefix(sb.ID(), "sb-") || sb.Backend() != "host" {
		t.Fatalf("id %q backend %q", sb.ID(), sb.Backend())
	}
	res, err := sb.Exec(ctx, moat.ExecRequest{Shell: `echo "$GREETING $1"; echo err >&2; exit 3`})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || string(res.Stdout) != "hi \n" || string(res.Stderr) != "err\n" {
		t.Fatalf("exec = %d %q %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	if err := sb.WriteFile(ctx, "notes/a.txt", strings.NewReader("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sb.ReadFile(ctx, "/workspace/notes/a.txt", &buf); err != nil || buf.String() != "data" {
		t.Fatalf("read back %q %v", buf.String(), err)
	}
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "a.txt"}, Workdir: "notes"})
	if err != nil || string(res.Stdout) != "data" {
		t.Fatalf("relative workdir exec = %q %v", res.Stdout, err)
	}
	// Missing file is NotFound but the sandbox stays active.
	if err := sb.ReadFile(ctx, "/workspace/missing", &buf); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	// Missing program: NotFound wrapping ErrCommandNotFound, and the sandbox stays active.
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"no-such-program-moat"}})
	if !errdefs.Is(err, errdefs.KindNotFound) || !errors.Is(err, moat.ErrCommandNotFound) {
		t.Fatalf("missing program: %v", err)
	}
	info, err := sb.Info(ctx)
	if err != nil || info.Status != moat.StatusActive || info.Labels["team"] != "a" || info.Spec.Workdir != "/workspace" {
		t.Fatalf("info = %+v %v", info, err)
	}
	got, err := m.Get(ctx, "one")
	if err != nil || got.ID() != sb.ID() {
		t.Fatalf("get by name: %v", err)
	}
	if _, err := m.Create(ctx, moat.Spec{Name: "one"}); !errdefs.Is(err, errdefs.KindAlreadyExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	list, err := m.List(ctx, moat.ListFilter{Labels: map[string]string{"team": "a"}})
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %v %v", list, err)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatalf("destroy twice: %v", err)
	}
	if err := m.Destroy(ctx, sb.ID()); err != nil {
		t.Fatalf("destroy by id after destroy: %v", err)
	}
	if _, err := m.Get(ctx, sb.ID()); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("get after destroy: %v", err)
	}
	rec, _ := st.Get(ctx, sb.ID())
	if rec.Status != store.StatusDestroyed {
		t.Fatalf("record status %s", rec.Status)
	}
	// The name is free again.
	if sb2, err := m.Create(ctx, moat.Spec{Name: "one"}); err != nil {
		t.Fatalf("reuse name: %v", err)
	} else {
		sb2.Destroy(ctx)
	}
}

func TestManagerRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	m, st, _ := hostOnly(t)
	bad := map[string]moat.Spec{
		"negative memory": {Limits: moat.Limits{MemoryBytes: -1}},
		"negative cpus":   {Limits: moat.Limits{CPUs: -0.5}},
		"negative pids":   {Limits: moat.Limits{PIDs: -2}},
		"relative wd":     {Workdir: "work"},
		"escaping wd":     {Workdir: "/workspace/../../etc"},
		"bad name":        {Name: "has space"},
		"bad env":         {Env: map[string]string{"1X": "y"}},
		"bad network":     {Network: "bridge"},
		"bad options":     {Options: []byte("{")},
	}
	for what, spec := range bad {
		if _, err := m.Create(ctx, spec); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: err = %v, want invalid_argument", what, err)
		}
	}
	if _, err := m.Create(ctx, moat.Spec{Backend: "nope"}); !errdefs.Is(err, errdefs.KindNotFound) || !strings.Contains(err.Error(), "host") {
		t.Errorf("unknown backend: %v (should list what exists)", err)
	}
	if _, err := m.Create(ctx, moat.Spec{Network: moat.NetworkHost}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Errorf("network host without policy: %v", err)
	}
	if recs, _ := st.List(ctx, store.Filter{IncludeDestroyed: true}); len(recs) != 0 {
		t.Fatalf("rejected specs must leave no record: %v", recs)
	}
	sb := mustCreate(t, ctx, m, moat.Spec{})
	defer sb.Destroy(ctx)
	badExec := map[string]moat.ExecRequest{
		"empty":        {},
		"both":         {Cmd: []string{"true"}, Shell: "true"},
		"empty argv0":  {Cmd: []string{""}},
		"nul":          {Cmd: []string{"echo", "a\x00b"}},
		"escaping wd":  {Cmd: []string{"true"}, Workdir: "../.."},
		"bad env":      {Cmd: []string{"true"}, Env: map[string]string{"A=B": "c"}},
		"negative cap": {Cmd: []string{"true"}, MaxOutputBytes: -1},
	}
	for what, req := range badExec {
		if _, err := sb.Exec(ctx, req); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("exec %s: err = %v, want invalid_argument", what, err)
		}
	}
	for _, p := range []string{"../../etc/passwd", "/workspace/../../etc/passwd", "/a\x00"} {
		if err := sb.WriteFile(ctx, p, strings.NewReader("x"), 0); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("write %q: %v", p, err)
		}
		if err := sb.ReadFile(ctx, p, &bytes.Buffer{}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("read %q: %v", p, err)
		}
	}
}

func TestExecOutputCapAndCancel(t *testing.T) {
	ctx := context.Background()
	m, _, _ := hostOnly(t)
	sb := mustCreate(t, ctx, m, moat.Spec{})
	defer sb.Destroy(ctx)
	// 3 MiB of output against a 1 MiB cap: the command is not blocked, output is cut.
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"head", "-c", "3145728", "/dev/zero"}})
	if err != nil || res.ExitCode != 0 || len(res.Stdout) != moat.DefaultMaxOutput || !res.StdoutTruncated || res.StderrTruncated {
		t.Fatalf("capped exec: %d bytes, truncated %v, code %d, %v", len(res.Stdout), res.StdoutTruncated, res.ExitCode, err)
	}
	// A multi-byte character straddling the cap is dropped whole.
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"printf", "ab\xe2\x9c\x93cd"}, MaxOutputBytes: 4})
	if err != nil || string(res.Stdout) != "ab" || !res.StdoutTruncated {
		t.Fatalf("utf-8 cut = %q %v", res.Stdout, err)
	}
	start := time.Now()
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"sleep", "30"}, Timeout: 200 * time.Millisecond})
	if !errdefs.Is(err, errdefs.KindDeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: %v after %s", err, time.Since(start))
	}
}

func TestRecordsSurviveANewManager(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() (*moat.Manager, store.Store) {
		st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "moat.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{AllowUnisolated: true}},
			map[string]backend.Backend{"host": hostBackend(t, filepath.Join(dir, "host"))}), st
	}
	m1, _ := open()
	sb := mustCreate(t, ctx, m1, moat.Spec{Name: "keep"})
	if err := sb.WriteFile(ctx, "f", strings.NewReader("persisted"), 0); err != nil {
		t.Fatal(err)
	}
	m2, _ := open()
	rep, err := m2.Reconcile(ctx)
	if err != nil || len(rep.Attached) != 1 || !rep.Empty() {
		t.Fatalf("reconcile = %+v %v", rep, err)
	}
	sb2, err := m2.Get(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	res, err := sb2.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "f"}})
	if err != nil || string(res.Stdout) != "persisted" {
		t.Fatalf("exec from second manager = %q %v", res.Stdout, err)
	}
	if err := sb2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLostSandboxIsRecordedOrRecreated(t *testing.T) {
	ctx := context.Background()
	m, st, hb := hostOnly(t)
	lost, err := m.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := m.Create(ctx, moat.Spec{Recreate: true})
	if err != nil {
		t.Fatal(err)
	}
	// Remove both behind moat's back.
	for _, id := range []string{lost.ID(), keep.ID()} {
		rec, _ := st.Get(ctx, id)
		inst, err := hb.Attach(ctx, rec.Handle)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	m2 := newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{AllowUnisolated: true}}, map[string]backend.Backend{"host": hb})
	rep, err := m2.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Lost) != 1 || rep.Lost[0] != lost.ID() || len(rep.Recreated) != 1 || rep.Recreated[0] != keep.ID() {
		t.Fatalf("report = %+v", rep)
	}
	rec, _ := st.Get(ctx, lost.ID())
	if rec.Status != store.StatusError || !strings.Contains(rec.LastError, "lost") {
		t.Fatalf("lost record = %s %q", rec.Status, rec.LastError)
	}
	rec, _ = st.Get(ctx, keep.ID())
	if rec.Status != store.StatusActive || !strings.Contains(rec.LastError, "recreated") {
		t.Fatalf("recreated record = %s %q", rec.Status, rec.LastError)
	}
	sb, _ := m2.Get(ctx, keep.ID())
	if res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); err != nil || res.ExitCode != 0 {
		t.Fatalf("recreated sandbox unusable: %v", err)
	}
	// Exec on the lost one says why, and Destroy still succeeds.
	lostSB, _ := m2.Get(ctx, lost.ID())
	if _, err := lostSB.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("exec on lost: %v", err)
	}
	if err := lostSB.Destroy(ctx); err != nil {
		t.Fatalf("destroy lost: %v", err)
	}
	sb.Destroy(ctx)
}

func TestVanishedDuringUseIsNotedOnTheRecord(t *testing.T) {
	ctx := context.Background()
	m, st, hb := hostOnly(t)
	sb := mustCreate(t, ctx, m, moat.Spec{})
	rec, _ := st.Get(ctx, sb.ID())
	inst, _ := hb.Attach(ctx, rec.Handle)
	inst.Destroy(ctx)
	if _, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); !errdefs.Is(err, errdefs.KindNotFound) || errors.Is(err, moat.ErrCommandNotFound) {
		t.Fatalf("exec on vanished sandbox: %v", err)
	}
	rec, _ = st.Get(ctx, sb.ID())
	if rec.Status != store.StatusError || !strings.Contains(rec.LastError, "lost") {
		t.Fatalf("record = %s %q", rec.Status, rec.LastError)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatalf("destroy after vanish: %v", err)
	}
}

func TestRoutingFailoverAndSessions(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	dir := t.TempDir()
	// Two host backends posing as docker and bwrap, so auto has a preference order.
	docker := &flakyBackend{Backend: hostBackend(t, filepath.Join(dir, "d")), iso: backend.IsolationContainer}
	bwrap := &flakyBackend{Backend: hostBackend(t, filepath.Join(dir, "b")), iso: backend.IsolationNamespace}
	m := newManager(t, st, moat.Config{}, map[string]backend.Backend{"docker": docker, "bwrap": bwrap})

	sb, err := m.Create(ctx, moat.Spec{})
	if err != nil || sb.Backend() != "docker" {
		t.Fatalf("auto picked %v (%v), want docker", sb, err)
	}
	sb.Destroy(ctx)

	docker.fail(errdefs.Unavailablef("docker: daemon went away"))
	sb, err = m.Create(ctx, moat.Spec{})
	if err != nil || sb.Backend() != "bwrap" {
		t.Fatalf("failover: %v %v", sb, err)
	}
	info, _ := sb.Info(ctx)
	if !strings.Contains(info.LastError, "daemon went away") {
		t.Fatalf("failover reason not recorded: %q", info.LastError)
	}
	sb.Destroy(ctx)

	// A non-Unavailable error does not fail over, and the record says why.
	docker.fail(errdefs.InvalidArgumentf("docker: bad image"))
	before := bwrap.creates.Load()
	if _, err := m.Create(ctx, moat.Spec{}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("err = %v", err)
	}
	if bwrap.creates.Load() != before {
		t.Fatal("failed over on a non-availability error")
	}
	recs, _ := m.List(ctx, moat.ListFilter{Status: []moat.Status{moat.StatusError}})
	if len(recs) != 1 || !strings.Contains(recs[0].LastError, "bad image") {
		t.Fatalf("error record = %+v", recs)
	}
	docker.failCreate.Store(nil)

	// Session override, stored and honoured; explicit spec backend still wins.
	if err := m.SetSessionBackend(ctx, "s1", "bwrap"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetSessionBackend(ctx, "s1", "nope"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("override to unknown backend: %v", err)
	}
	m2 := newManager(t, st, moat.Config{}, map[string]backend.Backend{"docker": docker, "bwrap": bwrap})
	sb, err = m2.Create(ctx, moat.Spec{SessionID: "s1"})
	if err != nil || sb.Backend() != "bwrap" {
		t.Fatalf("session override after restart: %v %v", sb, err)
	}
	sb.Destroy(ctx)
	sb, err = m2.Create(ctx, moat.Spec{SessionID: "s1", Backend: "docker"})
	if err != nil || sb.Backend() != "docker" {
		t.Fatalf("explicit backend vs override: %v %v", sb, err)
	}
	sb.Destroy(ctx)
	if err := m2.ClearSessionBackend(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.SessionBackend(ctx, "s1"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("cleared override: %v", err)
	}

	rep := m2.Backends(ctx)
	if rep.Auto != "docker" || len(rep.Backends) != 2 || !strings.Contains(rep.AutoExplain, "docker") {
		t.Fatalf("backend report = %+v", rep)
	}
}

func TestExpiredSandboxesAreDestroyed(t *testing.T) {
	ctx := context.Background()
	m, st, _ := hostOnly(t)
	sb := mustCreate(t, ctx, m, moat.Spec{TTL: moat.Duration(time.Millisecond)})
	time.Sleep(5 * time.Millisecond)
	rep, err := m.Reconcile(ctx)
	if err != nil || len(rep.Expired) != 1 || rep.Expired[0] != sb.ID() {
		t.Fatalf("reconcile = %+v %v", rep, err)
	}
	rec, _ := st.Get(ctx, sb.ID())
	if rec.Status != store.StatusDestroyed {
		t.Fatalf("status %s", rec.Status)
	}
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
