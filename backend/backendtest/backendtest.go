// Package backendtest answers "does this backend keep the backend contract?": the conformance
// suite every moat backend runs from its own test file:
//
//	func TestConformance(t *testing.T) {
//		testenv.Require(t, "docker", reasonIfUnavailable)
//		backendtest.Run(t, backendtest.Factory{New: ..., Image: testenv.DockerImage()})
//	}
//
// Every subtest creates its own sandbox(es) from CreateRequest and destroys them in
// t.Cleanup; top-level groups run in parallel. The suite calls the backend directly, so it
// plays the manager's part: it merges CreateRequest.Env and Workdir into every ExecRequest.
//
// Wherever the suite crosses between the file API and exec it names files RELATIVE to the
// workdir in argv and sets ExecRequest.Workdir: a backend may keep the sandbox's paths under
// a private root while its commands see the host (the host backend does), and what the
// contract promises is that the file API's /workspace/f is "f" to a command run in
// /workspace, not that /workspace in argv means the same thing. For the same reason the
// suite checks the workdir with marker files, never with pwd. Each such check compares exact
// content, so a path that resolves somewhere else fails rather than passing vacuously.
//
// Commands the suite runs inside sandboxes (argv; all exist in busybox and Debian; NAME is
// always relative to the ExecRequest.Workdir):
//
//	true; false; env; echo resumed
//	cat                                                (stdin; also with nil Stdin: EOF)
//	cat NAME
//	sh -c 'exit 3'; sh -c 'exit 255'
//	sh -c 'echo out; echo err >&2'
//	sh -c 'printf %s "$MOAT_BT_VAR"'
//	sh -c 'kill -9 $$'                                 (must exit 137)
//	sh -c 'echo "$1"; echo "$1" >&2' sh TOKEN          (20 at once)
//	sh -c 'echo started; sh -c "$2" sh "$1"; echo alive > "$1.parent"' sh NAME 'sleep 2; echo alive > "$1"'
//	sh -c 'echo alive > "$1"' sh NAME
//	test -e NAME
//	sh -c 'printf %s "$1" > "$1"' sh NAME
//	sh -c 'printf '\''from exec\n'\'' > "$1"' sh NAME
//	sh -c 'echo WORD > "$1"' sh NAME                   (WORD: listed, kept, snapped, clone)
//	head -c 10485760 /dev/zero
//	printf '\377\376\000\200abc'
//	stat -c %a NAME
//	ln -s / esc; ln -s /tmp/moat-escape-final-TOKEN esc-final; ln -s /tmp/moat-escape-read-TOKEN esc-final-read
//	moat-bt-no-such-binary arg; /moat-bt/no/such/binary arg   (must be errdefs NotFound)
//
// plus the fixed scripts of package execfs (sh, test, mkdir, cat, chmod, rm, mv, cd, find, stat): the
// file checks always run through execfs, and also through the instance's native
// backend.FileTransferer when it has one. execfs itself gives commands absolute paths, so on
// a backend whose commands see the host it is meaningless; such a backend has a native
// FileTransferer, which the manager then always uses, and may skip "Files/execfs". The escape
// check writes and reads through a symlink to / at Workdir/esc and looks at the host's /tmp,
// which proves something only for backends on this machine and is harmless for remote ones.
//
// Optional abilities are tested when the type assertion holds: Lister, Prober (on the
// Backend), Stopper, Pauser, Snapshotter, PortExposer, FileRemover with DirMaker (also
// always through execfs), Archiver (on the Instance). Snapshots the
// Snapshotter subtest makes are not deleted: the contract has no way to.
//
// A check that genuinely cannot apply to a backend is opted out of with Factory.Skip, whose
// reason the suite prints; there is no silent way to skip.
package backendtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/syncbuf"
)

// Factory tells the suite how to get a backend.
type Factory struct {
	// New returns a ready backend for one test; register cleanup with t.Cleanup. The suite
	// calls it once per subtest, and a second time in the attach subtest to attach from "another
	// process": a backend that keeps sandboxes in memory must return the same one each time.
	New func(t testing.TB) backend.Backend
	// Image is put in CreateRequest.Image ("" = the backend's default image).
	Image string
	// OOMKills says the backend reports OOM kills (backend.ExecDetail.OOMKilled) here: the
	// suite then wants a memory hog under a small limit reported as one. Every backend must
	// not report a plain kill -9 as one. A backend test sets it from what the machine can
	// do (a memory cgroup), so that it is not claimed where it cannot hold.
	OOMKills bool
	// Skip opts out of subtests that genuinely cannot apply to this backend: subtest path
	// relative to Run's test (e.g. "Exec/Cancel", "Files/native/Escape") → reason. The suite
	// skips them with the reason in the output, and fails on keys naming no subtest.
	Skip map[string]string
}

// Timeout bounds each subtest's calls to the backend.
const Timeout = 2 * time.Minute

// Workdir is the working directory of every sandbox the suite creates.
const Workdir = "/workspace"

// CreateRequest returns the request the suite creates sandboxes with: ID "bt-<random>",
// Workdir /workspace, no network, the moat.test label, one env var (MOAT_BT_SANDBOX=1) and
// image (which may be "").
func CreateRequest(t testing.TB, image string) *backend.CreateRequest {
	id := "bt-" + randHex(6)
	return &backend.CreateRequest{
		ID:      id,
		Name:    id,
		Image:   image,
		Env:     map[string]string{"MOAT_BT_SANDBOX": "1"},
		Workdir: Workdir,
		Labels:  map[string]string{"moat.test": "backendtest"},
		Network: backend.NetworkNone,
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// suite carries the factory and records which Skip keys matched a subtest.
type suite struct {
	f        Factory
	root     string // Run's test name, stripped from subtest names
	mu       sync.Mutex
	seenSkip map[string]bool
	filtered []string // subtests go test -run left out: Skip keys below them are not stale
}

// Run runs the conformance suite against the backends f makes.
func Run(t *testing.T, f Factory) {
	if f.New == nil {
		t.Fatal("backendtest: Factory.New is nil")
	}
	s := &suite{f: f, root: t.Name() + "/", seenSkip: map[string]bool{}}
	t.Cleanup(func() {
		for k := range f.Skip {
			if !s.seenSkip[k] && !s.isFiltered(k) {
				t.Errorf("backendtest: Factory.Skip names no subtest: %q", k)
			}
		}
	})
	s.run(t, "Descriptor", s.testDescriptor)
	s.run(t, "Lifecycle", s.testLifecycle)
	s.run(t, "Exec", func(t *testing.T) {
		s.run(t, "ExitCode", s.testExitCode)
		s.run(t, "Stdio", s.testStdio)
		s.run(t, "Env", s.testEnv)
		s.run(t, "Workdir", s.testWorkdir)
		s.run(t, "Stdin", s.testStdin)
		s.run(t, "LargeOutput", s.testLargeOutput)
		s.run(t, "NonUTF8", s.testNonUTF8)
		s.run(t, "Signal", s.testSignal)
		s.run(t, "Cancel", s.testCancel)
		s.run(t, "MissingBinary", s.testMissingBinary)
		s.run(t, "Concurrent", s.testConcurrent)
		s.run(t, "ArgsAtLimit", s.testArgsAtLimit)
		s.run(t, "OOMKill", s.testOOMKill)
	})
	s.run(t, "Files", s.testFiles)
	s.run(t, "Destroy", s.testDestroy)
	s.run(t, "Attach", s.testAttach)
	s.run(t, "Abilities", func(t *testing.T) {
		s.run(t, "Lister", s.testLister)
		s.run(t, "Prober", s.testProber)
		s.run(t, "Stopper", s.testStopper)
		s.run(t, "Pauser", s.testPauser)
		s.run(t, "Snapshotter", s.testSnapshotter)
		s.run(t, "PortExposer", s.testPortExposer)
	})
}

// isFiltered reports whether the subtest k, or one above it, was left out by -run.
func (s *suite) isFiltered(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.filtered {
		if k == f || strings.HasPrefix(k, f+"/") {
			return true
		}
	}
	return false
}

// run runs fn as a parallel subtest unless Factory.Skip names it.
func (s *suite) run(t *testing.T, name string, fn func(t *testing.T)) {
	entered := false
	defer func() {
		if !entered { // go test -run matched not this subtest
			s.mu.Lock()
			s.filtered = append(s.filtered, strings.TrimPrefix(t.Name()+"/"+name, s.root))
			s.mu.Unlock()
		}
	}()
	t.Run(name, func(t *testing.T) {
		entered = true
		rel := strings.TrimPrefix(t.Name(), s.root)
		s.mu.Lock()
		reason, skip := s.f.Skip[rel]
		if skip {
			// Keys below a skipped subtest are accounted for too.
			for k := range s.f.Skip {
				if k == rel || strings.HasPrefix(k, rel+"/") {
					s.seenSkip[k] = true
				}
			}
		}
		s.mu.Unlock()
		if skip {
			t.Skipf("backendtest: skipped by Factory.Skip: %s", reason)
		}
		t.Parallel()
		fn(t)
	})
}

// ctx returns a context bounded by Timeout and canceled when t ends.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return c
}

// sandbox is one created sandbox and the request it was made from.
type sandbox struct {
	b    backend.Backend
	inst backend.Instance
	req  *backend.CreateRequest
}

// create makes a sandbox on a fresh backend from the factory and destroys it when t ends.
func (s *suite) create(t *testing.T) *sandbox {
	t.Helper()
	return s.createOn(t, s.f.New(t), CreateRequest(t, s.f.Image))
}

func (s *suite) createOn(t *testing.T, b backend.Backend, req *backend.CreateRequest) *sandbox {
	t.Helper()
	inst, err := b.Create(ctx(t), req)
	if err != nil {
		t.Fatalf("Create(%s, image %q): %v", req.ID, req.Image, err)
	}
	if inst == nil {
		t.Fatalf("Create(%s) returned a nil instance and no error", req.ID)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := inst.Destroy(c); err != nil {
			t.Errorf("cleanup: Destroy(%s): %v", req.ID, err)
		}
	})
	return &sandbox{b: b, inst: inst, req: req}
}

// result is what one exec produced, printable in failure messages.
type result struct {
	argv           []string
	code           int
	stdout, stderr []byte
	err            error
}

func (r *result) String() string {
	return fmt.Sprintf("exec %q: exit %d, err %v\nstdout (%d bytes): %q\nstderr (%d bytes): %q",
		r.argv, r.code, r.err, len(r.stdout), clip(r.stdout), len(r.stderr), clip(r.stderr))
}

func clip(b []byte) []byte {
	if len(b) > 512 {
		return append(b[:512:512], "..."...)
	}
	return b
}

// execOpts tweak one exec.
type execOpts struct {
	env     map[string]string
	workdir string
	stdin   io.Reader
	stdout  io.Writer // replaces the captured stdout when set
	detail  *backend.ExecDetail
}

// exec runs argv as the manager would: sandbox env and workdir merged in.
func (sb *sandbox) exec(c context.Context, o execOpts, argv ...string) *result {
	env := map[string]string{}
	for k, v := range sb.req.Env {
		env[k] = v
	}
	for k, v := range o.env {
		env[k] = v
	}
	wd := o.workdir
	if wd == "" {
		wd = sb.req.Workdir
	}
	var stdout, stderr syncbuf.Buffer
	req := &backend.ExecRequest{
		Argv:    argv,
		Env:     env,
		Workdir: wd,
		Stdin:   o.stdin,
		Stdout:  &stdout,
		Stderr:  &stderr,
		Detail:  o.detail,
	}
	if o.stdout != nil {
		req.Stdout = o.stdout
	}
	code, err := sb.inst.Exec(c, req)
	return &result{argv: argv, code: code, stdout: stdout.Bytes(), stderr: stderr.Bytes(), err: err}
}

// run execs argv and fails t unless it exits 0 without error.
func (sb *sandbox) run(t *testing.T, argv ...string) *result {
	t.Helper()
	return sb.runIn(t, "", argv...)
}

// runIn execs argv in directory dir ("" = the sandbox workdir) and fails t unless it exits
// 0 without error. Paths in argv are relative to dir whenever they name a file the file API
// also sees: a backend may keep the sandbox's files under a private root (the host backend
// does), so an absolute path means one thing to exec and another to the file API, while
// ExecRequest.Workdir and the file API agree by contract.
func (sb *sandbox) runIn(t *testing.T, dir string, argv ...string) *result {
	t.Helper()
	r := sb.exec(ctx(t), execOpts{workdir: dir}, argv...)
	if r.err != nil || r.code != 0 {
		t.Fatalf("want success: %v", r)
	}
	return r
}

// testExists execs "test -e name" in dir and fails t unless it reports want (exists or not).
func (sb *sandbox) testExists(t *testing.T, dir, name string, want bool) {
	t.Helper()
	r := sb.exec(ctx(t), execOpts{workdir: dir}, "test", "-e", name)
	code := 1
	if want {
		code = 0
	}
	if r.err != nil || r.code != code {
		t.Errorf("in %s: want exists=%v (exit %d): %v", dir, want, code, r)
	}
}

func (s *suite) testDescriptor(t *testing.T) {
	d := s.f.New(t).Descriptor()
	if d.Name == "" {
		t.Errorf("Descriptor().Name is empty: %+v", d)
	}
	if d.Isolation.Rank() < 0 {
		t.Errorf("Descriptor().Isolation %q is not a known level", d.Isolation)
	}
	if d.Remote != (d.Isolation == backend.IsolationRemote) {
		t.Logf("note: Remote=%v with isolation %q", d.Remote, d.Isolation)
	}
}

func (s *suite) testLifecycle(t *testing.T) {
	sb := s.create(t)
	h := sb.inst.Handle()
	if want := sb.b.Descriptor().Name; h.Backend != want {
		t.Errorf("Handle().Backend = %q, want the descriptor name %q", h.Backend, want)
	}
	if st, err := sb.inst.Status(ctx(t)); err != nil || st != backend.StatusRunning {
		t.Fatalf("Status after Create = %q, %v; want running", st, err)
	}
	sb.run(t, "true")
	if err := sb.inst.Destroy(ctx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if st, err := sb.inst.Status(ctx(t)); err != nil || st != backend.StatusGone {
		t.Errorf("Status after Destroy = %q, %v; want gone and no error", st, err)
	}
}

func (s *suite) testExitCode(t *testing.T) {
	sb := s.create(t)
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"false"}, 1},
		{[]string{"sh", "-c", "exit 3"}, 3},
		{[]string{"sh", "-c", "exit 255"}, 255},
	} {
		if r := sb.exec(ctx(t), execOpts{}, tc.argv...); r.err != nil || r.code != tc.want {
			t.Errorf("want exit %d: %v", tc.want, r)
		}
	}
}

func (s *suite) testStdio(t *testing.T) {
	sb := s.create(t)
	r := sb.run(t, "sh", "-c", "echo out; echo err >&2")
	if string(r.stdout) != "out\n" || string(r.stderr) != "err\n" {
		t.Errorf("want stdout \"out\\n\" and stderr \"err\\n\" kept apart: %v", r)
	}
}

func (s *suite) testEnv(t *testing.T) {
	sb := s.create(t)
	env := map[string]string{"MOAT_BT_VAR": "hello world", "MOAT_BT_UTF8": "héllo ✓"}
	r := sb.exec(ctx(t), execOpts{env: env}, "env")
	if r.err != nil || r.code != 0 {
		t.Fatalf("env: %v", r)
	}
	lines := strings.Split(string(r.stdout), "\n")
	for _, want := range []string{"MOAT_BT_VAR=hello world", "MOAT_BT_UTF8=héllo ✓", "MOAT_BT_SANDBOX=1"} {
		if !slices.Contains(lines, want) {
			t.Errorf("env output lacks line %q: %v", want, r)
		}
	}
	r = sb.exec(ctx(t), execOpts{env: env}, "sh", "-c", `printf %s "$MOAT_BT_VAR"`)
	if r.err != nil || r.code != 0 || string(r.stdout) != "hello world" {
		t.Errorf("want $MOAT_BT_VAR = %q: %v", "hello world", r)
	}
}

// testWorkdir checks where commands run through the file API instead of pwd: what pwd
// prints is the backend's business (the host backend keeps workdirs under a private root),
// but a relative name in a command must be the file the file API has under the workdir.
func (s *suite) testWorkdir(t *testing.T) {
	sb := s.create(t)
	ft := nativeOrExecfs(sb.inst)
	// Create must have made the workdir, and exec starts in it: the first command writes a
	// file by a relative name, before the file API could have created the directory.
	first := "bt-first-" + randHex(4)
	sb.runIn(t, Workdir, "sh", "-c", `printf %s "$1" > "$1"`, "sh", first)
	if got := readAll(t, ft, Workdir+"/"+first); string(got) != first {
		t.Errorf("a relative file written by exec in %s reads back %q through the file API, want %q", Workdir, got, first)
	}
	// ExecRequest.Workdir chooses the directory: the same relative name is a different file,
	// with different content, in each.
	name := "bt-marker-" + randHex(4)
	dirs := []string{Workdir, Workdir + "/sub", "/tmp"}
	want := map[string]string{}
	for _, dir := range dirs {
		want[dir] = "marker in " + dir + " " + randHex(4)
		writeFile(t, ft, dir+"/"+name, []byte(want[dir]), 0o644)
	}
	for _, dir := range dirs {
		if r := sb.runIn(t, dir, "cat", name); string(r.stdout) != want[dir] {
			t.Errorf("with ExecRequest.Workdir %s, want %q: %v", dir, want[dir], r)
		}
	}
	sb.testExists(t, Workdir, "sub/"+name, true)
	sb.testExists(t, Workdir, "sub/"+name+"-missing", false)
}

func (s *suite) testStdin(t *testing.T) {
	sb := s.create(t)
	in := []byte("line one\nbinary \x00\xff\xfe end")
	r := sb.exec(ctx(t), execOpts{stdin: bytes.NewReader(in)}, "cat")
	if r.err != nil || r.code != 0 || !bytes.Equal(r.stdout, in) {
		t.Errorf("cat should echo stdin %q: %v", in, r)
	}
	// A nil Stdin is EOF: cat must end at once instead of waiting for input.
	c, cancel := context.WithTimeout(ctx(t), 30*time.Second)
	defer cancel()
	r = sb.exec(c, execOpts{}, "cat")
	if r.err != nil || r.code != 0 || len(r.stdout) != 0 {
		t.Errorf("cat with nil Stdin should see EOF and print nothing: %v", r)
	}
}

// zeroCounter counts bytes and remembers the first one that is not zero.
type zeroCounter struct {
	n        int64
	firstBad int64
}

func (z *zeroCounter) Write(p []byte) (int, error) {
	if z.firstBad < 0 {
		if i := bytes.IndexFunc(p, func(r rune) bool { return r != 0 }); i >= 0 {
			z.firstBad = z.n + int64(i)
		}
	}
	z.n += int64(len(p))
	return len(p), nil
}

func (s *suite) testLargeOutput(t *testing.T) {
	sb := s.create(t)
	const size = 10 << 20
	z := &zeroCounter{firstBad: -1}
	r := sb.exec(ctx(t), execOpts{stdout: z}, "head", "-c", fmt.Sprint(size), "/dev/zero")
	if r.err != nil || r.code != 0 {
		t.Fatalf("head: %v", r)
	}
	if z.n != size || z.firstBad >= 0 {
		t.Errorf("want exactly %d zero bytes, got %d (first non-zero byte at %d)", size, z.n, z.firstBad)
	}
}

func (s *suite) testNonUTF8(t *testing.T) {
	sb := s.create(t)
	r := sb.run(t, "printf", `\377\376\000\200abc`)
	if want := []byte("\xff\xfe\x00\x80abc"); !bytes.Equal(r.stdout, want) {
		t.Errorf("want bytes %q unchanged: %v", want, r)
	}
}

func (s *suite) testSignal(t *testing.T) {
	sb := s.create(t)
	r := sb.exec(ctx(t), execOpts{}, "sh", "-c", "kill -9 $$")
	if r.err != nil || r.code != 128+9 {
		t.Errorf("a process killed by SIGKILL should exit 137: %v", r)
	}
}

// signalWriter closes ch the first time it sees word.
type signalWriter struct {
	syncbuf.Buffer
	word string
	once sync.Once
	ch   chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if bytes.Contains(w.Bytes(), []byte(w.word)) {
		w.once.Do(func() { close(w.ch) })
	}
	return n, err
}

func (s *suite) testCancel(t *testing.T) {
	sb := s.create(t)
	// Relative to the workdir, so a surviving command could not touch the host of a backend
	// that runs commands on it.
	marker := "bt-cancel-" + randHex(4)
	// The outer shell starts a child shell that would write marker after 2 s; if it
	// survived, the outer one writes marker.parent. Cancellation must kill both.
	script := `echo started; sh -c "$2" sh "$1"; echo alive > "$1.parent"`
	child := `sleep 2; echo alive > "$1"`
	out := &signalWriter{word: "started", ch: make(chan struct{})}
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	start := time.Now()
	done := make(chan *result, 1)
	go func() { done <- sb.exec(c, execOpts{stdout: out}, "sh", "-c", script, "sh", marker, child) }()
	select {
	case <-out.ch:
	case r := <-done:
		t.Fatalf("command ended before it was canceled: %v", r)
	case <-time.After(time.Minute):
		t.Fatalf("no \"started\" on stdout after a minute (got %q)", out.Bytes())
	}
	cancel()
	canceled := time.Now()
	var r *result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Exec did not return within 10s of ctx cancellation (stdout so far %q)", out.Bytes())
	}
	r.stdout = out.Bytes()
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Exec after cancel: want an error wrapping context.Canceled: %v", r)
	}
	t.Logf("Exec returned %v after cancel", time.Since(canceled).Round(time.Millisecond))
	// Give a surviving child time to write its marker, then prove it never did.
	time.Sleep(time.Until(start.Add(3500 * time.Millisecond)))
	for _, p := range []string{marker, marker + ".parent"} {
		r := sb.exec(ctx(t), execOpts{workdir: Workdir}, "test", "-e", p)
		if r.err != nil || r.code != 1 {
			t.Errorf("%s exists or test failed: the canceled command (or its child) kept running: %v", p, r)
		}
	}
	// The same check does see a file written the same way, so the above is not vacuous.
	sb.runIn(t, Workdir, "sh", "-c", `echo alive > "$1"`, "sh", marker+".control")
	sb.testExists(t, Workdir, marker+".control", true)
}

func (s *suite) testMissingBinary(t *testing.T) {
	sb := s.create(t)
	for _, argv0 := range []string{"moat-bt-no-such-binary", "/moat-bt/no/such/binary"} {
		r := sb.exec(ctx(t), execOpts{}, argv0, "arg")
		if !errdefs.Is(r.err, errdefs.KindNotFound) {
			t.Errorf("missing executable: want an errdefs NotFound error, not an exit code: %v", r)
		}
	}
	// The sandbox still works afterwards.
	sb.run(t, "true")
}

func (s *suite) testConcurrent(t *testing.T) {
	sb := s.create(t)
	const n = 20
	var wg sync.WaitGroup
	results := make([]*result, n)
	tokens := make([]string, n)
	for i := range n {
		tokens[i] = fmt.Sprintf("bt-%d-%s", i, randHex(4))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = sb.exec(ctx(t), execOpts{}, "sh", "-c", `echo "$1"; echo "$1" >&2`, "sh", tokens[i])
		}()
	}
	wg.Wait()
	for i, r := range results {
		want := tokens[i] + "\n"
		if r.err != nil || r.code != 0 || string(r.stdout) != want || string(r.stderr) != want {
			t.Errorf("exec %d of %d: want %q on stdout and stderr: %v", i, n, want, r)
		}
	}
}

// fileVariants returns the FileTransferers to test on inst: the native one when it has one,
// and always the exec fallback.
func fileVariants(inst backend.Instance) map[string]backend.FileTransferer {
	v := map[string]backend.FileTransferer{"execfs": execfs.New(inst)}
	if ft, ok := inst.(backend.FileTransferer); ok {
		v["native"] = ft
	}
	return v
}

// nativeOrExecfs returns the FileTransferer the manager would use for inst.
func nativeOrExecfs(inst backend.Instance) backend.FileTransferer {
	if ft, ok := inst.(backend.FileTransferer); ok {
		return ft
	}
	return execfs.New(inst)
}

func (s *suite) testFiles(t *testing.T) {
	// Which variants exist depends on the instance; find out from a throwaway sandbox
	// so the subtests below stay independent.
	probe := s.create(t)
	names := []string{"execfs"}
	if _, ok := probe.inst.(backend.FileTransferer); ok {
		names = append(names, "native")
	} else {
		t.Logf("instance has no native FileTransferer: testing the execfs fallback only")
	}
	for _, name := range names {
		s.run(t, name, func(t *testing.T) {
			s.run(t, "Content", func(t *testing.T) { s.testFileContent(t, name) })
			s.run(t, "Names", func(t *testing.T) { s.testFileNames(t, name) })
			s.run(t, "Modes", func(t *testing.T) { s.testFileModes(t, name) })
			s.run(t, "Errors", func(t *testing.T) { s.testFileErrors(t, name) })
			s.run(t, "Escape", func(t *testing.T) { s.testEscape(t, name) })
			s.run(t, "RemoveMkdir", func(t *testing.T) { s.testRemoveMkdir(t, name) })
			s.run(t, "PathsAtLimit", func(t *testing.T) { s.testPathsAtLimit(t, name) })
			s.run(t, "Atomic", func(t *testing.T) { s.testAtomicWrite(t, name) })
			if name == "native" {
				s.run(t, "Archiver", s.testArchiver)
			}
		})
	}
}

// treeOps are the remove and mkdir abilities of one file variant.
type treeOps interface {
	backend.FileRemover
	backend.DirMaker
}

// testRemoveMkdir checks FileRemover and DirMaker: through execfs always, natively when the
// instance has both.
func (s *suite) testRemoveMkdir(t *testing.T, variant string) {
	sb, ft := s.files(t, variant)
	ops, ok := ft.(treeOps)
	if !ok {
		t.Skip("instance is not a backend.FileRemover and backend.DirMaker: the manager uses execfs")
	}
	c := ctx(t)
	d := Workdir + "/mk dir/sub ✓"
	if err := ops.Mkdir(c, d, 0o700); err != nil {
		t.Fatalf("Mkdir(%s): %v", d, err)
	}
	if err := ops.Mkdir(c, d, 0o755); err != nil {
		t.Errorf("Mkdir of an existing directory: %v, want nil", err)
	}
	list, err := ft.ListDir(c, Workdir+"/mk dir")
	if err != nil || len(list) != 1 || !list[0].IsDir || list[0].Mode.Perm() != 0o700 {
		t.Errorf("after Mkdir(%s, 0700): ListDir = %+v, %v", d, list, err)
	}
	writeFile(t, ft, d+"/f", []byte("x"), 0o644)
	if err := ops.Mkdir(c, d+"/f", 0o755); !errdefs.Is(err, errdefs.KindAlreadyExists) {
		t.Errorf("Mkdir over a file: %v, want already_exists", err)
	}
	if err := ops.Remove(c, Workdir+"/mk dir", false); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("Remove of a directory without recursive: %v, want failed_precondition", err)
	}
	if err := ops.Remove(c, d+"/f", false); err != nil {
		t.Errorf("Remove of a file: %v", err)
	}
	if err := ops.Remove(c, d+"/f", false); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Remove twice: %v, want not_found", err)
	}
	// A symlink is removed itself, never its target, even recursively.
	writeFile(t, ft, Workdir+"/target/keep", []byte("kept"), 0o644)
	sb.runIn(t, Workdir, "ln", "-s", Workdir+"/target", "link")
	if err := ops.Remove(c, Workdir+"/link", true); err != nil {
		t.Errorf("Remove of a symlink: %v", err)
	}
	if got := readAll(t, ft, Workdir+"/target/keep"); string(got) != "kept" {
		t.Errorf("removing a link to a directory changed its target: %q", got)
	}
	if err := ops.Remove(c, Workdir+"/mk dir", true); err != nil {
		t.Errorf("Remove of a tree: %v", err)
	}
	if _, err := ft.ListDir(c, Workdir+"/mk dir"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("tree still there after Remove: %v", err)
	}
}

// testArchiver checks a native Archiver round trip: what goes in with PutArchive comes out
// of GetArchive, names relative to the directory.
func (s *suite) testArchiver(t *testing.T) {
	sb := s.create(t)
	a, ok := sb.inst.(backend.Archiver)
	if !ok {
		t.Skip("instance is not a backend.Archiver: the manager packs and unpacks through the FileTransferer")
	}
	ft := nativeOrExecfs(sb.inst)
	c := ctx(t)
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	want := map[string]string{"a.txt": "alpha", "sub/b ✓.txt": "beta", "sub/deeper/c": ""}
	for _, name := range []string{"a.txt", "sub/", "sub/b ✓.txt", "sub/deeper/", "sub/deeper/c", "empty/"} {
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(want[name]))}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(tw, want[name])
	}
	_ = tw.Close()
	dir := Workdir + "/arch"
	sb.run(t, "mkdir", "-p", dir)
	if err := a.PutArchive(c, dir, &in); err != nil {
		t.Fatalf("PutArchive: %v", err)
	}
	for name, body := range want {
		if got := readAll(t, ft, dir+"/"+name); string(got) != body {
			t.Errorf("%s after PutArchive = %q, want %q", name, got, body)
		}
	}
	var out bytes.Buffer
	if err := a.GetArchive(c, dir, &out); err != nil {
		t.Fatalf("GetArchive: %v", err)
	}
	got := map[string]string{}
	dirs := map[string]bool{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("GetArchive stream: %v", err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if strings.HasPrefix(name, "/") || slices.Contains(strings.Split(name, "/"), "..") {
			t.Errorf("GetArchive entry %q is not relative to %s", h.Name, dir)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			dirs[strings.TrimSuffix(name, "/")] = true
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			got[name] = string(b)
		}
	}
	for name, body := range want {
		if got[name] != body {
			t.Errorf("GetArchive[%q] = %q, want %q", name, got[name], body)
		}
	}
	if !dirs["empty"] || !dirs["sub"] {
		t.Errorf("GetArchive directories %v, want empty and sub", dirs)
	}
	if err := a.GetArchive(c, Workdir+"/no-such-dir", io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("GetArchive of a missing directory: %v, want not_found", err)
	}
}

func (s *suite) files(t *testing.T, variant string) (*sandbox, backend.FileTransferer) {
	sb := s.create(t)
	ft := fileVariants(sb.inst)[variant]
	if ft == nil {
		t.Fatalf("no %s FileTransferer", variant)
	}
	return sb, ft
}

func readAll(t *testing.T, ft backend.FileTransferer, p string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := ft.ReadFile(ctx(t), p, &buf); err != nil {
		t.Fatalf("ReadFile(%s): %v", p, err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, ft backend.FileTransferer, p string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := ft.WriteFile(ctx(t), p, bytes.NewReader(data), mode); err != nil {
		t.Fatalf("WriteFile(%s, %d bytes, %v): %v", p, len(data), mode, err)
	}
}

func (s *suite) testFileContent(t *testing.T, variant string) {
	sb, ft := s.files(t, variant)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>12) // not periodic in 256, so misplaced chunks show
	}
	for _, tc := range []struct {
		path string
		data []byte
	}{
		{Workdir + "/binary", all},
		{Workdir + "/empty", nil},
		{Workdir + "/big", big},
		{Workdir + "/new/nested/dirs/file", []byte("nested\n")},
	} {
		writeFile(t, ft, tc.path, tc.data, 0o644)
		if got := readAll(t, ft, tc.path); !bytes.Equal(got, tc.data) {
			t.Errorf("%s: read back %d bytes, wrote %d (content differs)", tc.path, len(got), len(tc.data))
		}
	}
	// Files written through the transferer are the ones exec sees, and back; exec names them
	// relative to the workdir (see runIn).
	if r := sb.runIn(t, Workdir, "cat", "binary"); !bytes.Equal(r.stdout, all) {
		t.Errorf("exec cat of a written file differs: %v", r)
	}
	if r := sb.runIn(t, Workdir, "cat", "new/nested/dirs/file"); string(r.stdout) != "nested\n" {
		t.Errorf("exec cat of a file in created parents differs: %v", r)
	}
	if r := sb.runIn(t, Workdir+"/new/nested", "cat", "dirs/file"); string(r.stdout) != "nested\n" {
		t.Errorf("exec cat in a directory the file API created differs: %v", r)
	}
	sb.runIn(t, Workdir, "sh", "-c", `printf 'from exec\n' > "$1"`, "sh", "from-exec")
	if got := readAll(t, ft, Workdir+"/from-exec"); string(got) != "from exec\n" {
		t.Errorf("ReadFile of an exec-written file = %q", got)
	}
	// Overwrite replaces, including with something shorter.
	writeFile(t, ft, Workdir+"/big", []byte("short"), 0o644)
	if got := readAll(t, ft, Workdir+"/big"); string(got) != "short" {
		t.Errorf("overwrite: read back %d bytes %q", len(got), clip(got))
	}
	list, err := ft.ListDir(ctx(t), Workdir+"/new/nested")
	if err != nil || len(list) != 1 || list[0].Name != "dirs" || !list[0].IsDir || !list[0].Mode.IsDir() {
		t.Errorf("ListDir of created parents = %+v, %v; want one directory \"dirs\"", list, err)
	}
}

func (s *suite) testFileNames(t *testing.T, variant string) {
	_, ft := s.files(t, variant)
	dir := Workdir + "/names"
	names := []string{"héllo wörld ✓.txt", "b", "a", "with space", "-dash", ".hidden", "Z", "日本語"}
	for i, n := range names {
		writeFile(t, ft, dir+"/"+n, []byte(fmt.Sprint(i)), 0o644)
		if got := readAll(t, ft, dir+"/"+n); string(got) != fmt.Sprint(i) {
			t.Errorf("%q: read back %q, want %q", n, got, fmt.Sprint(i))
		}
	}
	list, err := ft.ListDir(ctx(t), dir)
	if err != nil {
		t.Fatalf("ListDir: %v", err)
	}
	var got []string
	for _, fi := range list {
		got = append(got, fi.Name)
		if fi.IsDir || fi.Size != 1 {
			t.Errorf("entry %q: want a 1-byte file, got %+v", fi.Name, fi)
		}
	}
	want := slices.Clone(names)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("ListDir names (sorted by name) = %q, want %q", got, want)
	}
}

func (s *suite) testFileModes(t *testing.T, variant string) {
	sb, ft := s.files(t, variant)
	for _, mode := range []fs.FileMode{0o600, 0o755, 0o640} {
		rel := fmt.Sprintf("modes/m%o", mode)
		p := Workdir + "/" + rel
		writeFile(t, ft, p, []byte("x"), mode)
		list, err := ft.ListDir(ctx(t), Workdir+"/modes")
		if err != nil {
			t.Fatalf("ListDir: %v", err)
		}
		i := slices.IndexFunc(list, func(fi backend.FileInfo) bool { return fi.Name == fmt.Sprintf("m%o", mode) })
		if i < 0 {
			t.Fatalf("%s missing from ListDir %+v", p, list)
		}
		if got := list[i].Mode; got.Perm() != mode || !got.IsRegular() {
			t.Errorf("%s: ListDir mode %v, want regular %v", p, got, mode)
		}
		if r := sb.runIn(t, Workdir, "stat", "-c", "%a", rel); strings.TrimSpace(string(r.stdout)) != fmt.Sprintf("%o", mode) {
			t.Errorf("%s: stat in the sandbox disagrees with mode %o: %v", p, mode, r)
		}
	}
	// Rewriting an existing file applies the new mode.
	p := Workdir + "/modes/m600"
	writeFile(t, ft, p, []byte("y"), 0o755)
	if r := sb.runIn(t, Workdir+"/modes", "stat", "-c", "%a", "m600"); strings.TrimSpace(string(r.stdout)) != "755" {
		t.Errorf("rewrite with 0755: %v", r)
	}
}

func (s *suite) testFileErrors(t *testing.T, variant string) {
	_, ft := s.files(t, variant)
	missing := Workdir + "/no-such-file"
	if err := ft.ReadFile(ctx(t), missing, io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("ReadFile of a missing file: want errdefs NotFound, got %v", err)
	}
	if _, err := ft.ListDir(ctx(t), Workdir+"/no-such-dir"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("ListDir of a missing directory: want errdefs NotFound, got %v", err)
	}
	writeFile(t, ft, Workdir+"/d/f", []byte("x"), 0o644)
	if err := ft.ReadFile(ctx(t), Workdir+"/d", io.Discard); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("ReadFile of a directory: want errdefs InvalidArgument, got %v", err)
	}
}

// failingReader yields n bytes, then runs fail and returns its error: an upload the client
// abandoned (ctx canceled mid-stream) or cut off at a size cap.
type failingReader struct {
	n    int
	fail func() error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.fail()
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

// testAtomicWrite: a write that fails part-way, because the caller went away (ctx canceled
// mid-stream) or because the input ended in an error (the manager's size cap, a 413),
// leaves the old file exactly as it was and no partial or temporary file beside it.
func (s *suite) testAtomicWrite(t *testing.T, variant string) {
	_, ft := s.files(t, variant)
	dir := Workdir + "/atomic"
	p := dir + "/keep.txt"
	orig := []byte("the original content\n")
	writeFile(t, ft, p, orig, 0o644)
	check := func(t *testing.T, how string) {
		t.Helper()
		if got := readAll(t, ft, p); !bytes.Equal(got, orig) {
			t.Errorf("after %s: %s holds %d bytes %q; want the original %q", how, p, len(got), clip(got), orig)
		}
		// A temporary file may be removed just after the failed call returned (by an
		// agent that only then sees the client gone): wait a little for it.
		var names []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			list, err := ft.ListDir(ctx(t), dir)
			if err != nil {
				t.Fatalf("ListDir(%s): %v", dir, err)
			}
			names = names[:0]
			for _, fi := range list {
				names = append(names, fi.Name)
			}
			if len(names) == 1 || time.Now().After(deadline) {
				break
			}
		}
		if len(names) != 1 || names[0] != "keep.txt" {
			t.Errorf("after %s: %s holds %q; want only keep.txt (no partial or temporary file)", how, dir, names)
		}
	}
	t.Run("InputError", func(t *testing.T) {
		capErr := errdefs.New(errdefs.ErrResourceExhausted, "backendtest: upload over the size cap")
		r := &failingReader{n: 256 << 10, fail: func() error { return capErr }}
		if err := ft.WriteFile(ctx(t), p, r, 0o644); err == nil {
			t.Fatalf("WriteFile with an input that fails after 256 KiB returned no error")
		}
		check(t, "an input error")
	})
	t.Run("Canceled", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx(t))
		defer cancel()
		r := &failingReader{n: 256 << 10, fail: func() error { cancel(); <-c.Done(); return c.Err() }}
		if err := ft.WriteFile(c, p, r, 0o644); err == nil {
			t.Fatalf("WriteFile canceled after 256 KiB returned no error")
		}
		check(t, "a canceled write")
	})
}

// testEscape: a symlink inside the sandbox pointing at / must not let a write or a read
// through the transferer reach the host.
func (s *suite) testEscape(t *testing.T, variant string) {
	sb, ft := s.files(t, variant)
	// A command makes the link by a name relative to the workdir, so it is Workdir/esc to
	// the file API on every backend, and it never lands in the host's /tmp on a backend
	// that runs commands on the host.
	sb.runIn(t, Workdir, "ln", "-s", "/", "esc")
	list, err := ft.ListDir(ctx(t), Workdir)
	if err != nil || !slices.ContainsFunc(list, func(fi backend.FileInfo) bool { return fi.Name == "esc" }) {
		t.Fatalf("the symlink exec made is not in ListDir(%s) = %+v, %v: the checks below would prove nothing", Workdir, list, err)
	}
	link := Workdir + "/esc"

	token := randHex(6)
	hostWrite := "/tmp/moat-escape-" + token
	t.Cleanup(func() { os.Remove(hostWrite) })
	err = ft.WriteFile(ctx(t), link+hostWrite, strings.NewReader("escaped"), 0o644)
	t.Logf("WriteFile through the symlink: %v (failing or landing inside the sandbox are both fine)", err)
	if _, statErr := os.Lstat(hostWrite); !errors.Is(statErr, fs.ErrNotExist) {
		t.Errorf("WriteFile(%s) reached the host: %s exists (lstat: %v)", link+hostWrite, hostWrite, statErr)
	}

	hostRead := "/tmp/moat-escape-read-" + token
	secret := "host secret " + token
	if err := os.WriteFile(hostRead, []byte(secret), 0o644); err != nil {
		t.Fatalf("host file: %v", err)
	}
	t.Cleanup(func() { os.Remove(hostRead) })
	var buf bytes.Buffer
	err = ft.ReadFile(ctx(t), link+hostRead, &buf)
	if strings.Contains(buf.String(), secret) {
		t.Errorf("ReadFile(%s) read the host file %s", link+hostRead, hostRead)
	}
	t.Logf("ReadFile through the symlink: %v", err)

	// The last component a symlink to a host path: the file API must not open it where the
	// host would resolve it (replacing the link or writing inside the sandbox are both fine).
	hostFinal := "/tmp/moat-escape-final-" + token
	t.Cleanup(func() { os.Remove(hostFinal) })
	sb.runIn(t, Workdir, "ln", "-s", hostFinal, "esc-final")
	sb.runIn(t, Workdir, "ln", "-s", hostRead, "esc-final-read")
	err = ft.WriteFile(ctx(t), Workdir+"/esc-final", strings.NewReader("escaped"), 0o644)
	t.Logf("WriteFile of a symlink to %s: %v", hostFinal, err)
	if _, statErr := os.Lstat(hostFinal); !errors.Is(statErr, fs.ErrNotExist) {
		t.Errorf("WriteFile(%s) reached the host: %s exists (lstat: %v)", Workdir+"/esc-final", hostFinal, statErr)
	}
	buf.Reset()
	err = ft.ReadFile(ctx(t), Workdir+"/esc-final-read", &buf)
	if strings.Contains(buf.String(), secret) {
		t.Errorf("ReadFile(%s) read the host file %s through a final symlink", Workdir+"/esc-final-read", hostRead)
	}
	t.Logf("ReadFile of a symlink to %s: %v", hostRead, err)
}

func (s *suite) testDestroy(t *testing.T) {
	sb := s.create(t)
	h := sb.inst.Handle()
	for i := range 2 {
		if err := sb.inst.Destroy(ctx(t)); err != nil {
			t.Fatalf("Destroy #%d: %v", i+1, err)
		}
	}
	if st, err := sb.inst.Status(ctx(t)); err != nil || st != backend.StatusGone {
		t.Errorf("Status after Destroy = %q, %v; want gone and no error", st, err)
	}
	if r := sb.exec(ctx(t), execOpts{}, "true"); !errdefs.Is(r.err, errdefs.KindNotFound) {
		t.Errorf("Exec after Destroy: want errdefs NotFound: %v", r)
	}
	if _, err := sb.b.Attach(ctx(t), h); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach after Destroy: want errdefs NotFound, got %v", err)
	}
}

func (s *suite) testAttach(t *testing.T) {
	sb := s.create(t)
	writeFile(t, nativeOrExecfs(sb.inst), Workdir+"/attach-marker", []byte("before attach"), 0o644)

	raw, err := json.Marshal(sb.inst.Handle())
	if err != nil {
		t.Fatalf("marshal handle: %v", err)
	}
	var h backend.Handle
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("unmarshal handle %s: %v", raw, err)
	}
	// Attach from a second backend, as another process would after a restart.
	b2 := s.f.New(t)
	inst, err := b2.Attach(ctx(t), h)
	if err != nil {
		t.Fatalf("Attach(%s): %v", raw, err)
	}
	if st, err := inst.Status(ctx(t)); err != nil || st != backend.StatusRunning {
		t.Errorf("Status of attached instance = %q, %v; want running", st, err)
	}
	attached := &sandbox{b: b2, inst: inst, req: sb.req}
	if r := attached.runIn(t, Workdir, "cat", "attach-marker"); string(r.stdout) != "before attach" {
		t.Errorf("attached instance does not see the file written before: %v", r)
	}
	// Destroying through the attached instance destroys the sandbox.
	if err := inst.Destroy(ctx(t)); err != nil {
		t.Fatalf("Destroy via attached instance: %v", err)
	}
	if st, err := sb.inst.Status(ctx(t)); err != nil || st != backend.StatusGone {
		t.Errorf("original instance Status after the attached one destroyed it = %q, %v; want gone", st, err)
	}
}

func (s *suite) testLister(t *testing.T) {
	b := s.f.New(t)
	l, ok := b.(backend.Lister)
	if !ok {
		t.Skip("backend is not a backend.Lister")
	}
	sb := s.createOn(t, b, CreateRequest(t, s.f.Image))
	find := func() (backend.Listed, bool) {
		t.Helper()
		all, err := l.List(ctx(t))
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, x := range all {
			if x.ID == sb.req.ID {
				return x, true
			}
		}
		return backend.Listed{}, false
	}
	x, ok := find()
	if !ok {
		t.Fatalf("List does not include the sandbox created with ID %s", sb.req.ID)
	}
	if x.Handle.Backend != b.Descriptor().Name {
		t.Errorf("listed handle backend = %q, want %q", x.Handle.Backend, b.Descriptor().Name)
	}
	// The listed handle attaches to the same sandbox.
	inst, err := b.Attach(ctx(t), x.Handle)
	if err != nil {
		t.Fatalf("Attach(listed handle): %v", err)
	}
	sb.runIn(t, Workdir, "sh", "-c", `echo listed > "$1"`, "sh", "listed")
	if r := (&sandbox{b: b, inst: inst, req: sb.req}).runIn(t, Workdir, "cat", "listed"); string(r.stdout) != "listed\n" {
		t.Errorf("listed handle reaches another sandbox: %v", r)
	}
	if err := sb.inst.Destroy(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := find(); ok {
		t.Errorf("List still includes %s after Destroy", sb.req.ID)
	}
}

func (s *suite) testProber(t *testing.T) {
	p, ok := s.f.New(t).(backend.Prober)
	if !ok {
		t.Skip("backend is not a backend.Prober")
	}
	h := p.Probe(ctx(t))
	switch h.State {
	case backend.Ready, backend.Degraded:
	case backend.Unavailable:
		// The suite is creating sandboxes on this backend right now.
		t.Errorf("Probe says unavailable while the suite runs on it: %+v", h)
	default:
		t.Errorf("Probe state %q is not ready/degraded/unavailable", h.State)
	}
	if h.State != backend.Ready && h.Reason == "" {
		t.Errorf("Probe state %q without a reason", h.State)
	}
}

func (s *suite) testStopper(t *testing.T) {
	sb := s.create(t)
	st, ok := sb.inst.(backend.Stopper)
	if !ok {
		t.Skip("instance is not a backend.Stopper")
	}
	sb.runIn(t, Workdir, "sh", "-c", `echo kept > "$1"`, "sh", "stop-marker")
	if err := st.Stop(ctx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got, err := sb.inst.Status(ctx(t)); err != nil || got != backend.StatusStopped {
		t.Errorf("Status after Stop = %q, %v; want stopped", got, err)
	}
	if err := st.Start(ctx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if got, err := sb.inst.Status(ctx(t)); err != nil || got != backend.StatusRunning {
		t.Errorf("Status after Start = %q, %v; want running", got, err)
	}
	if r := sb.runIn(t, Workdir, "cat", "stop-marker"); string(r.stdout) != "kept\n" {
		t.Errorf("file did not survive stop/start: %v", r)
	}
}

func (s *suite) testPauser(t *testing.T) {
	sb := s.create(t)
	p, ok := sb.inst.(backend.Pauser)
	if !ok {
		t.Skip("instance is not a backend.Pauser")
	}
	if err := p.Pause(ctx(t)); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if got, err := sb.inst.Status(ctx(t)); err != nil || got != backend.StatusPaused {
		t.Errorf("Status after Pause = %q, %v; want paused", got, err)
	}
	if err := p.Resume(ctx(t)); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got, err := sb.inst.Status(ctx(t)); err != nil || got != backend.StatusRunning {
		t.Errorf("Status after Resume = %q, %v; want running", got, err)
	}
	if r := sb.run(t, "echo", "resumed"); string(r.stdout) != "resumed\n" {
		t.Errorf("exec after Resume: %v", r)
	}
}

func (s *suite) testSnapshotter(t *testing.T) {
	b := s.f.New(t)
	sb := s.createOn(t, b, CreateRequest(t, s.f.Image))
	sn, ok := sb.inst.(backend.Snapshotter)
	if !ok {
		t.Skip("instance is not a backend.Snapshotter")
	}
	sb.runIn(t, Workdir, "sh", "-c", `echo snapped > "$1"`, "sh", "snap-marker")
	snap, err := sn.Snapshot(ctx(t), "bt-snap-"+randHex(4))
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if snap.ID == "" || snap.Image == "" || snap.CreatedAt.IsZero() {
		t.Errorf("Snapshot = %+v; want ID, Image and CreatedAt set", snap)
	}
	req := CreateRequest(t, snap.Image)
	clone := s.createOn(t, b, req)
	if r := clone.runIn(t, Workdir, "cat", "snap-marker"); string(r.stdout) != "snapped\n" {
		t.Errorf("sandbox from snapshot %s lacks the file: %v", snap.Image, r)
	}
	// The clone is independent of the original.
	clone.runIn(t, Workdir, "sh", "-c", `echo clone > "$1"`, "sh", "snap-marker")
	if r := sb.runIn(t, Workdir, "cat", "snap-marker"); string(r.stdout) != "snapped\n" {
		t.Errorf("writing in the clone changed the original: %v", r)
	}
}

func (s *suite) testPortExposer(t *testing.T) {
	sb := s.create(t)
	pe, ok := sb.inst.(backend.PortExposer)
	if !ok {
		t.Skip("instance is not a backend.PortExposer")
	}
	u, err := pe.ExposePort(ctx(t), 8080)
	if err != nil || u == "" {
		t.Errorf("ExposePort(8080) = %q, %v; want an address", u, err)
	}
}

// Create creates a sandbox with b for a test of its own and destroys it when t ends.
func Create(t testing.TB, b backend.Backend, req *backend.CreateRequest) backend.Instance {
	t.Helper()
	inst, err := b.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	return inst
}
