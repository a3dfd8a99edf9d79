package e2b_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/e2b"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
)

const testToken = "e2b_fake_token_0123456789"

type harness struct {
	fake *e2bfake.Server
	srv  *httptest.Server
	b    *e2b.Backend
}

// newHarness starts the fake over loopback HTTP with runner executing the commands, and a
// client backend pointed at it.
func newHarness(t testing.TB, runner backend.Backend, image string, fo e2bfake.Options) *harness {
	t.Helper()
	fo.Token = testToken
	fo.Backend = runner
	fo.Image = image
	fake := e2bfake.New(fo)
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return &harness{fake: fake, srv: srv, b: newClient(t, srv.URL, testToken)}
}

func newClient(t testing.TB, url, token string) *e2b.Backend {
	t.Helper()
	b, err := e2b.New(e2b.Config{Token: token, APIURL: url, SandboxURL: url, MaxAttempts: 4},
		e2b.Options{BaseBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func createReq() *backend.CreateRequest {
	return &backend.CreateRequest{ID: "e2bt-" + fmt.Sprint(time.Now().UnixNano()), Labels: map[string]string{"t": "1"}}
}

func (h *harness) create(t testing.TB) backend.Instance {
	t.Helper()
	inst, err := h.b.Create(testCtx(t), createReq())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	return inst
}

func sandboxID(t testing.TB, inst backend.Instance) string {
	var st struct {
		SandboxID string `json:"sandbox_id"`
	}
	if err := json.Unmarshal(inst.Handle().State, &st); err != nil || st.SandboxID == "" {
		t.Fatalf("handle state %s: %v", inst.Handle().State, err)
	}
	return st.SandboxID
}

func run(ctx context.Context, inst backend.Instance, stdin io.Reader, argv ...string) (int, string, string, error) {
	var out, errb bytes.Buffer
	code, err := inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Stdin: stdin, Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String(), err
}

// TestConformance runs the suite against the e2b client through the fake over real HTTP.
// The fake's sandboxes run in docker containers: like an E2B VM (and unlike the
// restricted-host backend) a container shows commands and the file API one filesystem.
func TestConformance(t *testing.T) {
	runner := providertest.DockerRunner(t)
	h := newHarness(t, runner, testenv.DockerImage(), e2bfake.Options{})
	backendtest.Run(t, backendtest.Factory{
		New:   func(t testing.TB) backend.Backend { return newClient(t, h.srv.URL, testToken) },
		Image: "base",
	})
}

func TestExecBasics(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{KeepaliveInterval: 30 * time.Millisecond})
	inst := h.create(t)
	ctx := testCtx(t)

	code, out, errs, err := run(ctx, inst, nil, "sh", "-c", `echo out; echo err >&2; exit 3`)
	if err != nil || code != 3 || out != "out\n" || errs != "err\n" {
		t.Fatalf("got %d %q %q %v", code, out, errs, err)
	}
	// Keepalive events (every 30ms here) must be skipped.
	if code, _, _, err := run(ctx, inst, nil, "sleep", "0.2"); err != nil || code != 0 {
		t.Fatalf("sleep across keepalives: %d %v", code, err)
	}
	// A missing executable is NotFound; a command that itself exits 127 is not.
	if _, _, _, err := run(ctx, inst, nil, "no-such-binary-xyz"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("missing binary: want NotFound, got %v", err)
	}
	code, _, errs, err = run(ctx, inst, nil, "sh", "-c", `echo real >&2; exit 127`)
	if err != nil || code != 127 || errs != "real\n" {
		t.Fatalf("exit 127 with stderr: %d %q %v", code, errs, err)
	}
	// Stderr that merely starts like the marker is passed through.
	code, _, errs, err = run(ctx, inst, nil, "printf", `\036moat`)
	if err != nil || code != 0 {
		t.Fatalf("printf: %d %v", code, err)
	}
	_ = errs
	// Signals are 128+n.
	if code, _, _, err := run(ctx, inst, nil, "sh", "-c", "kill -9 $$"); err != nil || code != 137 {
		t.Fatalf("kill -9: %d %v", code, err)
	}
}

func TestStdin(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	in := bytes.Repeat([]byte("0123456789abcdef\x00\xff"), 100_000) // 1.8 MB, several chunks
	code, out, _, err := run(testCtx(t), inst, bytes.NewReader(in), "cat")
	if err != nil || code != 0 || out != string(in) {
		t.Fatalf("cat stdin: code %d err %v, %d bytes back of %d", code, err, len(out), len(in))
	}
	// A failing stdin must not leave cat waiting for input forever.
	bad := io.MultiReader(strings.NewReader("partial"), errReader{})
	if _, _, _, err := run(testCtx(t), inst, bad, "cat"); err == nil || !strings.Contains(err.Error(), "broken source") {
		t.Fatalf("failing stdin: want its error, got %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken source") }

func TestHugeOutput(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	const n = 24 << 20
	var count countWriter
	code, err := inst.Exec(testCtx(t), &backend.ExecRequest{
		Argv: []string{"head", "-c", fmt.Sprint(n), "/dev/zero"}, Stdout: &count, Stderr: io.Discard,
	})
	if err != nil || code != 0 || count.n != n {
		t.Fatalf("head: code %d err %v, got %d bytes want %d", code, err, count.n, n)
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func TestCancelKillsRemoteProcess(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	id := sandboxID(t, inst)
	marker := filepath.Join(t.TempDir(), "survived")
	ctx, cancel := context.WithCancel(testCtx(t))
	started := make(chan struct{})
	w := &notifyWriter{ch: started}
	done := make(chan error, 1)
	go func() {
		_, err := inst.Exec(ctx, &backend.ExecRequest{
			Argv:   []string{"sh", "-c", `echo started; sleep 1.5; echo x > "$1"`, "sh", marker},
			Stdout: w, Stderr: io.Discard,
		})
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("no output")
	}
	if n := h.fake.Processes(id); n != 1 {
		t.Fatalf("fake runs %d processes, want 1", n)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	deadline := time.Now().Add(time.Second) // well before the command would end by itself
	for h.fake.Processes(id) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := h.fake.Processes(id); n != 0 {
		t.Fatalf("remote process still running after cancel (%d)", n)
	}
	time.Sleep(2 * time.Second)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the canceled command kept running and wrote its marker")
	}
}

type notifyWriter struct {
	ch   chan struct{}
	done bool
}

func (n *notifyWriter) Write(p []byte) (int, error) {
	if !n.done {
		n.done = true
		close(n.ch)
	}
	return len(p), nil
}

func TestRetryAfterHonoured(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	id := sandboxID(t, inst)
	h.fake.Inject(e2bfake.Fault{Count: 2, Status: http.StatusTooManyRequests, RetryAfter: "1", PathPrefix: "/sandboxes/"})
	providertest.RunningAfterRetries(testCtx(t), t, inst, 1900*time.Millisecond)
	if n := h.fake.Requests("GET /sandboxes/" + id); n != 3 {
		t.Errorf("GET count = %d, want 3 (two 429s, one success)", n)
	}
}

func TestServerErrorsExhaust(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	id := sandboxID(t, inst)
	h.fake.Inject(e2bfake.Fault{Count: 100, Status: http.StatusInternalServerError, PathPrefix: "/sandboxes/"})
	_, err := inst.Status(testCtx(t))
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("want Unavailable, got %v", err)
	}
	if !strings.Contains(err.Error(), "Internal Server Error") {
		t.Errorf("error lost the provider message: %v", err)
	}
	if n := h.fake.Requests("GET /sandboxes/" + id); n != 4 {
		t.Errorf("attempts = %d, want max_retries 4", n)
	}
	// Create is not idempotent: one 500 is final.
	h.fake.Inject(e2bfake.Fault{Count: 1, Status: http.StatusInternalServerError, PathPrefix: "/v2/sandboxes"})
	before := len(h.fake.Sandboxes())
	if _, err := h.b.Create(testCtx(t), createReq()); !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("create with 500: want Unavailable, got %v", err)
	}
	if n := h.fake.Requests("POST /v2/sandboxes"); n != 2 { // the harness's create + this one
		t.Errorf("POST /v2/sandboxes count = %d, want 2 (no retry)", n)
	}
	if len(h.fake.Sandboxes()) != before {
		t.Errorf("a failed create left a sandbox")
	}
}

func TestWrongTokenNotLeaked(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	const secret = "e2b_SECRET_distinctive_token_4711"
	b := newClient(t, h.srv.URL, secret)
	_, err := b.Create(testCtx(t), createReq())
	if !errdefs.Is(err, errdefs.KindUnauthenticated) {
		t.Fatalf("want Unauthenticated, got %v", err)
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), testToken) {
		t.Fatalf("token leaked into error: %v", err)
	}
	if !strings.Contains(err.Error(), "Invalid API key") {
		t.Errorf("provider message lost: %v", err)
	}
	hl := b.Probe(testCtx(t))
	if hl.State != backend.Unavailable || strings.Contains(hl.Reason, secret) || !strings.Contains(hl.Reason, "401") {
		t.Errorf("Probe with a bad key = %+v", hl)
	}
	noKey := newClient(t, h.srv.URL, "")
	if hl := noKey.Probe(testCtx(t)); hl.State != backend.Unavailable ||
		hl.Reason != "e2b: no API key configured (set E2B_API_KEY or [backends.e2b] token)" {
		t.Errorf("Probe without key = %+v", hl)
	}
	if hl := h.b.Probe(testCtx(t)); hl.State != backend.Ready {
		t.Errorf("Probe with the right key = %+v", hl)
	}
}

func TestGarbageBodies(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	html := "<html><head><title>403 Forbidden</title></head><body>cloudflare</body></html>"
	h.fake.Inject(e2bfake.Fault{Status: http.StatusForbidden, Body: html, ContentType: "text/html", PathPrefix: "/sandboxes/"})
	_, err := inst.Status(testCtx(t))
	if !errdefs.Is(err, errdefs.KindPermissionDenied) || !strings.Contains(err.Error(), "non-JSON") || !strings.Contains(err.Error(), "<html>") {
		t.Fatalf("HTML 403: %v", err)
	}
	h.fake.Inject(e2bfake.Fault{Status: http.StatusOK, Body: html, ContentType: "text/html", PathPrefix: "/sandboxes/"})
	_, err = inst.Status(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "non-JSON") || !strings.Contains(err.Error(), "403 Forbidden") {
		t.Fatalf("HTML 200: %v", err)
	}
}

func TestVanishedSandbox(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	if !h.fake.Vanish(sandboxID(t, inst)) {
		t.Fatal("vanish")
	}
	ctx := testCtx(t)
	if _, _, _, err := run(ctx, inst, nil, "true"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Exec on a vanished sandbox: want NotFound, got %v", err)
	}
	if err := inst.(backend.FileTransferer).ReadFile(ctx, "/tmp/x", io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("ReadFile on a vanished sandbox: want NotFound, got %v", err)
	}
	if st, err := inst.Status(ctx); err != nil || st != backend.StatusGone {
		t.Errorf("Status = %q, %v; want gone", st, err)
	}
	if err := inst.Destroy(ctx); err != nil {
		t.Errorf("Destroy of a vanished sandbox: %v", err)
	}
	if _, err := h.b.Attach(ctx, inst.Handle()); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach: want NotFound, got %v", err)
	}
}

func TestTTLBecomesTimeout(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	req := createReq()
	req.TTL = 1500 * time.Millisecond // rounds up to 2 s
	inst, err := h.b.Create(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := inst.Status(testCtx(t)); st != backend.StatusRunning {
		t.Fatalf("status %q", st)
	}
	time.Sleep(2200 * time.Millisecond)
	if st, err := inst.Status(testCtx(t)); err != nil || st != backend.StatusGone {
		t.Fatalf("after the timeout: %q %v; want gone", st, err)
	}
}

func TestCreateOptions(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	req := createReq()
	req.Options = json.RawMessage(`{"template":"x","cpu_count":4}`)
	if _, err := h.b.Create(testCtx(t), req); !errdefs.Is(err, errdefs.KindInvalidArgument) || !strings.Contains(err.Error(), "cpu_count") {
		t.Fatalf("unknown option: want InvalidArgument naming it, got %v", err)
	}
	if n := len(h.fake.Sandboxes()); n != 0 {
		t.Fatalf("a rejected create reached the provider (%d sandboxes)", n)
	}
	req.Options = json.RawMessage(`{"template":"my-tpl","metadata":{"team":"a"}}`)
	inst, err := h.b.Create(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	listed, err := h.b.List(testCtx(t))
	if err != nil || len(listed) != 1 || listed[0].ID != req.ID {
		t.Fatalf("List = %+v, %v", listed, err)
	}
}

func TestPauseResumeAndPorts(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := h.create(t)
	ctx := testCtx(t)
	p := inst.(backend.Pauser)
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(ctx); err != nil {
		t.Fatalf("second pause (409 on the wire) should succeed: %v", err)
	}
	if st, _ := inst.Status(ctx); st != backend.StatusPaused {
		t.Fatalf("status %q", st)
	}
	if _, _, _, err := run(ctx, inst, nil, "true"); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("exec while paused: want FailedPrecondition, got %v", err)
	}
	if err := p.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out, _, err := run(ctx, inst, nil, "echo", "back"); err != nil || code != 0 || out != "back\n" {
		t.Fatalf("after resume: %d %q %v", code, out, err)
	}
	u, err := inst.(backend.PortExposer).ExposePort(ctx, 3000)
	if want := "https://3000-" + sandboxID(t, inst) + ".e2b.app"; err != nil || u != want {
		t.Fatalf("ExposePort = %q, %v; want %q", u, err, want)
	}
}

func TestEnvAliasPrecedence(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	factory, ok := backend.Lookup("e2b")
	if !ok {
		t.Fatal("e2b not registered")
	}
	env := map[string]string{"E2B_API_KEY": "e2b_from_env", "E2B_API_URL": h.srv.URL, "E2B_SANDBOX_URL": h.srv.URL}
	build := func(explicit e2b.Config) backend.Backend {
		b, err := factory(backend.Config{
			Decode: func(v any) error { *v.(*e2b.Config) = explicit; return nil },
			Getenv: func(k string) string { return env[k] },
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Explicit token wins over E2B_API_KEY: the fake only accepts testToken.
	if hl := build(e2b.Config{Token: testToken}).(backend.Prober).Probe(testCtx(t)); hl.State != backend.Ready {
		t.Errorf("explicit token: %+v", hl)
	}
	// Without one, the env alias is used (and rejected by the fake).
	if hl := build(e2b.Config{}).(backend.Prober).Probe(testCtx(t)); hl.State != backend.Unavailable || !strings.Contains(hl.Reason, "401") {
		t.Errorf("env token: %+v", hl)
	}
	// Explicit api_url wins over E2B_API_URL.
	if hl := build(e2b.Config{Token: testToken, APIURL: "http://127.0.0.1:1"}).(backend.Prober).Probe(testCtx(t)); hl.State != backend.Unavailable {
		t.Errorf("explicit api_url should point at a dead port: %+v", hl)
	}
	env["E2B_API_KEY"] = testToken
	if hl := build(e2b.Config{}).(backend.Prober).Probe(testCtx(t)); hl.State != backend.Ready {
		t.Errorf("env token accepted: %+v", hl)
	}
}

// TestEchoedKeyRedacted: a control plane or edge proxy that quotes the key back in its
// error body must not put it into moat's error.
func TestEchoedKeyRedacted(t *testing.T) {
	const secret = "e2b_SECRET_echoed_key_0815"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"code":401,"message":"Invalid API key %s"}`, r.Header.Get("X-API-Key"))
	}))
	defer srv.Close()
	_, err := newClient(t, srv.URL, secret).Create(testCtx(t), createReq())
	if !errdefs.Is(err, errdefs.KindUnauthenticated) || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "Invalid API key") {
		t.Fatalf("err = %v; want Unauthenticated with the message and without the key", err)
	}
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaksHTTP(m) }
