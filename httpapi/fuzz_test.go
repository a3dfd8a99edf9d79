package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/store/memstore"
)

// fuzzRoutes are the request bodies FuzzAPIRequest drives: the route is chosen by the
// input's first argument (modulo the count); "{id}" is a live sandbox.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/v1/sandboxes"},
	{"POST", "/v1/sandboxes/{id}/exec"},
	{"POST", "/v1/sandboxes/{id}/exec"}, // with Accept: application/x-ndjson
	{"PUT", "/v1/settings/backends/vercel"},
	{"PUT", "/v1/settings/backends/daytona"},
	{"PUT", "/v1/settings/backends/e2b"},
	{"PUT", "/v1/settings/backends/fake"},
	{"PUT", "/v1/sessions/s1/backend"},
	{"POST", "/v1/sandboxes/{id}/snapshots"},
	{"PUT", "/v1/sandboxes/{id}/files?path=/workspace/f"},
	{"PUT", "/v1/sandboxes/{id}/archive?path=/workspace/d"},
}

// FuzzAPIRequest sends arbitrary bodies to the create, exec, settings, session, snapshot,
// file and archive routes of the real handler over the fake backend (which never fails on
// its own): no body may yield a 5xx, a panic, a non-JSON error or an error without a
// kind. A 201 create answers a sandbox that exists.
func FuzzAPIRequest(f *testing.F) {
	seeds := []struct {
		route uint8
		body  string
	}{
		{0, `{}`},
		{0, `{"name":"a","image":"busybox","workdir":"/w","env":{"A":"1"},"labels":{"k":"v"},"limits":{"memory_bytes":67108864,"cpus":1.5,"pids":64},"ttl":"1h","network":"none"}`},
		{0, `{"limits":{"pids":9223372036854775807,"memory_bytes":9223372036854775807,"cpus":1e308}}`},
		{0, `{"workdir":"../../etc","env":{"1BAD":"x"},"network":"host"}`},
		{0, `{"ttl":"-1s","options":{"x":[1,2]}}`},
		{0, `{"backend":"nope","image":"/etc"}`},
		{0, `[1,2]`},
		{0, `{"name":"` + string(bytes.Repeat([]byte("x"), 300)) + `"}`},
		{1, `{"cmd":["echo","hi"]}`},
		{1, `{"shell":"echo hi; exit 3","env":{"A":"b"},"workdir":"/workspace"}`},
		{1, `{"cmd":["cat"],"stdin":"aGk=","stdin_encoding":"base64"}`},
		{1, `{"cmd":["cat"],"stdin":"%%%","stdin_encoding":"base64"}`},
		{1, `{"cmd":[],"timeout_ms":-1}`},
		{1, `{"cmd":["true"],"timeout_ms":9223372036854775807,"max_output_bytes":-5}`},
		{2, `{"cmd":["sh","-c","echo out; echo err >&2"]}`},
		{1, `{"cmd":["x"],"workdir":"../.."}`},
		{3, `{"token":"t","project_id":"prj_1","team_id":"team"}`},
		{3, `{"token":5}`},
		{4, `{"api_key":"k","api_url":"http://127.0.0.1:1/api","target":"us"}`},
		{4, `{"api_url":"not a url"}`},
		{5, `{"api_key":"k","domain":"example.invalid"}`},
		{6, `{"anything":true}`},
		{7, `{"backend":"fake"}`},
		{7, `{"backend":"nope"}`},
		{8, `{"name":"snap1"}`},
		{8, `{"name":""}`},
		{8, `{"name":"../x"}`},
		{9, "raw file bytes"},
		{10, "not a tar"},
		{0, ``},
		{0, `{"name":"a"} trailing`},
	}
	for _, s := range seeds {
		f.Add(s.route, []byte(s.body))
	}

	m, h, id := fuzzServer(f)

	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		path := rt.path
		if i := bytes.Index([]byte(path), []byte("{id}")); i >= 0 {
			path = path[:i] + id + path[i+4:]
		}
		req := httptest.NewRequestWithContext(ctx, rt.method, path, bytes.NewReader(body))
		if int(route)%len(fuzzRoutes) < 9 {
			req.Header.Set("Content-Type", "application/json")
		}
		if int(route)%len(fuzzRoutes) == 2 {
			req.Header.Set("Accept", apitype.MediaNDJSON)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if ctx.Err() != nil {
			return // a command that ran past our patience: the caller left, no answer to judge
		}
		res := w.Result()
		out, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, rt.path, body, res.StatusCode, out)
		}
		if res.StatusCode >= 400 {
			var e apitype.Error
			if err := json.Unmarshal(out, &e); err != nil || e.Error.Kind == "" || e.Error.Message == "" {
				t.Fatalf("%s %s: %d with a body that is not a JSON error with a kind: %s", rt.method, rt.path, res.StatusCode, out)
			}
		}
		if rt.path == "/v1/sandboxes" && res.StatusCode == http.StatusCreated {
			var info moat.Info
			if err := json.Unmarshal(out, &info); err != nil || info.ID == "" {
				t.Fatalf("201 without a sandbox: %s", out)
			}
			if _, err := m.Get(context.Background(), info.ID); err != nil {
				t.Fatalf("created sandbox %s is not there: %v", info.ID, err)
			}
			_ = m.Destroy(context.Background(), info.ID) // keep the fake's memory bounded
		}
	})
}

// fuzzServer is moatd's shape over a fake: the hosted backends from their factories (so
// settings rebuild them), the fake as the default, and one live sandbox whose id it returns.
func fuzzServer(f *testing.F) (*moat.Manager, *httpapi.Server, string) {
	opts := []moat.Option{moat.WithoutRegistered(), moat.WithBackend("fake", fake.New())}
	for _, n := range []string{"vercel", "daytona", "e2b"} {
		fac, ok := backend.Lookup(n)
		if !ok {
			f.Fatalf("backend %s is not registered", n)
		}
		opts = append(opts, moat.WithFactory(n, fac))
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Home: f.TempDir(),
		Sandbox: moat.SandboxConfig{Backend: "fake"}, Getenv: func(string) string { return "" }}, opts...)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = m.Close() })
	h := httpapi.New(m, httpapi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxJSONBytes: 64 << 10})
	f.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	sb, err := m.Create(context.Background(), moat.Spec{})
	if err != nil {
		f.Fatal(err)
	}
	return m, h, sb.ID()

}

// FuzzAPIFields builds well-formed create and exec bodies from fuzzed field values, so the
// fuzzer explores values rather than JSON syntax: still never a 5xx, and a 201 or a 200
// only for values the manager accepts (a created sandbox's spec is what was asked for).
func FuzzAPIFields(f *testing.F) {
	f.Add("a", "busybox", "/workspace", int64(64<<20), int64(64), 1.5, "1h", "A", "1", "k", "v", "none", "echo hi", int64(0))
	f.Add("", "", "", int64(0), int64(0), 0.0, "", "", "", "", "", "", "", int64(0))
	f.Add("-bad", "/etc", "../x", int64(-1), int64(1<<62), -1.0, "-5s", "1A", "\x00", "k/..", "\xff", "host", "exit 300", int64(-1))
	f.Add("x", "img", "/a/../b", int64(9223372036854775807), int64(9223372036854775807), 1e308, "9999999h", "PATH", "", "a.b/c", "v", "bridge", "cd /nope", int64(1))
	m, h, id := fuzzServer(f)
	f.Fuzz(func(t *testing.T, name, image, workdir string, mem, pids int64, cpus float64, ttl, envK, envV, labelK, labelV, network, shell string, timeoutMS int64) {
		spec := map[string]any{"name": name, "image": image, "workdir": workdir, "ttl": ttl, "network": network,
			"limits": map[string]any{"memory_bytes": mem, "pids": pids, "cpus": cpus}}
		if envK != "" {
			spec["env"] = map[string]string{envK: envV}
		}
		if labelK != "" {
			spec["labels"] = map[string]string{labelK: labelV}
		}
		if ttl == "" {
			delete(spec, "ttl")
		}
		body, err := json.Marshal(spec)
		if err != nil {
			return // NaN or Inf cpus: not expressible in JSON
		}
		code, out := fuzzDo(t, h, "POST", "/v1/sandboxes", body)
		if code == http.StatusCreated {
			var info moat.Info
			if err := json.Unmarshal(out, &info); err != nil || info.ID == "" {
				t.Fatalf("201 without a sandbox: %s", out)
			}
			if name != "" && info.Name != name {
				t.Fatalf("created %q, asked for name %q", info.Name, name)
			}
			_ = m.Destroy(context.Background(), info.ID)
		}
		ex := map[string]any{"shell": shell, "workdir": workdir, "timeout_ms": timeoutMS, "max_output_bytes": mem}
		if envK != "" {
			ex["env"] = map[string]string{envK: envV}
		}
		body, _ = json.Marshal(ex)
		fuzzDo(t, h, "POST", "/v1/sandboxes/"+id+"/exec", body)
	})
}

// fuzzDo sends one JSON request and fails on a 5xx or an error body without a kind.
func fuzzDo(t *testing.T, h http.Handler, method, path string, body []byte) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if ctx.Err() != nil {
		return 0, nil
	}
	res := w.Result()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 500 {
		t.Fatalf("%s %s %s: %d %s", method, path, body, res.StatusCode, out)
	}
	if res.StatusCode >= 400 {
		var e apitype.Error
		if err := json.Unmarshal(out, &e); err != nil || e.Error.Kind == "" || e.Error.Message == "" {
			t.Fatalf("%s %s: %d with a body that is not a JSON error with a kind: %s", method, path, res.StatusCode, out)
		}
	}
	return res.StatusCode, out
}
