package daytona_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/daytona"
	"github.com/moatsh/moat/backends/daytona/daytonafake"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
)

const testToken = "dtn-test-token-5f3a9c0e1b7d"

// fakeServer serves a daytonafake over loopback HTTP, backed by local.
func fakeServer(t testing.TB, local backend.Backend) (*daytonafake.Server, string) {
	t.Helper()
	_, isHost := local.(*host.Backend)
	fake := daytonafake.New(daytonafake.Options{Token: testToken, Backend: local, Workdir: "/tmp", ExecFiles: isHost})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() {
		srv.Close()
		fake.Close()
	})
	return fake, srv.URL + "/api"
}

func client(t testing.TB, apiURL, token string) *daytona.Backend {
	t.Helper()
	b, err := daytona.New(daytona.Config{APIKey: token, APIURL: apiURL, MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	b.SetRetryBackoff(5*time.Millisecond, 50*time.Millisecond)
	return b
}

// TestConformance runs the suite against the Daytona client, over real HTTP, through the
// fake, whose sandboxes are docker containers of the busybox test image: the file API and
// commands then see the same filesystem, as in a real Daytona sandbox.
func TestConformance(t *testing.T) {
	local := providertest.DockerRunner(t)
	_, apiURL := fakeServer(t, local)
	backendtest.Run(t, backendtest.Factory{
		New: func(t testing.TB) backend.Backend { return client(t, apiURL, testToken) },
		Skip: map[string]string{
			"Exec/ArgsAtLimit": "daytona: the toolbox runs one sh -c command line, so argv and environment together are bounded by one argument's limit (128 KiB, less base64); beyond it exec is invalid_argument (TestLongCommandLineIsInvalid)",
		},
	})
}

func TestLongCommandLineIsInvalid(t *testing.T) {
	local := providertest.DockerRunner(t)
	_, apiURL := fakeServer(t, local)
	inst := newSandbox(t, client(t, apiURL, testToken))
	var out bytes.Buffer
	_, err := inst.Exec(testCtx(t), &backend.ExecRequest{Argv: []string{"echo", strings.Repeat("a", 100<<10)}, Stdout: &out, Stderr: &out})
	if !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("exec with a 133 KiB command line: %v, want invalid_argument", err)
	}
}

func newSandbox(t *testing.T, b backend.Backend) backend.Instance {
	t.Helper()
	req := backendtest.CreateRequest(t, "")
	req.Workdir = "" // the host runner's file API and commands see different roots
	inst, err := b.Create(testCtx(t), req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	return inst
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func run(ctx context.Context, inst backend.Instance, argv ...string) (int, string, string, error) {
	var out, errb bytes.Buffer
	code, err := inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Workdir: "/tmp", Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String(), err
}

func TestExecRoundTripOnHost(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	code, out, errs, err := run(testCtx(t), inst, "sh", "-c", `printf 'a\000b'; printf "$1" >&2; exit 7`, "sh", "it's \"quoted\" $HOME `x`")
	if err != nil || code != 7 || out != "a\x00b" || errs != "it's \"quoted\" $HOME `x`" {
		t.Fatalf("exec = %d %q %q %v", code, out, errs, err)
	}
	var buf bytes.Buffer
	code, err = inst.Exec(testCtx(t), &backend.ExecRequest{
		Argv: []string{"sh", "-c", `printf %s "$V"; cat`}, Env: map[string]string{"V": "v'1 \n2"},
		Workdir: "/tmp", Stdin: strings.NewReader("in\x00put"), Stdout: &buf, Stderr: &buf,
	})
	if err != nil || code != 0 || buf.String() != "v'1 \n2in\x00put" {
		t.Fatalf("env+stdin exec = %d %q %v", code, buf.String(), err)
	}
	if _, _, _, err := run(testCtx(t), inst, "moat-no-such-binary-x"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("missing binary: want NotFound, got %v", err)
	}
}

func TestHugeOutput(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	code, out, _, err := run(testCtx(t), inst, "head", "-c", "12582912", "/dev/urandom")
	if err != nil || code != 0 || len(out) != 12<<20 {
		t.Fatalf("huge output: code %d, %d bytes, %v", code, len(out), err)
	}
}

func TestRetriesHonourRetryAfter(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	b := client(t, apiURL, testToken)
	inst := newSandbox(t, b)
	fake.Fail429(2, 1)
	providertest.RunningAfterRetries(testCtx(t), t, inst, 2*time.Second)
}

func TestServerErrorsExhaustToUnavailable(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	b := client(t, apiURL, testToken)
	inst := newSandbox(t, b)
	before := fake.Requests()
	fake.Fail500(10)
	_, err := inst.Status(testCtx(t))
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("want Unavailable after 500s, got %v", err)
	}
	if n := fake.Requests() - before; n != 4 {
		t.Errorf("made %d attempts, want max_attempts=4", n)
	}
	fake.InjectFaults(0, daytonafake.Fault{})
}

func TestUnauthenticatedHidesToken(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	const wrong = "dtn-WRONG-secret-token-9e8d7c6b5a"
	b := client(t, apiURL, wrong)
	_, err := b.Create(testCtx(t), backendtest.CreateRequest(t, ""))
	if !errdefs.Is(err, errdefs.KindUnauthenticated) {
		t.Fatalf("want Unauthenticated, got %v", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Fatalf("error leaks the token: %v", err)
	}
	h := b.Probe(testCtx(t))
	if h.State != backend.Unavailable || strings.Contains(h.Reason, wrong) || !strings.Contains(h.Reason, "Unauthorized") {
		t.Fatalf("probe = %+v", h)
	}
}

func TestProbeWithoutKey(t *testing.T) {
	b, err := daytona.New(daytona.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The hint names the config key by its current name, token (api_key is deprecated).
	const hint = "set DAYTONA_API_KEY or [backends.daytona] token"
	h := b.Probe(context.Background())
	if h.State != backend.Unavailable || !strings.Contains(h.Reason, hint) {
		t.Fatalf("probe without key = %+v; want %q", h, hint)
	}
	if _, err := b.Create(context.Background(), &backend.CreateRequest{ID: "x"}); !errdefs.Is(err, errdefs.KindUnauthenticated) || !strings.Contains(err.Error(), hint) {
		t.Fatalf("create without key = %v; want Unauthenticated with %q", err, hint)
	}
}

func TestGarbageBodyIsClear(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	b := client(t, apiURL, testToken)
	inst := newSandbox(t, b)
	fake.InjectFaults(4, daytonafake.Fault{Status: http.StatusBadGateway, ContentType: "text/html", Body: "<html><body><h1>502 Bad Gateway</h1> cloudflare</body></html>"})
	_, err := inst.Status(testCtx(t))
	if !errdefs.Is(err, errdefs.KindUnavailable) || !strings.Contains(err.Error(), `"<html><body><h1>502 Bad Gateway`) {
		t.Fatalf("HTML answer: %v", err)
	}
	// A 200 with garbage is reported, not silently decoded.
	fake.InjectFaults(1, daytonafake.Fault{Status: http.StatusOK, ContentType: "text/html", Body: "<!doctype html>"})
	_, err = inst.Status(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "<!doctype html>") {
		t.Fatalf("garbage 200: %v", err)
	}
}

func TestVanishedSandbox(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	var st struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(inst.Handle().State, &st)
	if !fake.Vanish(st.ID) {
		t.Fatalf("fake has no sandbox %q", st.ID)
	}
	if _, _, _, err := run(testCtx(t), inst, "true"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Exec on a vanished sandbox: want NotFound, got %v", err)
	}
	if s, err := inst.Status(testCtx(t)); err != nil || s != backend.StatusGone {
		t.Errorf("Status = %q, %v; want gone", s, err)
	}
	if err := inst.Destroy(testCtx(t)); err != nil {
		t.Errorf("Destroy of a vanished sandbox: %v", err)
	}
}

func TestCancelStopsRemoteCommand(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() {
		_, _, _, err := run(ctx, inst, "sleep", "30")
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for fake.RunningCommands() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fake.RunningCommands() == 0 {
		t.Fatal("command never started on the fake")
	}
	cancel()
	if err := testenv.Returned(t, done, 10*time.Second, "Exec after cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("want context.Canceled, got %v", err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for fake.RunningCommands() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := fake.RunningCommands(); n != 0 {
		t.Errorf("%d commands still run on the provider after cancel", n)
	}
}

func TestEnvAliasPrecedence(t *testing.T) {
	env := map[string]string{"DAYTONA_API_KEY": "env-key", "DAYTONA_API_URL": "http://127.0.0.1:1/api", "DAYTONA_TARGET": "eu"}
	getenv := func(k string) string { return env[k] }
	var c daytona.Config
	c.Target = "us"
	cfg := daytona.ApplyEnvForTest(&c, getenv)
	if cfg.APIKey != "env-key" || cfg.APIURL != "http://127.0.0.1:1/api" || cfg.Target != "us" {
		t.Fatalf("config after env = %+v (explicit target must win, empty fields take env)", cfg)
	}
	f, ok := backend.Lookup("daytona")
	if !ok {
		t.Fatal("daytona not registered")
	}
	b, err := f(backend.Config{
		Decode: func(v any) error { v.(*daytona.Config).APIKey = "explicit-key"; return nil },
		Getenv: getenv,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.(*daytona.Backend).ConfigForTest(); got.APIKey != "explicit-key" || got.Target != "eu" {
		t.Fatalf("factory config = %v", got)
	}
	if s := b.(*daytona.Backend).ConfigForTest().String(); strings.Contains(s, "explicit-key") {
		t.Fatalf("Config.String leaks the key: %s", s)
	}
}

func TestUnknownOptionIsInvalidArgument(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	b := client(t, apiURL, testToken)
	req := backendtest.CreateRequest(t, "")
	req.Options = json.RawMessage(`{"snapshot":"x","no_such_option":1}`)
	before := fake.Requests()
	if _, err := b.Create(testCtx(t), req); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
	if fake.Requests() != before {
		t.Error("an invalid request reached the provider")
	}
}

func TestConcurrentExecsOnHost(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, out, _, err := run(testCtx(t), inst, "echo", strings.Repeat("x", i))
			if err != nil || code != 0 || out != strings.Repeat("x", i)+"\n" {
				errs <- errors.New("concurrent exec failed: " + out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestExecScriptHasNoSingleQuote(t *testing.T) {
	// The script travels inside single quotes: one inside it would end the quoting.
	if strings.Contains(daytona.ExecScriptForTest, "'") {
		t.Fatal("execScript contains a single quote")
	}
}

func TestOutputStreamsWhileRunning(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, apiURL, testToken))
	w := &firstWrite{at: make(chan time.Time, 1)}
	start := time.Now()
	code, err := inst.Exec(testCtx(t), &backend.ExecRequest{
		Argv: []string{"sh", "-c", "echo early; sleep 2; echo late"}, Workdir: "/tmp",
		Stdout: w, Stderr: &bytes.Buffer{},
	})
	if err != nil || code != 0 || w.buf.String() != "early\nlate\n" {
		t.Fatalf("exec = %d %q %v", code, w.buf.String(), err)
	}
	if first := (<-w.at).Sub(start); first > 1500*time.Millisecond {
		t.Errorf("first output arrived after %v; want it before the command ends (~2s)", first)
	}
}

type firstWrite struct {
	buf bytes.Buffer
	at  chan time.Time
}

func (f *firstWrite) Write(p []byte) (int, error) {
	if f.buf.Len() == 0 {
		f.at <- time.Now()
	}
	return f.buf.Write(p)
}

// TestHugeJSONAnswerIsBounded: an endless 200 answer is refused once it passes the bound,
// rather than buffered until ctx ends (or memory does).
func TestHugeJSONAnswerIsBounded(t *testing.T) {
	srv := httptest.NewServer(providertest.EndlessJSON(`{"id":"`))
	defer srv.Close()
	b := client(t, srv.URL, testToken)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := b.Attach(ctx, backend.Handle{Backend: daytona.Name, Version: 1, State: []byte(`{"id":"sb-1"}`)})
	if !errdefs.Is(err, errdefs.KindResourceExhausted) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("endless answer: %v; want ResourceExhausted, larger than the bound", err)
	}
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaksHTTP(m) }
