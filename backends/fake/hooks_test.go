package fake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
)

func create(t *testing.T, b *fake.Backend, id string) backend.Instance {
	t.Helper()
	inst, err := b.Create(context.Background(), &backend.CreateRequest{ID: id, Workdir: "/w"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { inst.Destroy(context.Background()) })
	return inst
}

func run(inst backend.Instance, ctx context.Context, argv ...string) (int, string, error) {
	var out bytes.Buffer
	code, err := inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Workdir: "/w", Stdout: &out, Stderr: &out})
	return code, out.String(), err
}

func TestFaultBeforeFailsWithoutEffect(t *testing.T) {
	b := fake.New(fake.WithFault(fake.OpCreate, func(context.Context) error {
		return errdefs.Unavailablef("fake: daemon down")
	}))
	_, err := b.Create(context.Background(), &backend.CreateRequest{ID: "x"})
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("want the fault's Unavailable error, got %v", err)
	}
	if ids := b.IDs(); len(ids) != 0 || b.Calls(fake.OpCreate) != 1 {
		t.Fatalf("a before-fault must leave nothing: ids %v, calls %d", ids, b.Calls(fake.OpCreate))
	}
	b.SetFault(fake.OpCreate, nil)
	create(t, b, "y")
	if got := b.Calls(fake.OpCreate); got != 2 {
		t.Errorf("Calls(create) = %d, want 2", got)
	}
}

func TestFaultAfterKeepsEffect(t *testing.T) {
	b := fake.New()
	b.SetFaultAfter(fake.OpCreate, func(context.Context) error { return errors.New("fake: connection reset") })
	if _, err := b.Create(context.Background(), &backend.CreateRequest{ID: "orphan"}); err == nil {
		t.Fatal("want the after-fault's error")
	}
	listed, err := b.List(context.Background())
	if err != nil || len(listed) != 1 || listed[0].ID != "orphan" {
		t.Fatalf("the sandbox must exist although Create failed: %+v, %v", listed, err)
	}
	inst, err := b.Attach(context.Background(), listed[0].Handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFaultBlocksUntilCtx(t *testing.T) {
	b := fake.New()
	inst := create(t, b, "block")
	b.SetFault(fake.OpExec, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := run(inst, ctx, "true"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked exec: want DeadlineExceeded, got %v", err)
	}
	b.SetFault(fake.OpExec, nil)
	if code, _, err := run(inst, context.Background(), "true"); err != nil || code != 0 {
		t.Fatalf("after clearing the fault: %d %v", code, err)
	}
}

func TestVanish(t *testing.T) {
	b := fake.New()
	inst := create(t, b, "v")
	h := inst.Handle()
	done := make(chan int, 1)
	go func() { code, _, _ := run(inst, context.Background(), "sleep", "60"); done <- code }()
	time.Sleep(20 * time.Millisecond)
	if !b.Vanish("v") {
		t.Fatal("Vanish found nothing")
	}
	select {
	case code := <-done:
		if code != 137 {
			t.Errorf("running exec of a vanished sandbox: exit %d, want 137", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("running exec survived Vanish")
	}
	if st, err := inst.Status(context.Background()); st != backend.StatusGone || err != nil {
		t.Errorf("Status = %q, %v; want gone", st, err)
	}
	if _, _, err := run(inst, context.Background(), "true"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Exec: want NotFound, got %v", err)
	}
	if _, err := b.Attach(context.Background(), h); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach: want NotFound, got %v", err)
	}
	if b.Vanish("v") {
		t.Error("second Vanish found something")
	}
}

func TestStopAndPauseRefuseExec(t *testing.T) {
	b := fake.New()
	inst := create(t, b, "s")
	done := make(chan int, 1)
	go func() {
		code, _, _ := run(inst, context.Background(), "sh", "-c", "sleep 60; echo not reached")
		done <- code
	}()
	time.Sleep(20 * time.Millisecond)
	if err := inst.(backend.Stopper).Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 128+15 {
			t.Errorf("exec running during Stop: exit %d, want 143", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end the running exec")
	}
	if _, _, err := run(inst, context.Background(), "true"); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("Exec while stopped: want FailedPrecondition, got %v", err)
	}
	if err := inst.(backend.Pauser).Pause(context.Background()); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("Pause while stopped: want FailedPrecondition, got %v", err)
	}
	if err := inst.(backend.Stopper).Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := inst.(backend.Pauser).Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(inst, context.Background(), "true"); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("Exec while paused: want FailedPrecondition, got %v", err)
	}
}

func TestWithCommand(t *testing.T) {
	b := fake.New(
		fake.WithCommand("git", func(ctx context.Context, req *backend.ExecRequest) (int, error) {
			in, _ := io.ReadAll(req.Stdin)
			_, err := io.WriteString(req.Stdout, strings.Join(req.Argv, ",")+"|"+req.Workdir+"|"+req.Env["G"]+"|"+string(in)+"\n")
			return 7, err
		}),
		fake.WithCommand("echo", func(ctx context.Context, req *backend.ExecRequest) (int, error) {
			_, err := io.WriteString(req.Stdout, "overridden\n")
			return 0, err
		}),
	)
	inst := create(t, b, "c")
	var out bytes.Buffer
	code, err := inst.Exec(context.Background(), &backend.ExecRequest{
		Argv: []string{"/usr/bin/git", "status"}, Env: map[string]string{"G": "g"}, Workdir: "/w",
		Stdin: strings.NewReader("in"), Stdout: &out, Stderr: io.Discard,
	})
	if err != nil || code != 7 || out.String() != "/usr/bin/git,status|/w|g|in\n" {
		t.Fatalf("direct: %d %v %q", code, err, out.String())
	}
	code, got, err := run(inst, context.Background(), "sh", "-c", `cd /tmp && G=x git log; printf "code %s\\n" $?; echo hi`)
	if err != nil || code != 0 || got != "git,log|/tmp|x|\ncode 7\noverridden\n" {
		t.Fatalf("from sh: %d %v %q", code, err, got)
	}
}

func TestCreateOptionsAndImages(t *testing.T) {
	b := fake.New()
	if _, err := b.Create(context.Background(), &backend.CreateRequest{ID: "o", Options: json.RawMessage(`{"x":1}`)}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("unknown options: want InvalidArgument, got %v", err)
	}
	if _, err := b.Create(context.Background(), &backend.CreateRequest{ID: "i", Image: fake.SnapshotImagePrefix + "nope"}); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("unknown snapshot image: want NotFound, got %v", err)
	}
	if _, err := b.Attach(context.Background(), backend.Handle{Backend: "docker", Version: 1, State: []byte(`{"id":"x"}`)}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("foreign handle: want InvalidArgument, got %v", err)
	}
	if ids := b.IDs(); len(ids) != 0 {
		t.Errorf("failed creates left %v", ids)
	}
}

func TestRegistered(t *testing.T) {
	factory, ok := backend.Lookup(fake.Name)
	if !ok {
		t.Fatal("fake is not registered")
	}
	dir := t.TempDir()
	decode := func(health string) func(any) error {
		return func(v any) error {
			return json.Unmarshal([]byte(`{"Health":"`+health+`","Reason":"testing"}`), v)
		}
	}
	b1, err := factory(backend.Config{StateDir: dir, Decode: decode("")})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := b1.Create(context.Background(), &backend.CreateRequest{ID: "r", Workdir: "/w"})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	// A second factory call on the same state dir (a restarted manager) attaches.
	b2, err := factory(backend.Config{StateDir: dir, Decode: decode("degraded")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Attach(context.Background(), inst.Handle()); err != nil {
		t.Errorf("attach through a second factory call: %v", err)
	}
	if h := b2.(backend.Prober).Probe(context.Background()); h.State != backend.Degraded || !strings.HasPrefix(h.Reason, "fake: ") {
		t.Errorf("Probe = %+v, want degraded with a fake: reason", h)
	}
	other, err := factory(backend.Config{StateDir: t.TempDir(), Decode: decode("")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Attach(context.Background(), inst.Handle()); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("attach from another state dir: want NotFound, got %v", err)
	}
	if _, err := factory(backend.Config{StateDir: dir, Decode: decode("bogus")}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("bad health: want InvalidArgument, got %v", err)
	}
}
