package moattest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
)

// Run runs the manager-level suite. open returns a fresh target per subtest.
func Run(t *testing.T, open func(t *testing.T) Target) {
	tests := []struct {
		name string
		fn   func(t *testing.T, tg Target)
	}{
		{"Lifecycle", testLifecycle},
		{"ErrorKinds", testErrorKinds},
		{"Exec", testExec},
		{"ExecStdin", testExecStdin},
		{"ExecBinaryOutput", testExecBinary},
		{"OutputCap", testOutputCap},
		{"Streaming", testStreaming},
		{"Cancel", testCancel},
		{"Timeout", testTimeout},
		{"Files", testFiles},
		{"LargeFile", testLargeFile},
		{"PathTraversal", testPathTraversal},
		{"RemoveMkdir", testRemoveMkdir},
		{"Archive", testArchive},
		{"StopStart", testStopStart},
		{"PauseSnapshotPorts", testPauseSnapshotPorts},
		{"SessionOverride", testSession},
		{"SessionRecord", testSessionRecord},
		{"SessionBadInput", testSessionBadInput},
		{"SessionTeardown", testSessionTeardown},
		{"Concurrent", testConcurrent},
		{"Terminal", testTerminal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := open(t)
			checkNoSandboxes(t, tg) // registered first, so it runs after the test's cleanups
			tc.fn(t, tg)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantKind(t *testing.T, what string, err error, k errdefs.Kind) {
	t.Helper()
	if got := errdefs.KindOf(err); got != k {
		t.Errorf("%s: error kind %q (err %v), want %q", what, got, err, k)
	}
}

// create makes a sandbox and destroys it when t ends.
func create(t *testing.T, tg Target, spec moat.Spec) client.Handle {
	t.Helper()
	sb, err := tg.API.Create(ctxT(t), withBase(tg, spec))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb
}

// withBase fills spec's image and backend from the target's base spec.
func withBase(tg Target, spec moat.Spec) moat.Spec {
	if spec.Image == "" {
		spec.Image = tg.Spec.Image
	}
	if spec.Backend == "" && spec.SessionID == "" {
		spec.Backend = tg.Spec.Backend
	}
	return spec
}

// checkNoSandboxes fails when a test left a sandbox behind (after its cleanups).
func checkNoSandboxes(t *testing.T, tg Target) {
	t.Cleanup(func() {
		infos, err := tg.Manager.List(context.Background(), moat.ListFilter{})
		if err != nil {
			t.Errorf("list: %v", err)
		}
		for _, i := range infos {
			t.Errorf("sandbox left behind: %s (%s)", i.ID, i.Status)
		}
		if tg.Leftovers != nil {
			if ids := tg.Leftovers(); len(ids) > 0 {
				t.Errorf("backend still has sandboxes: %v", ids)
			}
		}
	})
}

func testLifecycle(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb, err := tg.API.Create(ctx, withBase(tg, moat.Spec{Name: "life", Labels: map[string]string{"suite": "moattest"}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	if !strings.HasPrefix(sb.ID(), "sb-") || sb.Backend() != tg.Backend {
		t.Errorf("created id %q backend %q", sb.ID(), sb.Backend())
	}
	info, err := sb.Info(ctx)
	if err != nil || info.Status != moat.StatusActive || info.Spec.Workdir != moat.DefaultWorkdir {
		t.Errorf("info = %+v, %v; want active with the default workdir", info, err)
	}
	for _, key := range []string{sb.ID(), "life"} {
		got, err := tg.API.Get(ctx, key)
		if err != nil || got.ID() != sb.ID() {
			t.Errorf("get %q: %v, %v", key, got, err)
		}
	}
	list, err := tg.API.List(ctx, moat.ListFilter{Labels: map[string]string{"suite": "moattest"}})
	if err != nil || len(list) != 1 || list[0].ID != sb.ID() {
		t.Errorf("list by label = %+v, %v", list, err)
	}
	list, err = tg.API.List(ctx, moat.ListFilter{Labels: map[string]string{"suite": "other"}})
	if err != nil || len(list) != 0 {
		t.Errorf("list by other label = %+v, %v", list, err)
	}
	if err := tg.API.Destroy(ctx, sb.ID()); err != nil {
		t.Fatal(err)
	}
	_, err = tg.API.Get(ctx, sb.ID())
	wantKind(t, "get after destroy", err, errdefs.KindNotFound)
	if err := tg.API.Destroy(ctx, sb.ID()); err != nil {
		t.Errorf("destroy twice: %v", err)
	}
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
	wantKind(t, "exec after destroy", err, errdefs.KindNotFound)
}

func testErrorKinds(t *testing.T, tg Target) {
	ctx := ctxT(t)
	_, err := tg.API.Get(ctx, "")
	wantKind(t, "get empty id", err, errdefs.KindInvalidArgument)
	_, err = tg.API.Get(ctx, "sb-doesnotexist")
	wantKind(t, "get unknown", err, errdefs.KindNotFound)
	wantKind(t, "destroy unknown", tg.API.Destroy(ctx, "sb-doesnotexist"), errdefs.KindNotFound)
	_, err = tg.API.Create(ctx, withBase(tg, moat.Spec{Name: "no spaces allowed"}))
	wantKind(t, "bad name", err, errdefs.KindInvalidArgument)
	_, err = tg.API.Create(ctx, moat.Spec{Backend: "nosuchbackend"})
	wantKind(t, "unknown backend", err, errdefs.KindNotFound)
	_, err = tg.API.Create(ctx, withBase(tg, moat.Spec{Limits: moat.Limits{MemoryBytes: -1}}))
	wantKind(t, "negative memory", err, errdefs.KindInvalidArgument)

	for what, l := range map[string]moat.Limits{"pids 2^63-1": {PIDs: 1<<63 - 1}, "9.2 EB of memory": {MemoryBytes: 1<<63 - 1}, "1e6 cpus": {CPUs: 1e6}} {
		_, err = tg.API.Create(ctx, withBase(tg, moat.Spec{Limits: l}))
		wantKind(t, what, err, errdefs.KindInvalidArgument)
	}
	_, err = tg.API.Create(ctx, withBase(tg, moat.Spec{SessionID: "bad\x1bsession"}))
	wantKind(t, "session id with a control character", err, errdefs.KindInvalidArgument)

	sb := create(t, tg, moat.Spec{Name: "kinds"})
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}, Env: map[string]string{"BIG": strings.Repeat("e", 1<<20)}})
	wantKind(t, "1 MiB of env", err, errdefs.KindInvalidArgument)
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", strings.Repeat("a", 100<<10), strings.Repeat("a", 100<<10), strings.Repeat("a", 100<<10), strings.Repeat("a", 100<<10), strings.Repeat("a", 100<<10), strings.Repeat("a", 100<<10)}})
	wantKind(t, "600 KiB of argv", err, errdefs.KindInvalidArgument)
	for what, p := range map[string]string{"5000-byte path": "/" + strings.Repeat("p", 5000), "100000-byte path": strings.Repeat("/q", 50000), "300-deep path": strings.Repeat("/d", 300)} {
		wantKind(t, what, sb.WriteFile(ctx, p, strings.NewReader("x"), 0), errdefs.KindInvalidArgument)
		wantKind(t, what, sb.ReadFile(ctx, p, io.Discard), errdefs.KindInvalidArgument)
	}
	_, err = tg.API.Create(ctx, withBase(tg, moat.Spec{Name: "kinds"}))
	wantKind(t, "duplicate name", err, errdefs.KindAlreadyExists)
	_, err = sb.Exec(ctx, moat.ExecRequest{})
	wantKind(t, "empty command", err, errdefs.KindInvalidArgument)
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"no-such-program"}})
	wantKind(t, "missing program", err, errdefs.KindNotFound)
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}, Env: map[string]string{"BAD-NAME": "x"}})
	wantKind(t, "bad env name", err, errdefs.KindInvalidArgument)
	err = sb.ReadFile(ctx, "/workspace/missing.txt", io.Discard)
	wantKind(t, "read missing file", err, errdefs.KindNotFound)
	_, err = sb.ListDir(ctx, "/no/such/dir")
	wantKind(t, "list missing dir", err, errdefs.KindNotFound)
	_, err = tg.API.SessionBackend(ctx, "nobody")
	wantKind(t, "session without override", err, errdefs.KindNotFound)
	wantKind(t, "override to unknown backend", tg.API.SetSessionBackend(ctx, "s1", "nosuchbackend"), errdefs.KindNotFound)
	wantKind(t, "override with empty session", tg.API.SetSessionBackend(ctx, "", tg.Backend), errdefs.KindInvalidArgument)
}

func testExec(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{Env: map[string]string{"FROM_SPEC": "spec"}})
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "hi"}})
	if err != nil || string(res.Stdout) != "hi\n" || res.ExitCode != 0 {
		t.Errorf("echo hi = %q, %d, %v", res.Stdout, res.ExitCode, err)
	}
	res, err = sb.Exec(ctx, moat.ExecRequest{Shell: "echo out; echo err >&2; exit 3"})
	if err != nil || res.ExitCode != 3 || string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Errorf("shell = %q %q %d %v; want out, err, 3", res.Stdout, res.Stderr, res.ExitCode, err)
	}
	res, err = sb.Exec(ctx, moat.ExecRequest{Shell: "echo $FROM_SPEC $FROM_REQ; pwd", Env: map[string]string{"FROM_REQ": "req"}, Workdir: "/tmp"})
	if err != nil || string(res.Stdout) != "spec req\n/tmp\n" {
		t.Errorf("env and workdir = %q, %v", res.Stdout, err)
	}
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"printf", "%s", "héllo wörld ✓"}})
	if err != nil || string(res.Stdout) != "héllo wörld ✓" {
		t.Errorf("utf-8 output = %q, %v", res.Stdout, err)
	}
}

func testExecStdin(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	in := bytes.Repeat([]byte("line of input\n"), 10000) // 140 KB: several messages
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat"}, Stdin: bytes.NewReader(in)})
	if err != nil || !bytes.Equal(res.Stdout, in) {
		t.Errorf("cat stdin: %d bytes back (want %d), %v", len(res.Stdout), len(in), err)
	}
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"wc", "-c"}, Stdin: strings.NewReader("")})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "0" {
		t.Errorf("empty stdin: %q, %v", res.Stdout, err)
	}
}

func testExecBinary(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	bin := []byte{0xff, 0xfe, 0x00, 0x01, 'a', 0x80}
	if err := sb.WriteFile(ctx, "/workspace/bin", bytes.NewReader(bin), 0); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "/workspace/bin"}})
	if err != nil || !bytes.Equal(res.Stdout, bin) {
		t.Errorf("binary stdout = %x, %v; want %x", res.Stdout, err, bin)
	}
	var out bytes.Buffer
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "/workspace/bin"}, Stdout: &out})
	if err != nil || !bytes.Equal(out.Bytes(), bin) {
		t.Errorf("streamed binary stdout = %x, %v; want %x", out.Bytes(), err, bin)
	}
}

func testOutputCap(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"printf", "%s", strings.Repeat("a", 100)}, MaxOutputBytes: 10})
	if err != nil || string(res.Stdout) != strings.Repeat("a", 10) || !res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("cap 10 = %q truncated=%v, %v", res.Stdout, res.StdoutTruncated, err)
	}
	// "é" is two bytes: a cap of 5 keeps two whole characters, never half of one.
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"printf", "%s", "ééééé"}, MaxOutputBytes: 5})
	if err != nil || string(res.Stdout) != "éé" || !res.StdoutTruncated {
		t.Errorf("utf-8 cap = %q truncated=%v, %v; want \"éé\"", res.Stdout, res.StdoutTruncated, err)
	}
	// Default cap on captured output: 1 MiB, and the command still finishes.
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"head", "-c", "3000000", "/dev/zero"}})
	if err != nil || len(res.Stdout) != moat.DefaultMaxOutput || !res.StdoutTruncated || res.ExitCode != 0 {
		t.Errorf("default cap: %d bytes truncated=%v exit=%d, %v", len(res.Stdout), res.StdoutTruncated, res.ExitCode, err)
	}
}

// signalWriter closes first on its first write.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	first chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func testStreaming(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	var stderr bytes.Buffer
	res, err := sb.Exec(ctx, moat.ExecRequest{Shell: "echo one; echo two >&2; echo three", Stdout: &bytes.Buffer{}, Stderr: &stderr})
	if err != nil || stderr.String() != "two\n" || res.Stdout != nil {
		t.Errorf("streamed: stderr %q, captured stdout %q, %v", stderr.String(), res.Stdout, err)
	}
	// Output arrives while the command still runs: the first chunk is seen before the
	// command (blocked until canceled) ends.
	w := &signalWriter{first: make(chan struct{})}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := sb.Exec(cctx, moat.ExecRequest{Cmd: tg.Block, Stdout: w})
		done <- err
	}()
	select {
	case <-w.first:
	case err := <-done:
		t.Fatalf("exec ended before streaming anything: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no output streamed within 20s")
	}
	if w.String() != "started\n" {
		t.Errorf("streamed %q, want started", w.String())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) && errdefs.KindOf(err) != errdefs.KindCanceled {
		t.Errorf("canceled stream: %v, want canceled", err)
	}
	waitNotRunning(t, tg)
}

// waitNotRunning waits until no BlockCommand runs (the server killed it).
func waitNotRunning(t *testing.T, tg Target) {
	t.Helper()
	if tg.Running == nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for tg.Running() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d commands still running 10s after cancel", tg.Running())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRunning waits until n Block commands run; without Running it waits for the "started"
// line on started (when given) or a moment.
func waitRunning(t *testing.T, tg Target, n int64, started <-chan struct{}) {
	t.Helper()
	if tg.Running == nil {
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("command did not start within 20s")
		}
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for tg.Running() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d commands running, want %d", tg.Running(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testCancel(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	// Buffered, streamed and with stdin: each wire form kills the command on cancel.
	forms := map[string]moat.ExecRequest{
		"buffered": {Cmd: tg.Block},
		"streamed": {Cmd: tg.Block},
		"stdin":    {Cmd: tg.Block, Stdin: strings.NewReader("x")},
	}
	for name, req := range forms {
		var started chan struct{}
		if name != "buffered" {
			// Streamed forms can tell when the command runs; a buffered one cannot.
			w := &signalWriter{first: make(chan struct{})}
			req.Stdout, started = w, w.first
		} else if tg.Running == nil {
			started = make(chan struct{})
			time.AfterFunc(time.Second, func() { close(started) })
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := sb.Exec(cctx, req)
			done <- err
		}()
		waitRunning(t, tg, 1, started)
		cancel()
		select {
		case err := <-done:
			if errdefs.KindOf(err) != errdefs.KindCanceled {
				t.Errorf("%s: canceled exec: %v (kind %s), want canceled", name, err, errdefs.KindOf(err))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: exec did not return 10s after cancel", name)
		}
		waitNotRunning(t, tg)
	}
}

func testTimeout(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	_, err := sb.Exec(ctx, moat.ExecRequest{Cmd: tg.Block, Timeout: 100 * time.Millisecond})
	wantKind(t, "timeout", err, errdefs.KindDeadlineExceeded)
	waitNotRunning(t, tg)
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = sb.Exec(dctx, moat.ExecRequest{Cmd: tg.Block})
	wantKind(t, "ctx deadline", err, errdefs.KindDeadlineExceeded)
	waitNotRunning(t, tg)
}

func testFiles(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	if err := sb.WriteFile(ctx, "/workspace/sub/dir/hello.txt", strings.NewReader("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sb.WriteFile(ctx, "/workspace/sub/ünïcødé ✓.txt", strings.NewReader(""), 0); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := sb.ReadFile(ctx, "/workspace/sub/dir/hello.txt", &b); err != nil || b.String() != "hello\n" {
		t.Errorf("read = %q, %v", b.String(), err)
	}
	b.Reset()
	if err := sb.ReadFile(ctx, "sub/dir/hello.txt", &b); err != nil || b.String() != "hello\n" {
		t.Errorf("read relative to workdir = %q, %v", b.String(), err)
	}
	b.Reset()
	if err := sb.ReadFile(ctx, "/workspace/sub/ünïcødé ✓.txt", &b); err != nil || b.Len() != 0 {
		t.Errorf("read empty utf-8 name = %q, %v", b.String(), err)
	}
	entries, err := sb.ListDir(ctx, "/workspace/sub")
	if err != nil || len(entries) != 2 || entries[0].Name != "dir" || !entries[0].IsDir || entries[1].Name != "ünïcødé ✓.txt" {
		t.Errorf("list = %+v, %v", entries, err)
	}
	entries, err = sb.ListDir(ctx, "/workspace/sub/dir")
	if err != nil || len(entries) != 1 || entries[0].Size != 6 || entries[0].Mode.Perm() != 0o600 {
		t.Errorf("list dir = %+v, %v; want hello.txt, 6 bytes, 0600", entries, err)
	}
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "/workspace/sub/dir/hello.txt"}})
	if err != nil || string(res.Stdout) != "hello\n" {
		t.Errorf("exec sees written file: %q, %v", res.Stdout, err)
	}
	err = sb.ReadFile(ctx, "/workspace/sub", io.Discard)
	wantKind(t, "read a directory", err, errdefs.KindInvalidArgument)
}

func testLargeFile(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	data := make([]byte, 10<<20)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	if err := sb.WriteFile(ctx, "/workspace/big.bin", bytes.NewReader(data), 0); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := sb.ReadFile(ctx, "/workspace/big.bin", h); err != nil {
		t.Fatal(err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("10 MiB round trip: sha256 %x, want %x", got, want)
	}
	entries, err := sb.ListDir(ctx, "/workspace")
	if err != nil || len(entries) != 1 || entries[0].Size != int64(len(data)) {
		t.Errorf("list after large write = %+v, %v", entries, err)
	}
}

func testPathTraversal(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	for _, p := range []string{"/workspace/../etc/passwd", "../../etc/passwd", "/a/b/../../..", "/bad\x00name"} {
		err := sb.WriteFile(ctx, p, strings.NewReader("x"), 0)
		wantKind(t, fmt.Sprintf("write %q", p), err, errdefs.KindInvalidArgument)
		err = sb.ReadFile(ctx, p, io.Discard)
		wantKind(t, fmt.Sprintf("read %q", p), err, errdefs.KindInvalidArgument)
		_, err = sb.ListDir(ctx, p)
		wantKind(t, fmt.Sprintf("list %q", p), err, errdefs.KindInvalidArgument)
	}
	_, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}, Workdir: "/workspace/../../etc"})
	wantKind(t, "exec workdir with ..", err, errdefs.KindInvalidArgument)
}

func testStopStart(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	if err := sb.WriteFile(ctx, "/workspace/keep", strings.NewReader("kept"), 0); err != nil {
		t.Fatal(err)
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := sb.Info(ctx); err != nil || info.Status != moat.StatusStopped {
		t.Errorf("after stop: %s, %v", info.Status, err)
	}
	// A fresh handle sees the stored status.
	h, err := tg.API.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
	wantKind(t, "exec in stopped sandbox", err, errdefs.KindFailedPrecondition)
	if err := sb.Stop(ctx); err != nil {
		t.Errorf("stop twice: %v", err)
	}
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h, err = tg.API.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "/workspace/keep"}})
	if err != nil || string(res.Stdout) != "kept" {
		t.Errorf("after start: %q, %v", res.Stdout, err)
	}
}

func testPauseSnapshotPorts(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	if err := sb.WriteFile(ctx, "/workspace/snap", strings.NewReader("snapped"), 0); err != nil {
		t.Fatal(err)
	}
	if err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := sb.Info(ctx); err != nil || info.Status != moat.StatusPaused {
		t.Errorf("after pause: %s, %v", info.Status, err)
	}
	h, err := tg.API.Get(ctx, sb.ID())
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
	wantKind(t, "exec in paused sandbox", err, errdefs.KindFailedPrecondition)
	wantKind(t, "stop while paused", sb.Stop(ctx), errdefs.KindFailedPrecondition)
	if err := sb.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = sb.ExposePort(ctx, 8080)
	wantKind(t, "expose port without a PortExposer", err, errdefs.KindUnsupported)
	_, err = sb.ExposePort(ctx, 70000)
	wantKind(t, "expose port 70000", err, errdefs.KindInvalidArgument)
	if tg.Backend != "fake" {
		return // snapshots of real backends outlive the test (images); the fake's do not
	}
	snap, err := sb.Snapshot(ctx, "suite")
	if err != nil || snap.Image == "" {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	from := create(t, tg, moat.Spec{Image: snap.Image})
	res, err := from.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat", "/workspace/snap"}})
	if err != nil || string(res.Stdout) != "snapped" {
		t.Errorf("sandbox from snapshot: %q %v", res.Stdout, err)
	}
}

func testSession(t *testing.T, tg Target) {
	ctx := ctxT(t)
	// A session id is free text: spaces, '/', '?' and '%' must survive the trip as one path
	// segment.
	const session = "agent 1/é?%"
	if err := tg.API.SetSessionBackend(ctx, session, tg.Backend); err != nil {
		t.Fatal(err)
	}
	got, err := tg.API.SessionBackend(ctx, session)
	if err != nil || got != tg.Backend {
		t.Errorf("session backend = %q, %v", got, err)
	}
	// The Manager behind the API holds it under the same id (not, say, still escaped).
	if got, err := tg.Manager.SessionBackend(ctx, session); err != nil || got != tg.Backend {
		t.Errorf("manager's session backend for %q = %q, %v", session, got, err)
	}
	sb := create(t, tg, moat.Spec{SessionID: session})
	if sb.Backend() != tg.Backend {
		t.Errorf("session sandbox on %q", sb.Backend())
	}
	list, err := tg.API.List(ctx, moat.ListFilter{SessionID: session})
	if err != nil || len(list) != 1 {
		t.Errorf("list by session = %d, %v", len(list), err)
	}
	if err := tg.API.ClearSessionBackend(ctx, session); err != nil {
		t.Fatal(err)
	}
	_, err = tg.API.SessionBackend(ctx, session)
	wantKind(t, "after clear", err, errdefs.KindNotFound)
	rep, err := tg.API.Backends(ctx)
	found := false
	for _, b := range rep.Backends {
		found = found || b.Name == tg.Backend && b.Health.State != "unavailable"
	}
	if err != nil || !found {
		t.Errorf("backends = %+v, %v; want %s usable", rep, err, tg.Backend)
	}
}

func testConcurrent(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("req-%d", i)
			var res moat.ExitResult
			var err error
			switch i % 3 {
			case 0:
				res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", want}})
			case 1:
				var out bytes.Buffer
				res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", want}, Stdout: &out})
				res.Stdout = out.Bytes()
			default:
				p := fmt.Sprintf("/workspace/f%d", i)
				if err = sb.WriteFile(ctx, p, strings.NewReader(want+"\n"), 0); err == nil {
					var b bytes.Buffer
					err = sb.ReadFile(ctx, p, &b)
					res.Stdout = b.Bytes()
				}
			}
			if err == nil && string(res.Stdout) != want+"\n" {
				err = fmt.Errorf("request %d got %q", i, res.Stdout)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testTerminal(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	var out bytes.Buffer
	res, err := sb.Terminal(ctx, moat.TerminalRequest{Cmd: []string{"sh", "-c", "echo term-ok"}, Stdin: strings.NewReader(""), Stdout: &out})
	if !tg.Terminal {
		wantKind(t, "terminal on a backend without terminals", err, errdefs.KindUnsupported)
		return
	}
	if err != nil || res.ExitCode != 0 || !strings.Contains(out.String(), "term-ok") {
		t.Errorf("terminal: %q exit %d, %v", out.String(), res.ExitCode, err)
	}
}
