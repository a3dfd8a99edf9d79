package vercel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/backends/vercel"
	"github.com/moatsh/moat/backends/vercel/vercelfake"
	"github.com/moatsh/moat/errdefs"
)

const (
	testToken   = "vercel-test-token-4c1d"
	testTeam    = "team_moat"
	testProject = "prj_moat"
)

type env struct {
	srv *vercelfake.Server
	ts  *httptest.Server
	b   *vercel.Backend
}

// newEnv starts the fake, running commands on the in-memory fake backend, and a backend
// talking to it over loopback HTTP.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, fake.New())
}

// newHostEnv is newEnv with real processes (the host backend): real sh, sleep, head. Its
// file API and its commands see different roots, so tests here use relative paths only.
func newHostEnv(t *testing.T) *env {
	t.Helper()
	local, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return newEnvOn(t, local)
}

func newEnvOn(t *testing.T, local backend.Backend) *env {
	t.Helper()
	srv := vercelfake.New(vercelfake.Options{Token: testToken, TeamID: testTeam, Backend: local})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(srv.Close)
	return &env{srv: srv, ts: ts, b: newBackend(t, ts.URL+"/api", testToken)}
}

func newBackend(t *testing.T, url, token string) *vercel.Backend {
	t.Helper()
	b, err := vercel.New(vercel.Config{Token: token, TeamID: testTeam, ProjectID: testProject, APIURL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Client().Policy.BaseBackoff = 5 * time.Millisecond
	return b
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) create(t *testing.T) backend.Instance {
	t.Helper()
	inst, err := e.b.Create(tctx(t), &backend.CreateRequest{ID: "t-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	return inst
}

func run(ctx context.Context, inst backend.Instance, stdin io.Reader, argv ...string) (int, string, string, error) {
	var out, errb bytes.Buffer
	code, err := inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Stdin: stdin, Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String(), err
}

func TestExecBasics(t *testing.T) {
	e := newEnv(t)
	inst := e.create(t)
	code, out, errs, err := run(tctx(t), inst, nil, "sh", "-c", "echo out; echo err >&2; exit 7")
	if err != nil || code != 7 || out != "out\n" || errs != "err\n" {
		t.Fatalf("exec = %d %q %q %v; want 7 \"out\\n\" \"err\\n\"", code, out, errs, err)
	}
	in := "line\n\x00binary ✓"
	code, out, _, err = run(tctx(t), inst, strings.NewReader(in), "cat")
	if err != nil || code != 0 || out != in {
		t.Errorf("cat with stdin = %d %q %v; want %q", code, out, err, in)
	}
	_, _, _, err = run(tctx(t), inst, nil, "moat-no-such-binary")
	if !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("missing binary: want NotFound, got %v", err)
	}
}

func TestExit127IsNotMissingBinary(t *testing.T) {
	e := newHostEnv(t) // a real sh, with command -v
	inst := e.create(t)
	code, _, _, err := run(tctx(t), inst, nil, "sh", "-c", "exit 127")
	if err != nil || code != 127 {
		t.Errorf("a command exiting 127 is not a missing binary: %d %v", code, err)
	}
	for _, argv0 := range []string{"moat-no-such-binary", "./no/such/binary"} {
		if _, _, _, err := run(tctx(t), inst, nil, argv0); !errdefs.Is(err, errdefs.KindNotFound) {
			t.Errorf("missing %s: want NotFound, got %v", argv0, err)
		}
	}
}

func TestPersistentStopStart(t *testing.T) {
	e := newEnv(t)
	b, err := vercel.New(vercel.Config{Token: testToken, TeamID: testTeam, ProjectID: testProject, APIURL: e.ts.URL + "/api", Persistent: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := b.Create(tctx(t), &backend.CreateRequest{ID: "persist", Workdir: "/work"})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	st, ok := inst.(backend.Stopper)
	if !ok {
		t.Fatal("a persistent sandbox's instance is not a Stopper")
	}
	if _, _, _, err := run(tctx(t), inst, nil, "sh", "-c", "echo kept > /work/f"); err != nil {
		t.Fatal(err)
	}
	if err := st.Stop(tctx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if s, err := inst.Status(tctx(t)); err != nil || s != backend.StatusStopped {
		t.Errorf("Status after Stop = %q, %v", s, err)
	}
	if _, _, _, err := run(tctx(t), inst, nil, "true"); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("Exec on a stopped sandbox = %v; want FailedPrecondition", err)
	}
	if err := st.Start(tctx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, out, _, err := run(tctx(t), inst, nil, "cat", "/work/f"); err != nil || out != "kept\n" {
		t.Errorf("after Start: %q, %v; want the file kept", out, err)
	}
	// An ephemeral sandbox offers no Stop: Vercel would lose its filesystem.
	eph := e.create(t)
	if _, ok := eph.(backend.Stopper); ok {
		t.Error("an ephemeral sandbox's instance claims to be a Stopper")
	}
}

func TestHugeOutput(t *testing.T) {
	e := newHostEnv(t) // a real head on a real /dev/zero
	inst := e.create(t)
	const size = 10 << 20
	var n countWriter
	code, err := inst.Exec(tctx(t), &backend.ExecRequest{Argv: []string{"head", "-c", fmt.Sprint(size), "/dev/zero"}, Stdout: &n, Stderr: io.Discard})
	if err != nil || code != 0 || n.n != size || n.bad {
		t.Fatalf("head -c %d /dev/zero = %d, %v: got %d bytes (non-zero seen: %v)", size, code, err, n.n, n.bad)
	}
}

type countWriter struct {
	n   int
	bad bool
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += len(p)
	if bytes.ContainsFunc(p, func(r rune) bool { return r != 0 }) {
		c.bad = true
	}
	return len(p), nil
}

func TestCancelKillsRemoteCommand(t *testing.T) {
	e := newHostEnv(t) // real processes: the kill must reach them
	inst := e.create(t)
	// The child would create the marker (in the sandbox cwd) after 2 s unless killed.
	ctx, cancel := context.WithCancel(tctx(t))
	defer cancel()
	started := make(chan struct{})
	w := &watchWriter{word: "started", ch: started}
	done := make(chan error, 1)
	go func() {
		_, err := inst.Exec(ctx, &backend.ExecRequest{
			Argv:   []string{"sh", "-c", `echo started; sleep 2; echo alive > cancel-marker`},
			Stdout: w, Stderr: io.Discard,
		})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("exec ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("command never started")
	}
	cancel()
	if err := testenv.Returned(t, done, 10*time.Second, "Exec after cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("Exec after cancel = %v; want context.Canceled", err)
	}
	time.Sleep(3 * time.Second)
	code, _, _, err := run(tctx(t), inst, nil, "test", "-e", "cancel-marker")
	if err != nil || code != 1 {
		t.Errorf("marker exists (%d, %v): the remote command survived cancellation", code, err)
	}
}

type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	word string
	ch   chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.word) {
		w.once.Do(func() { close(w.ch) })
	}
	return len(p), nil
}

func TestRetryAfterHonoured(t *testing.T) {
	e := newEnv(t)
	inst := e.create(t)
	before := e.srv.Requests()
	e.srv.FailNext(1, http.StatusTooManyRequests, time.Second)
	providertest.RunningAfterRetries(tctx(t), t, inst, 900*time.Millisecond)
	if n := e.srv.Requests() - before; n != 2 {
		t.Errorf("%d requests; want 2 (the 429 and the retry)", n)
	}
}

func TestServerErrorsExhaustRetries(t *testing.T) {
	e := newEnv(t)
	inst := e.create(t)
	before := e.srv.Requests()
	e.srv.FailNext(100, http.StatusInternalServerError, 0)
	_, err := inst.Status(tctx(t))
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("Status under 500s = %v; want Unavailable", err)
	}
	if !strings.Contains(err.Error(), "An unexpected internal error occurred") {
		t.Errorf("error lost the provider's message: %v", err)
	}
	if n := e.srv.Requests() - before; n != e.b.Client().Policy.MaxAttempts {
		t.Errorf("%d requests; want MaxAttempts = %d", n, e.b.Client().Policy.MaxAttempts)
	}
	// Commands are not idempotent: a 500 is not retried.
	e.srv.FailNext(100, http.StatusInternalServerError, 0)
	before = e.srv.Requests()
	_, _, _, err = run(tctx(t), inst, nil, "true")
	if !errdefs.Is(err, errdefs.KindUnavailable) || e.srv.Requests()-before != 1 {
		t.Errorf("exec under 500s = %v after %d requests; want Unavailable after 1", err, e.srv.Requests()-before)
	}
}

func TestWrongTokenNotLeaked(t *testing.T) {
	e := newEnv(t)
	const secret = "sekrit-token-ZQ93XK"
	b := newBackend(t, e.ts.URL+"/api", secret)
	_, err := b.Create(tctx(t), &backend.CreateRequest{ID: "wrong-token"})
	if !errdefs.Is(err, errdefs.KindUnauthenticated) {
		t.Fatalf("Create with a wrong token = %v; want Unauthenticated", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error leaks the token: %v", err)
	}
	h := b.Probe(tctx(t))
	if h.State != backend.Unavailable || strings.Contains(h.Reason, secret) || !strings.Contains(h.Reason, "Not authorized") {
		t.Errorf("Probe with a wrong token = %+v; want unavailable with Vercel's message and no token", h)
	}
	// No token at all.
	nb, err := vercel.New(vercel.Config{ProjectID: testProject, APIURL: e.ts.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := nb.Probe(tctx(t)); h.State != backend.Unavailable || !strings.Contains(h.Reason, "set VERCEL_TOKEN or [backends.vercel] token") {
		t.Errorf("Probe without a token = %+v", h)
	}
	if h := e.b.Probe(tctx(t)); h.State != backend.Ready {
		t.Errorf("Probe with the right token = %+v; want ready", h)
	}
}

func TestStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		kind   errdefs.Kind
	}{
		{401, `{"error":{"code":"unauthorized","message":"no"}}`, errdefs.KindUnauthenticated},
		{403, `{"error":{"code":"forbidden","message":"Not authorized","invalidToken":true}}`, errdefs.KindUnauthenticated},
		{403, `{"error":{"code":"forbidden","message":"Not authorized"}}`, errdefs.KindPermissionDenied},
		{404, `{"error":{"code":"not_found","message":"Sandbox not found"}}`, errdefs.KindNotFound},
		{409, `{"error":{"code":"conflict","message":"taken"}}`, errdefs.KindConflict},
		{410, `{"error":{"code":"sandbox_stopped","message":"Sandbox is stopped"}}`, errdefs.KindFailedPrecondition},
		{422, `{"error":{"code":"sandbox_stopping","message":"stopping"}}`, errdefs.KindFailedPrecondition},
		{422, `{"error":{"code":"bad","message":"bad field"}}`, errdefs.KindInvalidArgument},
		{400, `{"error":{"code":"bad_request","message":"bad"}}`, errdefs.KindInvalidArgument},
		{429, `{"error":{"code":"rate_limited","message":"slow down"}}`, errdefs.KindResourceExhausted},
		{503, `{"error":{"code":"unavailable","message":"down"}}`, errdefs.KindUnavailable},
	} {
		t.Run(fmt.Sprint(tc.status, tc.kind), func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer ts.Close()
			b := newBackend(t, ts.URL, testToken)
			_, err := b.Attach(tctx(t), backend.Handle{Backend: "vercel", Version: 1, State: []byte(`{"name":"moat-x","session_id":"se_1"}`)})
			if errdefs.KindOf(err) != tc.kind {
				t.Errorf("status %d %s: kind %q (%v); want %q", tc.status, tc.body, errdefs.KindOf(err), err, tc.kind)
			}
		})
	}
}

func TestGarbageBodies(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		status         int
		want           []string
	}{
		{"html 502", "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>", 502, []string{"text/html", "<html><body><h1>502 Bad Gateway"}},
		{"html 200", "text/html", "<!doctype html><p>login</p>", 200, []string{"not the expected JSON", "<!doctype html>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ct)
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer ts.Close()
			b := newBackend(t, ts.URL, testToken)
			_, err := b.Create(tctx(t), &backend.CreateRequest{ID: "garbage"})
			if err == nil {
				t.Fatal("Create succeeded on a garbage answer")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestSandboxVanished(t *testing.T) {
	e := newEnv(t)
	inst := e.create(t)
	name := inst.(*vercel.Instance).Name()
	if !e.srv.Vanish(name) {
		t.Fatalf("fake has no sandbox %s", name)
	}
	if _, _, _, err := run(tctx(t), inst, nil, "true"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Exec on a vanished sandbox = %v; want NotFound", err)
	}
	if err := inst.(backend.FileTransferer).WriteFile(tctx(t), "/tmp/x", strings.NewReader("x"), 0o644); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("WriteFile on a vanished sandbox = %v; want NotFound", err)
	}
	if st, err := inst.Status(tctx(t)); err != nil || st != backend.StatusGone {
		t.Errorf("Status = %q, %v; want gone", st, err)
	}
	if err := inst.Destroy(tctx(t)); err != nil {
		t.Errorf("Destroy of a vanished sandbox = %v; want success", err)
	}
	if _, err := e.b.Attach(tctx(t), inst.Handle()); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach = %v; want NotFound", err)
	}
}

func TestCreateOptions(t *testing.T) {
	e := newEnv(t)
	before := e.srv.Requests()
	for _, opts := range []string{`{"bogus":1}`, `{"vcpus":3}`, `{"ports":[0]}`, `{"git":{"url":"x"},"tarball":"y"}`, `[]`} {
		_, err := e.b.Create(tctx(t), &backend.CreateRequest{ID: "opts", Options: []byte(opts)})
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("options %s: %v; want InvalidArgument", opts, err)
		}
	}
	if _, err := e.b.Create(tctx(t), &backend.CreateRequest{ID: "rt", Image: "node18"}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("unknown runtime image: %v; want InvalidArgument", err)
	}
	if n := e.srv.Requests() - before; n != 0 {
		t.Errorf("%d requests sent for invalid creates; want none", n)
	}
	// Known options reach Vercel: the port gets a public route.
	inst, err := e.b.Create(tctx(t), &backend.CreateRequest{ID: "opts-ok", Options: []byte(`{"ports":[3000],"vcpus":4}`)})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	u, err := inst.(backend.PortExposer).ExposePort(tctx(t), 3000)
	if err != nil || !strings.HasPrefix(u, "https://") || !strings.Contains(u, "3000") {
		t.Errorf("ExposePort(3000) = %q, %v", u, err)
	}
	u, err = inst.(backend.PortExposer).ExposePort(tctx(t), 8080)
	if err != nil || !strings.Contains(u, "8080") {
		t.Errorf("ExposePort(8080) = %q, %v", u, err)
	}
}

func TestListFindsTaggedSandboxes(t *testing.T) {
	e := newEnv(t)
	inst, err := e.b.Create(tctx(t), &backend.CreateRequest{ID: "listed-1", Labels: map[string]string{"a": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	got, err := e.b.List(tctx(t))
	if err != nil || len(got) != 1 || got[0].ID != "listed-1" {
		t.Fatalf("List = %+v, %v; want the one sandbox with moat id listed-1", got, err)
	}
	if _, err := e.b.Attach(tctx(t), got[0].Handle); err != nil {
		t.Errorf("Attach(listed) = %v", err)
	}
}

func TestFactoryRegistered(t *testing.T) {
	f, ok := backend.Lookup("vercel")
	if !ok {
		t.Fatal("vercel is not registered")
	}
	if _, err := f(backend.Config{Decode: func(v any) error {
		v.(*vercel.Config).Runtime = "node18"
		return nil
	}}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("unknown runtime in config: %v; want InvalidArgument", err)
	}
	b, err := f(backend.Config{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	d := b.Descriptor()
	if d.Isolation != backend.IsolationRemote || !d.Remote || d.PackageManager != "dnf" || d.DefaultImage != "node24" {
		t.Errorf("Descriptor = %+v", d)
	}
}

func TestFilesNative(t *testing.T) {
	e := newEnv(t)
	inst, err := e.b.Create(tctx(t), &backend.CreateRequest{ID: "files", Workdir: "/w"})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	ft := inst.(backend.FileTransferer)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>12)
	}
	for _, tc := range []struct {
		path string
		data []byte
		mode fs.FileMode
	}{
		{"/w/binary", all, 0o644},
		{"/w/empty", nil, 0o600},
		{"/w/big", big, 0o755},
		{"/w/new/nested/dirs/héllo ✓", []byte("nested\n"), 0o640},
	} {
		if err := ft.WriteFile(tctx(t), tc.path, bytes.NewReader(tc.data), tc.mode); err != nil {
			t.Fatalf("WriteFile(%s): %v", tc.path, err)
		}
		var got bytes.Buffer
		if err := ft.ReadFile(tctx(t), tc.path, &got); err != nil || !bytes.Equal(got.Bytes(), tc.data) {
			t.Errorf("%s: read back %d bytes (%v), wrote %d", tc.path, got.Len(), err, len(tc.data))
		}
		// The mode is the tar header's, as exec sees it.
		_, out, _, err := run(tctx(t), inst, nil, "stat", "-c", "%a", tc.path)
		if want := fmt.Sprintf("%o\n", tc.mode); err != nil || out != want {
			t.Errorf("%s: stat mode %q, %v; want %q", tc.path, out, err, want)
		}
	}
	// Written files are the ones exec sees (text, so it survives the log stream).
	if _, out, _, err := run(tctx(t), inst, nil, "cat", "/w/new/nested/dirs/héllo ✓"); err != nil || out != "nested\n" {
		t.Errorf("exec cat of a written file = %q, %v", out, err)
	}
	list, err := ft.ListDir(tctx(t), "/w/new/nested/dirs")
	if err != nil || len(list) != 1 || list[0].Name != "héllo ✓" || list[0].Size != 7 || list[0].Mode.Perm() != 0o640 {
		t.Errorf("ListDir = %+v, %v", list, err)
	}
	if err := ft.ReadFile(tctx(t), "/w/missing", io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("ReadFile(missing) = %v; want NotFound", err)
	}
	if err := ft.ReadFile(tctx(t), "/w/new", io.Discard); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("ReadFile(dir) = %v; want InvalidArgument", err)
	}
}

func TestConnectionErrorsRetried(t *testing.T) {
	e := newEnv(t)
	// A proxy that, once armed, drops the first connection without answering; it forwards
	// everything else. The sandbox is created through it, so its handle names the proxy.
	var mu sync.Mutex
	armed, dropped := false, 0
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		drop := armed && dropped == 0
		if armed {
			dropped++
		}
		mu.Unlock()
		if drop {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		e.srv.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	b := newBackend(t, proxy.URL+"/api", testToken)
	inst, err := b.Create(tctx(t), &backend.CreateRequest{ID: "dropped"})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Destroy(context.Background())
	mu.Lock()
	armed = true
	mu.Unlock()
	attached, err := b.Attach(tctx(t), inst.Handle())
	if err != nil {
		t.Fatalf("Attach through a dropped connection: %v", err)
	}
	if st, err := attached.Status(tctx(t)); err != nil || st != backend.StatusRunning {
		t.Errorf("Status = %q, %v", st, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if dropped < 2 {
		t.Errorf("%d connections; want the dropped one retried", dropped)
	}
}

func TestCallsBoundedByContext(t *testing.T) {
	e := newEnv(t)
	inst := e.create(t)
	e.srv.DelayNext(1, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := inst.Status(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Status past its deadline = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Status returned after %v; want about its 200ms deadline", d)
	}
	// A Retry-After longer than ctx allows is not waited out either.
	e.srv.FailNext(1, http.StatusTooManyRequests, 10*time.Second)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := inst.Status(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Status during a long Retry-After = %v; want DeadlineExceeded", err)
	}
}

// TestHugeJSONAnswerIsBounded: an endless 200 answer is refused once it passes the bound,
// rather than buffered until ctx ends (or memory does).
func TestHugeJSONAnswerIsBounded(t *testing.T) {
	ts := httptest.NewServer(providertest.EndlessJSON(`{"sandbox":{"name":"`))
	defer ts.Close()
	b := newBackend(t, ts.URL, testToken)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := b.Attach(ctx, backend.Handle{Backend: "vercel", Version: 1, State: []byte(`{"name":"moat-x","session_id":"se_1"}`)})
	if !errdefs.Is(err, errdefs.KindUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("endless answer: %v; want Unavailable, larger than the bound", err)
	}
}

// TestEchoedTokenRedacted: an API or proxy that quotes the token back in its error body
// must not put it into moat's error.
func TestEchoedTokenRedacted(t *testing.T) {
	const secret = "vercel-SECRET-echoed-token-0815"
	for _, body := range []string{
		`{"error":{"code":"forbidden","message":"token %s is invalid","invalidToken":true}}`,
		`<html>bad token %s</html>`,
	} {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, body, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		}))
		_, err := newBackend(t, ts.URL, secret).Create(tctx(t), &backend.CreateRequest{ID: "echo"})
		ts.Close()
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("body %q: err = %v; want an error without the token", body, err)
		}
	}
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaksHTTP(m) }
