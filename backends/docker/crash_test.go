package docker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/agent/agenttest"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/store"
	_ "github.com/moatsh/moat/store/sqlite"
)

// snapshotCrasher kills its process during a snapshot: while the commit is in flight
// ("during"), or right after it succeeded and before the caller learned of it ("after").
type snapshotCrasher struct {
	backend.Backend
	step string
}

func (c snapshotCrasher) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := c.Backend.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return snapshotCrasherInst{inst, c.step}, nil
}

type snapshotCrasherInst struct {
	backend.Instance
	step string
}

func (c snapshotCrasherInst) Snapshot(ctx context.Context, name string) (backend.Snapshot, error) {
	done := make(chan struct{})
	go func() {
		_, _ = c.Instance.(backend.Snapshotter).Snapshot(ctx, name)
		close(done)
	}()
	if c.step == "during" {
		time.Sleep(30 * time.Millisecond) // the commit request is on its way to dockerd
	} else {
		<-done
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// crashBackend is the docker backend of a crash test's parent and child: same image, agent,
// state directory and test label.
func crashBackend(t *testing.T, state, agent, run string) *Backend {
	b, err := New(Config{Image: imageForTests(), StateDir: state, Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	b.extraLabels = map[string]string{testLabel: run}
	return b
}

func imageForTests() string { return os.Getenv("MOAT_CRASH_IMAGE") }

func crashManager(t *testing.T, dir string, b backend.Backend) (*moat.Manager, store.Store) {
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: st, Sandbox: moat.SandboxConfig{Backend: Name}},
		moat.WithoutRegistered(), moat.WithBackend(Name, b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(); _ = st.Close() })
	return m, st
}

// TestCrashDuringSnapshotLeaksNothing SIGKILLs a real process (this test binary, re-run)
// during a snapshot and checks, as a restarted moatd would: after Reconcile the sandbox is
// active and re-attached, nothing is orphaned, the sandbox still runs commands, the
// snapshot image (when the commit finished) carries the sandbox's labels so it is
// findable, and a destroy leaves no container behind.
func TestCrashDuringSnapshotLeaksNothing(t *testing.T) {
	if dir := os.Getenv("MOAT_CRASH_CHILD"); dir != "" {
		env := func(k string) string { return os.Getenv(k) }
		b := crashBackend(t, env("MOAT_CRASH_STATE"), env("MOAT_CRASH_AGENT"), env("MOAT_CRASH_RUN"))
		m, _ := crashManager(t, dir, snapshotCrasher{b, env("MOAT_CRASH_STEP")})
		ctx := context.Background()
		sb, err := m.Create(ctx, moat.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = sb.Snapshot(ctx, "crash-"+env("MOAT_CRASH_RUN"))
		t.Fatalf("Snapshot returned (%v) instead of crashing", err)
	}
	probe := newTestBackend(t) // skips (or fails under MOAT_TEST_REQUIRE) without docker
	agent := agenttest.Build(t)
	for _, step := range []string{"during", "after"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			state, err := os.MkdirTemp("", "moat-cs-") // short: socket paths are limited
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(state) })
			run := randID()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDuringSnapshotLeaksNothing$", "-test.count=1")
			cmd.Env = append(os.Environ(), "MOAT_CRASH_CHILD="+dir, "MOAT_CRASH_STEP="+step, "MOAT_CRASH_STATE="+state,
				"MOAT_CRASH_AGENT="+agent, "MOAT_CRASH_RUN="+run, "MOAT_CRASH_IMAGE="+probe.cfg.Image)
			out, err := cmd.CombinedOutput()
			b := crashBackend(t, state, agent, run)
			t.Cleanup(func() { removeTestContainers(t, b, run); b.Close() })
			if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child should die by SIGKILL mid-snapshot, got %v:\n%s", err, out)
			}
			ctx := testCtx(t)
			m, st := crashManager(t, dir, b)
			rep, err := m.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			recs, _ := st.List(ctx, store.Filter{IncludeDestroyed: true})
			listed := runContainers(t, b, run) // the shared dockerd runs other tests' sandboxes too
			if len(recs) != 1 || recs[0].Status != store.StatusActive || listed != 1 ||
				len(rep.Attached) != 1 || len(rep.Orphans)+len(rep.Errors)+len(rep.Lost)+len(rep.Interrupted) != 0 {
				t.Fatalf("records %v, %d containers, report %+v; want the one sandbox active and attached, nothing else", recs, listed, rep)
			}
			sb, err := m.Get(ctx, recs[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}}); err != nil || res.ExitCode != 0 {
				t.Fatalf("exec after restart: %+v %v", res, err)
			}
			// dockerd finishes a commit whose client died. The image, if any, carries the
			// container's labels (found here by the test run's label), so whatever cleans
			// up after the sandbox's installation finds it; the container is not left
			// paused (the exec above ran).
			deadline := time.Now().Add(10 * time.Second)
			var imgs []image.Summary
			for {
				imgs, err = b.cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", testLabel+"="+run))})
				if err != nil {
					t.Fatal(err)
				}
				if len(imgs) > 0 || step == "during" || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if step == "after" && len(imgs) != 1 {
				t.Fatalf("the finished commit left %d images; want 1", len(imgs))
			}
			for _, im := range imgs {
				found := false
				for _, tag := range im.RepoTags {
					found = found || strings.HasPrefix(tag, "moat-snapshot:") && strings.HasSuffix(tag, "-crash-"+run)
				}
				if !found {
					t.Errorf("image %s %v of the run is not the snapshot asked for", im.ID, im.RepoTags)
				}
			}
			if err := sb.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
			if n := runContainers(t, b, run); n != 0 {
				t.Fatalf("%d containers leaked", n)
			}
		})
	}
}

// runContainers counts the containers of this test run (by its label), removed ones not.
func runContainers(t *testing.T, b *Backend, run string) int {
	cs, err := b.cli.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", testLabel+"="+run))})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cs {
		if c.State != "removing" {
			n++
		}
	}
	return n
}
