package moat_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/store"
)

// The crash tests at every step that exists today (create is crash_test.go): a real child
// process, the test binary re-executed, is SIGKILLed in the middle of a destroy or of an
// archive upload, and the parent then opens the same store and backend state as a
// restarted moatd would, reconciles, and checks: 0 orphans, 0 lost records, every record's
// status consistent with the backend, and the sandbox still usable or removable.
// Snapshot is in backends/docker (the local backend that snapshots); fork, sync and pool
// refill do not exist yet.

// crashStep re-runs the calling test as a child with MOAT_CRASH_STEP=step and
// MOAT_CRASH_CHILD=dir, and checks that it died of SIGKILL.
func crashStep(t *testing.T, test, step string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MOAT_CRASH_CHILD="+dir, "MOAT_CRASH_STEP="+step)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s: child should die by SIGKILL, got %v:\n%s", step, err, out)
	}
	return dir
}

func killSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

// crashOpen opens the manager of dir (the child's or the restarted one), on backend b.
func crashOpen(t *testing.T, dir string, b backend.Backend) (*moat.Manager, store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dir, "moat.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: st, Sandbox: moat.SandboxConfig{AllowUnisolated: true, Backend: "host"}},
		moat.WithoutRegistered(), moat.WithBackend("host", b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(); _ = st.Close() })
	return m, st
}

// destroyCrasher kills its process around the wrapped Destroy: before it (the backend was
// never told) or after it succeeded (the record was never told).
type destroyCrasher struct {
	backend.Backend
	after bool
}

func (d destroyCrasher) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := d.Backend.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return destroyCrasherInst{inst, d.after}, nil
}

type destroyCrasherInst struct {
	backend.Instance
	after bool
}

func (d destroyCrasherInst) Destroy(ctx context.Context) error {
	if !d.after {
		killSelf()
	}
	if err := d.Instance.Destroy(ctx); err != nil {
		return err
	}
	killSelf()
	return nil
}

func TestCrashDuringDestroyLeaksNothing(t *testing.T) {
	if dir := os.Getenv("MOAT_CRASH_CHILD"); dir != "" {
		m, _ := crashOpen(t, dir, destroyCrasher{hostBackend(t, filepath.Join(dir, "host")), os.Getenv("MOAT_CRASH_STEP") == "after"})
		sb, err := m.Create(context.Background(), moat.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		err = sb.Destroy(context.Background())
		t.Fatalf("Destroy returned (%v) instead of crashing", err)
	}
	for _, step := range []string{"before", "after"} {
		t.Run(step, func(t *testing.T) {
			dir := crashStep(t, "TestCrashDuringDestroyLeaksNothing", step)
			ctx := context.Background()
			hb := hostBackend(t, filepath.Join(dir, "host"))
			m, st := crashOpen(t, dir, hb)
			// The destroy had claimed the record (status error, "being destroyed") before it
			// called the backend, so the record survives and says a destroy was asked.
			recs, err := st.List(ctx, store.Filter{IncludeDestroyed: true})
			if err != nil || len(recs) != 1 || recs[0].Status != store.StatusError || !strings.Contains(recs[0].LastError, "being destroyed") {
				t.Fatalf("after the crash want one record claimed for destroy, got %v %v", recs, err)
			}
			id := recs[0].ID
			rep, err := m.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Errors) != 0 || len(rep.Attached) != 0 {
				t.Fatalf("reconcile = %+v; want no errors and nothing re-attached", rep)
			}
			if _, err := st.Get(ctx, id); err != nil {
				t.Fatalf("record lost: %v", err)
			}
			// Either the backend destroyed it before the crash, or the orphan sweep removed a
			// sandbox whose destroy was asked: nothing is left running.
			if listed, _ := hb.(backend.Lister).List(ctx); len(listed) != 0 {
				t.Fatalf("sandbox still there after reconcile: %v (report %+v)", listed, rep)
			}
			if want := map[string]int{"before": 1, "after": 0}[step]; len(rep.Orphans) != want {
				t.Fatalf("reconcile removed %d orphans, want %d: %+v", len(rep.Orphans), want, rep)
			}
			// Whatever the record says, the caller's destroy can be repeated and finishes.
			if err := m.Destroy(ctx, id); err != nil {
				t.Fatalf("destroy after restart: %v", err)
			}
			if rec, _ := st.Get(ctx, id); rec == nil || rec.Status != store.StatusDestroyed {
				t.Fatalf("record after destroy = %v; want destroyed", rec)
			}
			if listed, _ := hb.(backend.Lister).List(ctx); len(listed) != 0 {
				t.Fatalf("sandbox leaked: %v", listed)
			}
			if rep, err := m.Reconcile(ctx); err != nil || !rep.Empty() {
				t.Fatalf("second reconcile = %+v, %v", rep, err)
			}
		})
	}
}

// atomicWrites says whether a file write that is killed midway leaves the old content or
// the new, never a prefix: the host and bwrap backends write a temporary file and rename it.
const atomicWrites = true

const (
	archiveSmall = 64 << 10
	archiveLarge = 1 << 20
)

func crashTar(t *testing.T) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range []struct {
		name string
		size int
	}{{"d/", 0}, {"d/a", archiveSmall}, {"d/b", archiveLarge}, {"d/c", 10}} {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(e.size)}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(bytes.Repeat([]byte{e.name[len(e.name)-1]}, e.size))
	}
	_ = tw.Close()
	return b.Bytes()
}

// killingReader yields r and SIGKILLs its process once n bytes were read.
type killingReader struct {
	r io.Reader
	n int
}

func (k *killingReader) Read(p []byte) (int, error) {
	if k.n <= 0 {
		killSelf()
	}
	if len(p) > k.n {
		p = p[:k.n]
	}
	n, err := k.r.Read(p)
	k.n -= n
	return n, err
}

func TestCrashDuringArchiveUploadLeaksNothing(t *testing.T) {
	if dir := os.Getenv("MOAT_CRASH_CHILD"); dir != "" {
		m, _ := crashOpen(t, dir, hostBackend(t, filepath.Join(dir, "host")))
		ctx := context.Background()
		sb, err := m.Create(ctx, moat.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.WriteFile(ctx, "/workspace/up/d/b", strings.NewReader("old"), 0); err != nil {
			t.Fatal(err)
		}
		// Killed halfway through d/b's content, while the backend is writing it.
		data := crashTar(t)
		_, err = sb.PutArchive(ctx, "/workspace/up", &killingReader{bytes.NewReader(data), 3*512 + archiveSmall + archiveLarge/2}, moat.ArchiveLimits{})
		t.Fatalf("PutArchive returned (%v) instead of crashing", err)
	}
	dir := crashStep(t, "TestCrashDuringArchiveUploadLeaksNothing", "archive")
	ctx := context.Background()
	hb := hostBackend(t, filepath.Join(dir, "host"))
	m, st := crashOpen(t, dir, hb)
	rep, err := m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := st.List(ctx, store.Filter{IncludeDestroyed: true})
	listed, _ := hb.(backend.Lister).List(ctx)
	if len(recs) != 1 || recs[0].Status != store.StatusActive || len(listed) != 1 || len(rep.Attached) != 1 || len(rep.Orphans)+len(rep.Errors)+len(rep.Lost) != 0 {
		t.Fatalf("records %v, listed %v, report %+v; want the one sandbox active and attached", recs, listed, rep)
	}
	sb, err := m.Get(ctx, recs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if err := sb.ReadFile(ctx, "/workspace/up/d/a", &a); err != nil || a.Len() != archiveSmall {
		t.Fatalf("the entry before the crash: %d bytes, %v; want it whole", a.Len(), err)
	}
	if err := sb.ReadFile(ctx, "/workspace/up/d/b", &b); err != nil {
		t.Fatalf("the file being written at the crash: %v", err)
	}
	if got := b.String(); got != "old" && b.Len() != archiveLarge {
		if atomicWrites {
			t.Fatalf("the file being written at the crash holds %d bytes: neither the old content nor the new", b.Len())
		}
		t.Logf("known gap (issue 16 §4): the file being written at the crash holds %d of %d bytes", b.Len(), archiveLarge)
	}
	// The sandbox still works, and goes away whole.
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec after restart: %+v %v", res, err)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if listed, _ := hb.(backend.Lister).List(ctx); len(listed) != 0 {
		t.Fatalf("sandbox leaked: %v", listed)
	}
}
