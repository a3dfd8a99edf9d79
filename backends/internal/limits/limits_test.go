package limits

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
)

var testEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}

func newGroup(t *testing.T, o Options) *Group {
	t.Helper()
	id := "limits-test-" + strconv.Itoa(os.Getpid()) + "-" + strings.ReplaceAll(t.Name(), "/", "_")
	g, err := New(id, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return g
}

func sh(t *testing.T, g *Group, script string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := Run(ctx, Cmd{Argv: []string{"sh", "-c", script}, Path: "/bin/sh", Dir: t.TempDir(),
		Env: testEnv, Stdout: &out, Stderr: &errb, Group: g})
	if err != nil {
		t.Fatalf("run %q: %v", script, err)
	}
	return code, out.String(), errb.String()
}

// requireApplied skips (or fails in CI) when this machine cannot enforce limit.
func requireApplied(t *testing.T, g *Group, limit string) {
	t.Helper()
	reason := ""
	if !g.Report().IsApplied(limit) {
		reason = limit + " limit not enforceable here: " + g.Report().String()
	}
	testenv.Require(t, "limits", reason)
}

func TestMemoryLimitKillsAllocator(t *testing.T) {
	g := newGroup(t, Options{Limits: backend.Limits{MemoryBytes: 64 << 20}})
	requireApplied(t, g, "memory")
	t.Logf("report: %s", g.Report())
	// Under the limit the same pipeline works, so a failure below is the limit's doing.
	code, out, stderr := sh(t, g, "head -c 1048576 /dev/zero | tail | wc -c")
	if code != 0 || strings.TrimSpace(out) != "1048576" {
		t.Fatalf("small allocation: code %d out %q stderr %q", code, out, stderr)
	}
	// tail buffers its whole (newline-free) input: 200 MiB cannot fit in 64 MiB.
	code, out, stderr = sh(t, g, "head -c 209715200 /dev/zero | tail | wc -c")
	if code == 0 && strings.TrimSpace(out) == "209715200" {
		t.Fatalf("200 MiB allocation succeeded under a 64 MiB limit (out %q)", out)
	}
	t.Logf("big allocation: code %d out %q stderr %q", code, out, stderr)
}

func TestPIDsLimitStopsForking(t *testing.T) {
	g := newGroup(t, Options{Limits: backend.Limits{PIDs: 8}})
	requireApplied(t, g, "pids")
	// Bounded: at most 3 (then 40) short sleeps; Close kills leftovers.
	code, _, stderr := sh(t, g, "for i in 1 2 3; do sleep 1 & done; wait")
	if code != 0 {
		t.Fatalf("3 children under pids=8 failed: code %d stderr %q", code, stderr)
	}
	code, _, stderr = sh(t, g, "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait")
	if code == 0 {
		t.Fatalf("40 children under pids=8 succeeded")
	}
	t.Logf("fork loop: code %d stderr %q", code, stderr)
}

func TestDiskLimitStopsBigFile(t *testing.T) {
	g := newGroup(t, Options{Limits: backend.Limits{DiskBytes: 1 << 20}})
	requireApplied(t, g, "disk")
	dir := t.TempDir()
	f := filepath.Join(dir, "big")
	code, _, _ := sh(t, g, "head -c 5242880 /dev/zero > "+f) // f is a test-made path
	st, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 || st.Size() > 1<<20 {
		t.Fatalf("writing 5 MiB under a 1 MiB file limit: code %d size %d", code, st.Size())
	}
}

func TestExtraRlimits(t *testing.T) {
	g := newGroup(t, Options{Extra: Extra{NoFile: 37, CPUSeconds: 100}})
	requireApplied(t, g, "nofile")
	code, out, stderr := sh(t, g, "ulimit -n; ulimit -t")
	if code != 0 || strings.Fields(out)[0] != "37" || strings.Fields(out)[1] != "100" {
		t.Fatalf("code %d out %q stderr %q", code, out, stderr)
	}
}

func TestCgroupRemovedOnClose(t *testing.T) {
	g, err := New("limits-test-close-"+strconv.Itoa(os.Getpid()), Options{Limits: backend.Limits{PIDs: 50}})
	if err != nil {
		t.Fatal(err)
	}
	if g.cg == nil {
		g.Close()
		testenv.Require(t, "limits", "no cgroup here: "+g.Report().String())
	}
	// A process that outlives its exec must be killed by Close.
	var out bytes.Buffer
	code, err := Run(context.Background(), Cmd{Argv: []string{"sh", "-c", "setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $!"},
		Path: "/bin/sh", Env: testEnv, Stdout: &out, Stderr: &out, Group: g})
	if err != nil || code != 0 {
		t.Fatalf("run: %d %v %q", code, err, out.String())
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(out.String()))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("background sleep not running: %q", out.String())
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	waitGone(t, pid)
	for _, d := range g.cg.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still exists: %v", d, err)
		}
	}
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 200; i++ {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		// A zombie (state Z) is dead; its parent (init here) reaps it eventually.
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still alive", pid)
}

func TestCancelKillsProcessTree(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := newLineWriter()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Cmd{Argv: []string{"sh", "-c", "sleep 60 & echo $!; wait"}, Path: "/bin/sh",
			Env: testEnv, Stdout: pw, Stderr: pw})
		done <- err
	}()
	pid, _ := strconv.Atoi(strings.TrimSpace(<-pr))
	cancel()
	if err := testenv.Returned(t, done, 10*time.Second, "Run after cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitGone(t, pid)
}

// lineWriter sends the first line written to it on a channel.
type lineWriter struct {
	ch   chan string
	buf  bytes.Buffer
	sent bool
}

func newLineWriter() (<-chan string, *lineWriter) {
	w := &lineWriter{ch: make(chan string, 1)}
	return w.ch, w
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if !w.sent && bytes.Contains(w.buf.Bytes(), []byte("\n")) {
		w.sent = true
		w.ch <- strings.SplitN(w.buf.String(), "\n", 2)[0]
	}
	return len(p), nil
}

func TestBackgroundChildDoesNotHangRun(t *testing.T) {
	start := time.Now()
	code, out, _ := sh(t, nil, "sleep 30 & echo $!; echo done")
	if code != 0 || !strings.Contains(out, "done") {
		t.Fatalf("code %d out %q", code, out)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("Run waited %v for a background child holding stdout", d)
	}
	pid, _ := strconv.Atoi(strings.Fields(out)[0])
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func TestExitCodesAndSignals(t *testing.T) {
	if code, _, _ := sh(t, nil, "exit 7"); code != 7 {
		t.Fatalf("exit 7: got %d", code)
	}
	if code, _, _ := sh(t, nil, "kill -9 $$"); code != 137 {
		t.Fatalf("kill -9: got %d", code)
	}
}

func TestEnvNotInherited(t *testing.T) {
	t.Setenv("MOAT_TEST_SECRET", "hunter2")
	code, out, _ := sh(t, nil, "env")
	if code != 0 || strings.Contains(out, "hunter2") || !strings.Contains(out, "PATH=") {
		t.Fatalf("code %d env %q", code, out)
	}
	var buf bytes.Buffer
	if _, err := Run(context.Background(), Cmd{Argv: []string{"env"}, Path: "/usr/bin/env", Stdout: &buf, Stderr: &buf}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("nil Env inherited moat's environment: %q", buf.String())
	}
}

func TestStdinAndMissingBinary(t *testing.T) {
	var out bytes.Buffer
	code, err := Run(context.Background(), Cmd{Argv: []string{"cat"}, Path: mustLook(t, "cat"), Env: testEnv,
		Stdin: strings.NewReader("hello"), Stdout: &out, Stderr: &out})
	if err != nil || code != 0 || out.String() != "hello" {
		t.Fatalf("cat: %d %v %q", code, err, out.String())
	}
	_, err = Run(context.Background(), Cmd{Argv: []string{"/nonexistent/moat"}, Env: testEnv, Stdout: &out, Stderr: &out})
	if !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("missing binary: %v", err)
	}
}

func mustLook(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skip(err)
	}
	return p
}

func TestReportReasons(t *testing.T) {
	g := newGroup(t, Options{NoCgroups: true, Limits: backend.Limits{CPUs: 0.5}})
	r := g.Report()
	if r.IsApplied("cpus") || !strings.Contains(r.String(), "cpus unavailable: cgroups disabled by configuration") {
		t.Fatalf("report %q", r)
	}
	if _, err := New("../escape", Options{}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("bad id: %v", err)
	}
	c := Check(Options{Limits: backend.Limits{MemoryBytes: 1 << 30, CPUs: 1, PIDs: 10, DiskBytes: 1 << 30}})
	if len(c.Applied)+len(c.Skipped) != 4 {
		t.Fatalf("check reports %d limits, want 4: %s", len(c.Applied)+len(c.Skipped), c)
	}
	t.Logf("check: %s", c)
}

// TestTrackWithoutLimits: Track gives a sandbox without limits a cgroup that Close empties
// and removes, and the report claims no limit for it.
func TestTrackWithoutLimits(t *testing.T) {
	g := newGroup(t, Options{Track: true})
	if len(g.Report().Applied)+len(g.Report().Skipped) != 0 {
		t.Fatalf("report for no limits: %s", g.Report())
	}
	if !g.Tracks() {
		testenv.Require(t, "limits", "no writable cgroup here")
	}
	if g2 := newGroup(t, Options{}); g2.Tracks() {
		t.Fatal("a cgroup without limits and without Track")
	}
	code, out, _ := sh(t, g, "setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $!")
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	if code != 0 || pid <= 0 {
		t.Fatalf("run: %d %q", code, out)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	for _, d := range g.cg.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still exists: %v", d, err)
		}
	}
}

func TestScopedIDIsUniqueStableAndValid(t *testing.T) {
	a := ScopedID("t-1", "/state/a/sandboxes/t-1")
	b := ScopedID("t-1", "/state/b/sandboxes/t-1")
	if a == b {
		t.Fatalf("same id in two scopes shares a cgroup name: %s", a)
	}
	if a != ScopedID("t-1", "/state/a/sandboxes/t-1") {
		t.Fatal("ScopedID is not stable")
	}
	long := ScopedID(strings.Repeat("x", 128), "/s")
	if !ValidID(a) || !ValidID(long) || len(long) != 128 {
		t.Fatalf("invalid scoped ids: %q (%d)", long, len(long))
	}
}
