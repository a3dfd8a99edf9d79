package httpapi_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/internal/tarfs/tarfstest"
	"github.com/moatsh/moat/internal/testenv"

	"github.com/coder/websocket"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/syncbuf"
	"github.com/moatsh/moat/moattest"
)

const token = "s3cret-api-token-value"

type fixture struct {
	env  *moattest.Env
	h    *httpapi.Server
	srv  *httptest.Server
	logs *syncbuf.Buffer
	c    *client.Client
}

func newFixture(t *testing.T, opts httpapi.Options) *fixture {
	t.Helper()
	f := &fixture{env: moattest.NewManager(t), logs: &syncbuf.Buffer{}}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(f.logs, nil))
	}
	f.h = httpapi.New(f.env.Manager, opts)
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(func() {
		f.srv.Close()
		_ = f.h.Shutdown(context.Background())
	})
	var copts []client.Option
	if len(opts.Tokens) > 0 {
		copts = append(copts, client.WithToken(opts.Tokens[0]))
	}
	c, err := client.New(f.srv.URL, copts...)
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	return f
}

// serve runs the API for m with opts behind a test server, closed when t ends, and
// returns a client of it.
func serve(t *testing.T, m *moat.Manager, opts httpapi.Options) *client.Client {
	t.Helper()
	h := httpapi.New(m, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); _ = h.Shutdown(context.Background()) })
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// call sends a raw request and returns status and body.
func (f *fixture) call(t *testing.T, method, path, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func errKind(t *testing.T, body string) errdefs.Kind {
	t.Helper()
	var e apitype.Error
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an error body: %q (%v)", body, err)
	}
	return e.Error.Kind
}

func (f *fixture) sandbox(t *testing.T) *client.Sandbox {
	t.Helper()
	sb, err := f.c.Create(context.Background(), moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb
}

func TestAuth(t *testing.T) {
	f := newFixture(t, httpapi.Options{Tokens: []string{token, "other"}})
	bearer := "Bearer " + token
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401}, {"Bearer wrong", 401}, {"Basic " + token, 401}, {token, 401}, {bearer, 200}, {"bearer other", 200},
	} {
		code, body, hdr := f.call(t, "GET", "/v1/sandboxes", "", "Authorization", tc.auth)
		if code != tc.want {
			t.Errorf("auth %q: %d %s, want %d", tc.auth, code, body, tc.want)
		}
		if code == 401 && (errKind(t, body) != errdefs.KindUnauthenticated || hdr.Get("WWW-Authenticate") == "") {
			t.Errorf("auth %q: body %s, WWW-Authenticate %q", tc.auth, body, hdr.Get("WWW-Authenticate"))
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/v1/openapi.json"} {
		if code, body, _ := f.call(t, "GET", p, ""); code != 200 {
			t.Errorf("public %s: %d %s", p, code, body)
		}
	}
	if code, _, _ := f.call(t, "GET", "/metrics", ""); code != 401 {
		t.Errorf("metrics without token: %d, want 401", code)
	}
	// The client maps 401 to Unauthenticated.
	bad, _ := client.New(f.srv.URL, client.WithToken("nope"))
	_, err := bad.List(context.Background(), moat.ListFilter{})
	if errdefs.KindOf(err) != errdefs.KindUnauthenticated {
		t.Errorf("client with a wrong token: %v", err)
	}
	if strings.Contains(f.logs.String(), token) || strings.Contains(f.logs.String(), "nope") {
		t.Errorf("a token reached the logs:\n%s", f.logs.String())
	}
	if !strings.Contains(f.logs.String(), `"request_id"`) {
		t.Errorf("access log without request ids:\n%s", f.logs.String())
	}
}

func TestForeignHostWithoutToken(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	code, body, _ := f.call(t, "GET", "/v1/sandboxes", "", "Host", "evil.example:8080")
	if code != 403 || errKind(t, body) != errdefs.KindPermissionDenied {
		t.Errorf("foreign host: %d %s", code, body)
	}
	for _, h := range []string{"localhost:8080", "127.0.0.1", "[::1]:80"} {
		if code, body, _ := f.call(t, "GET", "/v1/sandboxes", "", "Host", h); code != 200 {
			t.Errorf("host %s: %d %s", h, code, body)
		}
	}
	// With a token any host may call (the token is the guard).
	g := newFixture(t, httpapi.Options{Tokens: []string{token}})
	if code, body, _ := g.call(t, "GET", "/v1/sandboxes", "", "Host", "moat.internal", "Authorization", "Bearer "+token); code != 200 {
		t.Errorf("foreign host with token: %d %s", code, body)
	}
}

func TestRequestID(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	_, _, hdr := f.call(t, "GET", "/healthz", "", "X-Request-Id", "abc-123")
	if hdr.Get("X-Request-Id") != "abc-123" {
		t.Errorf("request id not kept: %q", hdr.Get("X-Request-Id"))
	}
	_, _, hdr = f.call(t, "GET", "/healthz", "", "X-Request-Id", "evil\"id with spaces")
	if got := hdr.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Errorf("unsafe request id kept or none made: %q", got)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, httpapi.Options{MaxJSONBytes: 1024})
	sb := f.sandbox(t)
	execPath := "/v1/sandboxes/" + sb.ID() + "/exec"
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		kind                     errdefs.Kind
	}{
		{"malformed json", "POST", "/v1/sandboxes", `{"name":`, 400, errdefs.KindInvalidArgument},
		{"not an object", "POST", "/v1/sandboxes", `[1,2]`, 400, errdefs.KindInvalidArgument},
		{"unknown field", "POST", "/v1/sandboxes", `{"nmae":"x"}`, 400, errdefs.KindInvalidArgument},
		{"wrong type", "POST", "/v1/sandboxes", `{"name":5}`, 400, errdefs.KindInvalidArgument},
		{"trailing data", "POST", "/v1/sandboxes", `{} {}`, 400, errdefs.KindInvalidArgument},
		{"empty body", "POST", "/v1/sandboxes", ``, 400, errdefs.KindInvalidArgument},
		{"too large", "POST", "/v1/sandboxes", `{"name":"` + strings.Repeat("a", 2000) + `"}`, 413, errdefs.KindResourceExhausted},
		{"unknown sandbox", "GET", "/v1/sandboxes/sb-nope", ``, 404, errdefs.KindNotFound},
		{"unknown route", "GET", "/v1/nothing", ``, 404, errdefs.KindNotFound},
		{"unknown backend", "POST", "/v1/sandboxes", `{"backend":"nope"}`, 404, errdefs.KindNotFound},
		{"exec missing cmd", "POST", execPath, `{}`, 400, errdefs.KindInvalidArgument},
		{"exec bad stdin encoding", "POST", execPath, `{"cmd":["cat"],"stdin":"x","stdin_encoding":"rot13"}`, 400, errdefs.KindInvalidArgument},
		{"exec negative timeout", "POST", execPath, `{"cmd":["true"],"timeout_ms":-1}`, 400, errdefs.KindInvalidArgument},
		{"exec timeout overflows", "POST", execPath, `{"cmd":["true"],"timeout_ms":9223372036854775807}`, 400, errdefs.KindInvalidArgument},
		{"exec unknown field", "POST", execPath, `{"command":["true"]}`, 400, errdefs.KindInvalidArgument},
		{"bad status filter", "GET", "/v1/sandboxes?status=sleepy", ``, 400, errdefs.KindInvalidArgument},
		{"bad label filter", "GET", "/v1/sandboxes?label=novalue", ``, 400, errdefs.KindInvalidArgument},
		{"file without path", "GET", "/v1/sandboxes/" + sb.ID() + "/files", ``, 400, errdefs.KindInvalidArgument},
		{"file traversal", "GET", "/v1/sandboxes/" + sb.ID() + "/files?path=/workspace/../../etc/passwd", ``, 400, errdefs.KindInvalidArgument},
		{"bad mode", "PUT", "/v1/sandboxes/" + sb.ID() + "/files?path=/x&mode=999", `x`, 400, errdefs.KindInvalidArgument},
		{"wrong content type", "POST", "/v1/sandboxes", `{}`, 415, errdefs.KindInvalidArgument},
		{"form content type", "POST", execPath, `{"cmd":["true"]}`, 415, errdefs.KindInvalidArgument},
		{"put wrong content type", "PUT", "/v1/sessions/s/backend", `{"backend":"fake"}`, 400, errdefs.KindInvalidArgument},
	} {
		hdr := []string{"Content-Type", "application/json"}
		switch tc.name {
		case "wrong content type", "put wrong content type":
			hdr = []string{"Content-Type", "text/plain"}
		case "form content type":
			hdr = []string{"Content-Type", "application/x-www-form-urlencoded"}
		}
		code, body, _ := f.call(t, tc.method, tc.path, tc.body, hdr...)
		if code != tc.status || errKind(t, body) != tc.kind {
			t.Errorf("%s: %d %s; want %d %s", tc.name, code, body, tc.status, tc.kind)
		}
	}
	// The server still serves.
	if code, _, _ := f.call(t, "GET", "/v1/sandboxes", ""); code != 200 {
		t.Errorf("list after bad input: %d", code)
	}
}

func TestExecWire(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	sb := f.sandbox(t)
	p := "/v1/sandboxes/" + sb.ID() + "/exec"
	code, body, _ := f.call(t, "POST", p, `{"cmd":["echo","hi"]}`)
	var res apitype.ExecResponse
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 || res.Stdout != "hi\n" || res.Truncated || res.StdoutEncoding != "" {
		t.Errorf("exec echo: %d %s", code, body)
	}
	if !strings.Contains(body, `"duration_ms"`) || !strings.Contains(body, `"truncated":false`) {
		t.Errorf("exec answer lacks fields: %s", body)
	}
	code, body, _ = f.call(t, "POST", p, `{"cmd":["cat"],"stdin":"//79AA==","stdin_encoding":"base64"}`)
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 || res.StdoutEncoding != "base64" || res.Stdout != "//79AA==" {
		t.Errorf("binary exec: %d %s", code, body)
	}
	code, body, hdr := f.call(t, "POST", p, `{"shell":"echo a; echo b >&2; exit 2"}`, "Accept", "application/x-ndjson")
	if code != 200 || hdr.Get("Content-Type") != apitype.MediaNDJSON {
		t.Fatalf("ndjson: %d %s %v", code, body, hdr)
	}
	var types []string
	sc := bufio.NewScanner(strings.NewReader(body))
	var last apitype.Event
	for sc.Scan() {
		var ev apitype.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("ndjson line %q: %v", sc.Text(), err)
		}
		types = append(types, ev.Type+":"+ev.Data)
		last = ev
	}
	if last.Type != "exit" || last.ExitCode == nil || *last.ExitCode != 2 || !strings.Contains(strings.Join(types, ","), "stdout:a\n") || !strings.Contains(strings.Join(types, ","), "stderr:b\n") {
		t.Errorf("ndjson events %q, last %+v", types, last)
	}
	// An error before any output keeps its status on the streaming route.
	code, body, _ = f.call(t, "POST", p, `{"cmd":["no-such-program"]}`, "Accept", "application/x-ndjson")
	if code != 404 || errKind(t, body) != errdefs.KindNotFound {
		t.Errorf("ndjson missing program: %d %s", code, body)
	}
	// Output caps: the server never exceeds its own limit.
	f2 := newFixture(t, httpapi.Options{MaxExecOutput: 100})
	sb2 := f2.sandbox(t)
	res2, err := sb2.Exec(context.Background(), moat.ExecRequest{Cmd: []string{"head", "-c", "5000", "/dev/zero"}, MaxOutputBytes: 1 << 20})
	if err != nil || len(res2.Stdout) != 100 || !res2.StdoutTruncated {
		t.Errorf("server cap: %d bytes, truncated %v, %v", len(res2.Stdout), res2.StdoutTruncated, err)
	}
}

// TestClientVanishes cuts the connection in the middle of a streamed exec, a buffered exec
// and a WebSocket exec: each time the command must be killed and the server keep serving.
func TestClientVanishes(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	sb := f.sandbox(t)
	p := f.srv.URL + "/v1/sandboxes/" + sb.ID() + "/exec"
	waitRunning := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for f.env.Running() != n {
			if time.Now().After(deadline) {
				t.Fatalf("running = %d, want %d", f.env.Running(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, accept := range []string{apitype.MediaNDJSON, "application/json"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", p, strings.NewReader(`{"cmd":["`+moattest.BlockCommand+`"]}`))
		req.Header.Set("Accept", accept)
		req.Header.Set("Content-Type", "application/json")
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := f.srv.Client().Do(req)
			if err == nil {
				_, _ = bufio.NewReader(resp.Body).ReadString('\n')
				<-ctx.Done()
				resp.Body.Close()
			}
		}()
		waitRunning(1)
		cancel()
		<-done
		waitRunning(0)
	}
	// WebSocket: the client closes the TCP connection without a close handshake.
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(f.srv.URL, "http")+"/v1/sandboxes/"+sb.ID()+"/exec/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(context.Background(), websocket.MessageText, []byte(`{"cmd":["`+moattest.BlockCommand+`"]}`)); err != nil {
		t.Fatal(err)
	}
	waitRunning(1)
	c.CloseNow()
	waitRunning(0)
	res, err := sb.Exec(context.Background(), moat.ExecRequest{Cmd: []string{"echo", "still here"}})
	if err != nil || string(res.Stdout) != "still here\n" {
		t.Errorf("after vanishing clients: %q, %v", res.Stdout, err)
	}
}

func tarOf(t *testing.T, entries ...tar.Header) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		h := h
		content := []byte(h.Linkname)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(content))
			h.Linkname = ""
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write(content)
		}
	}
	_ = tw.Close()
	return &b
}

func TestArchiveAndDelete(t *testing.T) {
	f := newFixture(t, httpapi.Options{MaxArchiveEntries: 10})
	sb := f.sandbox(t)
	ctx := context.Background()
	// Linkname carries the file content in tarOf.
	good := tarOf(t,
		tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeReg, Name: "a.txt", Mode: 0o644, Linkname: "alpha"},
		tar.Header{Typeflag: tar.TypeReg, Name: "sub/b.txt", Mode: 0o600, Linkname: "beta"},
		tar.Header{Typeflag: tar.TypeDir, Name: "empty/", Mode: 0o755},
	)
	res, err := sb.PutArchive(ctx, "/workspace/proj", good, moat.ArchiveLimits{})
	if err != nil || res.Files != 2 || res.Bytes != 9 {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	var out bytes.Buffer
	if err := sb.GetArchive(ctx, "/workspace/proj", &out, moat.ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	got, err := tarfstest.Contents(&out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a.txt": "alpha", "empty/": "", "sub/": "", "sub/b.txt": "beta"}
	if len(got) != len(want) {
		t.Errorf("download = %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("download[%q] = %q, want %q", k, got[k], v)
		}
	}
	for name, bad := range map[string]*bytes.Buffer{
		"dotdot":   tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Linkname: "x"}),
		"nested":   tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "a/../../escape", Linkname: "x"}),
		"absolute": tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "/etc/passwd", Linkname: "x"}),
		"symlink":  tarOf(t, tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc"}),
		"hardlink": tarOf(t, tar.Header{Typeflag: tar.TypeLink, Name: "hl", Linkname: "a.txt"}),
		"device":   tarOf(t, tar.Header{Typeflag: tar.TypeChar, Name: "dev"}),
		"garbage":  bytes.NewBufferString(strings.Repeat("not a tar ", 100)),
	} {
		_, err := sb.PutArchive(ctx, "/workspace/x", bad, moat.ArchiveLimits{})
		if errdefs.KindOf(err) != errdefs.KindInvalidArgument {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
	}
	var many []tar.Header
	for i := range 11 {
		many = append(many, tar.Header{Typeflag: tar.TypeReg, Name: "f" + string(rune('a'+i)), Linkname: "x"})
	}
	_, err = sb.PutArchive(ctx, "/workspace/many", tarOf(t, many...), moat.ArchiveLimits{})
	if errdefs.KindOf(err) != errdefs.KindResourceExhausted {
		t.Errorf("too many entries: %v", err)
	}
	if infos, err := sb.ListDir(ctx, "/"); err == nil {
		for _, i := range infos {
			if i.Name == "escape" {
				t.Errorf("an archive escaped to /escape")
			}
		}
	}
	// Delete.
	if err := sb.Remove(ctx, "/workspace/proj/a.txt", false); err != nil {
		t.Fatal(err)
	}
	if err := sb.Remove(ctx, "/workspace/proj/a.txt", false); errdefs.KindOf(err) != errdefs.KindNotFound {
		t.Errorf("delete twice: %v", err)
	}
	if err := sb.Remove(ctx, "/workspace/proj/sub", false); errdefs.KindOf(err) != errdefs.KindFailedPrecondition {
		t.Errorf("delete dir without recursive: %v", err)
	}
	if err := sb.Remove(ctx, "/workspace/proj/sub", true); err != nil {
		t.Errorf("delete dir: %v", err)
	}
	if err := sb.Remove(ctx, "/workspace/../etc", true); errdefs.KindOf(err) != errdefs.KindInvalidArgument {
		t.Errorf("delete with ..: %v", err)
	}
	if err := sb.Remove(ctx, "/", true); errdefs.KindOf(err) != errdefs.KindInvalidArgument {
		t.Errorf("delete /: %v", err)
	}
	entries, _ := sb.ListDir(ctx, "/workspace/proj")
	if len(entries) != 1 || entries[0].Name != "empty" {
		t.Errorf("after deletes: %+v", entries)
	}
}

func TestFileLimits(t *testing.T) {
	f := newFixture(t, httpapi.Options{MaxFileBytes: 1000})
	sb := f.sandbox(t)
	err := sb.WriteFile(context.Background(), "/workspace/big", bytes.NewReader(make([]byte, 2000)), 0)
	if errdefs.KindOf(err) != errdefs.KindResourceExhausted {
		t.Errorf("file over limit: %v", err)
	}
	// Without a Content-Length the limit holds while streaming.
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(make([]byte, 2000)); pw.Close() }()
	err = sb.WriteFile(context.Background(), "/workspace/big2", pr, 0)
	if errdefs.KindOf(err) != errdefs.KindResourceExhausted {
		t.Errorf("streamed file over limit: %v", err)
	}
}

func TestOpenAPICoversRoutes(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	code, body, _ := f.call(t, "GET", "/v1/openapi.json", "")
	if code != 200 {
		t.Fatal(code)
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	routes := map[string]bool{}
	for _, r := range f.h.Routes() {
		method, path, _ := strings.Cut(r, " ")
		routes[strings.ToLower(method)+" "+path] = true
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for path, ops := range doc.Paths {
		for m := range ops {
			if !routes[m+" "+path] {
				t.Errorf("openapi.json documents %s %s, which is not served", m, path)
			}
		}
	}
	if len(routes) < 20 {
		t.Errorf("only %d routes", len(routes))
	}
}

func TestMetricsAndHealth(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	sb := f.sandbox(t)
	if _, err := sb.Exec(context.Background(), moat.ExecRequest{Cmd: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	code, body, _ := f.call(t, "GET", "/metrics", "")
	for _, want := range []string{
		`moat_http_requests_total{code="201",method="POST",route="POST /v1/sandboxes"} 1`,
		`moat_sandboxes{backend="fake",status="active"} 1`,
		`moat_exec_total{backend="fake",mode="json",result="ok"} 1`,
		`moat_exec_duration_seconds_count{backend="fake"} 1`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if err := f.c.Health(context.Background()); err != nil {
		t.Errorf("health: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = f.h.Shutdown(ctx)
	if code, _, _ := f.call(t, "GET", "/readyz", ""); code != 503 {
		t.Errorf("readyz while draining: %d", code)
	}
}

// TestShutdownCancels: Shutdown waits for in-flight work until its ctx ends, then kills it.
func TestShutdownCancels(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	sb := f.sandbox(t)
	done := make(chan error, 1)
	go func() {
		_, err := sb.Exec(context.Background(), moat.ExecRequest{Cmd: []string{moattest.BlockCommand}, Stdin: strings.NewReader("")})
		done <- err
	}()
	for f.env.Running() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := f.h.Shutdown(ctx); err == nil {
		t.Error("Shutdown returned nil although work was still running at its deadline")
	}
	if f.env.Running() != 0 {
		t.Error("command still running after Shutdown")
	}
	if err := testenv.Returned(t, done, 10*time.Second, "exec cut by shutdown"); err == nil {
		t.Error("exec cut by shutdown returned no error")
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		token bool
		ok    bool
	}{
		{"127.0.0.1:8080", false, true}, {"[::1]:0", false, true}, {"localhost:8080", false, true},
		{"0.0.0.0:8080", false, false}, {":8080", false, false}, {"10.1.2.3:80", false, false},
		{"0.0.0.0:8080", true, true}, {"nonsense", true, false},
	} {
		err := httpapi.CheckListen(tc.addr, tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, %v) = %v", tc.addr, tc.token, err)
		}
	}
}

// TestNoGoroutineLeak runs a mixed load including vanishing clients and checks that the
// goroutine count returns to its baseline once the server is closed.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		f := newFixture(t, httpapi.Options{})
		sb := f.sandbox(t)
		ctx := context.Background()
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch i % 3 {
				case 0:
					_, _ = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "x"}})
				case 1:
					_, _ = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"cat"}, Stdin: strings.NewReader("in")})
				default:
					cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
					_, _ = sb.Exec(cctx, moat.ExecRequest{Cmd: []string{moattest.BlockCommand}, Stdout: io.Discard})
					cancel()
				}
			}()
		}
		wg.Wait()
		_ = sb.Destroy(ctx)
		f.srv.CloseClientConnections()
		f.srv.Close()
		_ = f.h.Shutdown(ctx)
	}()
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsMethodLabelBounded: the method label comes from the client, also from clients
// without a token; made-up methods must not each grow a new time series.
func TestMetricsMethodLabelBounded(t *testing.T) {
	f := newFixture(t, httpapi.Options{Tokens: []string{token}})
	for i := range 5 {
		f.call(t, "X-MADE-UP-"+strings.Repeat("A", i), "/v1/sandboxes", "")
	}
	_, body, _ := f.call(t, "GET", "/metrics", "", "Authorization", "Bearer "+token)
	if strings.Contains(body, "MADE-UP") {
		t.Errorf("made-up methods became metric labels")
	}
	if !strings.Contains(body, `moat_http_requests_total{code="401",method="other",route="unmatched"} 5`) {
		t.Errorf("made-up methods not counted as \"other\":\n%s", grepLines(body, "moat_http_requests_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestOpenAPISchemasMatchWireTypes: every schema in openapi.json names exactly the JSON
// fields of the Go type that goes over the wire.
func TestOpenAPISchemasMatchWireTypes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	types := map[string]any{
		"Spec": moat.Spec{}, "Sandbox": apitype.Sandbox{}, "Limits": moat.Limits{},
		"ExecRequest": apitype.ExecRequest{}, "ExecResponse": apitype.ExecResponse{},
		"Event": apitype.Event{}, "TerminalRequest": apitype.TerminalRequest{},
		"FileInfo": moat.FileInfo{}, "FileList": apitype.FileList{}, "ArchiveResult": apitype.ArchiveResult{},
		"SessionBackend": apitype.SessionBackend{}, "BackendSettings": apitype.BackendSettings{},
		"BackendReport": moat.BackendReport{}, "Snapshot": apitype.Snapshot{},
		"PortResponse": apitype.PortResponse{}, "Health": apitype.Health{}, "Error": apitype.Error{},
		"Session": apitype.Session{}, "SessionPatch": apitype.SessionPatch{}, "LimitsPatch": apitype.LimitsPatch{},
		"SessionList": apitype.SessionList{}, "SessionTeardown": apitype.SessionTeardown{},
		"SandboxFailure": apitype.SandboxFailure{},
	}
	for name := range doc.Components.Schemas {
		if _, ok := types[name]; !ok {
			t.Errorf("schema %s has no wire type in this test", name)
		}
	}
	for name, v := range types {
		sch, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		var documented []string
		for k := range sch.Properties {
			documented = append(documented, k)
		}
		slices.Sort(documented)
		if got := jsonFields(reflect.TypeOf(v)); !slices.Equal(got, documented) {
			t.Errorf("schema %s documents %q; the Go type sends %q", name, documented, got)
		}
	}
}

// jsonFields returns the sorted JSON names of a struct's fields (embedded structs inlined).
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
			continue
		case name == "" && f.Anonymous:
			out = append(out, jsonFields(f.Type)...)
			continue
		case name == "":
			name = f.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
