package httpapi_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
)

// TestBoundsAre4xx sends what hostile callers sent (each was a 5xx or a 201 before) and
// wants a 4xx with a kind for each.
func TestBoundsAre4xx(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	sb := f.sandbox(t)
	id := sb.ID()
	env7MB := `{"cmd":["true"],"env":{"BIG":"` + strings.Repeat("e", 7<<20) + `"}}`
	argv7MB := `{"cmd":["echo","` + strings.Repeat("a", 7<<20) + `"]}`
	var tarDeep bytes.Buffer
	tw := tar.NewWriter(&tarDeep)
	_ = tw.WriteHeader(&tar.Header{Name: strings.Repeat("d/", 2000) + "f", Typeflag: tar.TypeReg, Mode: 0o644})
	_ = tw.Close()
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"pids 2^63-1", "POST", "/v1/sandboxes", `{"limits":{"pids":9223372036854775807}}`, 400},
		{"9.2 EB of memory", "POST", "/v1/sandboxes", `{"limits":{"memory_bytes":9223372036854775807}}`, 400},
		{"memory beyond int64", "POST", "/v1/sandboxes", `{"limits":{"memory_bytes":1e30}}`, 400},
		{"cpus 1e308", "POST", "/v1/sandboxes", `{"limits":{"cpus":1e308}}`, 400},
		{"session id with a control character", "POST", "/v1/sandboxes", `{"session_id":"a\u0007b"}`, 400},
		{"7 MB of env", "POST", "/v1/sandboxes/" + id + "/exec", env7MB, 400},
		{"7 MB of argv", "POST", "/v1/sandboxes/" + id + "/exec", argv7MB, 400},
		{"5000-byte path", "GET", "/v1/sandboxes/" + id + "/files?path=/" + strings.Repeat("p", 5000), "", 400},
		{"100000-byte path", "PUT", "/v1/sandboxes/" + id + "/files?path=/" + strings.Repeat("q/", 50000), "x", 400},
		{"100000-byte dir", "PUT", "/v1/sandboxes/" + id + "/dirs?path=/" + strings.Repeat("r", 100000), "", 400},
		{"2000-deep tar path", "PUT", "/v1/sandboxes/" + id + "/archive?path=/workspace/t", tarDeep.String(), 400},
		{"PATCH a sandbox", "PATCH", "/v1/sandboxes/" + id, `{}`, 405},
		{"PATCH the list", "PATCH", "/v1/sandboxes", `{}`, 405},
		{"POST a file", "POST", "/v1/sandboxes/" + id + "/files?path=/x", `{}`, 405},
		{"DELETE backends", "DELETE", "/v1/backends", "", 405},
	} {
		code, body, hdr := f.call(t, tc.method, tc.path, tc.body)
		if code != tc.status || errKind(t, body) == errdefs.KindUnknown {
			t.Errorf("%s: %d %.300s; want %d with a kind", tc.name, code, body, tc.status)
		}
		if code == 405 && hdr.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", tc.name)
		}
	}
	allow := func(path string) string {
		_, _, hdr := f.call(t, "PATCH", path, "{}")
		return hdr.Get("Allow")
	}
	if got := allow("/v1/sandboxes/" + id); got != "GET, HEAD, DELETE" {
		t.Errorf("Allow of a sandbox = %q", got)
	}
	if got := allow("/v1/sandboxes/" + id + "/files"); got != "GET, HEAD, PUT, DELETE" {
		t.Errorf("Allow of files = %q", got)
	}
	if code, _, _ := f.call(t, "PATCH", "/v1/no/such/route", "{}"); code != 404 {
		t.Errorf("PATCH of an unknown route: %d, want 404", code)
	}
}

// TestDecoderProperty throws generated requests at every route of a server over the fake
// backend (which never fails by itself): none may be answered with a 5xx, and every error
// carries a kind. Bounded: a fixed number of requests from a logged seed.
func TestDecoderProperty(t *testing.T) {
	f := newFixture(t, httpapi.Options{MaxJSONBytes: 1 << 20})
	sb := f.sandbox(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	g := &gen{r: rand.New(rand.NewPCG(seed, 16))}
	n := 400
	if testing.Short() {
		n = 100
	}
	statuses := map[int]int{}
	for i := 0; i < n; i++ {
		method, path, body := g.request(sb.ID())
		code, resp, _ := f.call(t, method, path, body)
		statuses[code]++
		if code >= 500 && !(code == 501 && strings.Contains(resp, `"unsupported"`)) {
			t.Errorf("%s %.200s %.300s → %d %.300s", method, path, body, code, resp)
		}
		if code >= 400 {
			if k := errKind(t, resp); k == errdefs.KindUnknown {
				t.Errorf("%s %.200s → %d without a kind: %.300s", method, path, code, resp)
			}
		}
	}
	t.Logf("statuses: %v", statuses)
	// Whatever was created goes: the fixture's checks want no sandbox left behind.
	var list struct {
		Sandboxes []struct{ ID string } `json:"sandboxes"`
	}
	_, body, _ := f.call(t, "GET", "/v1/sandboxes", "")
	_ = json.Unmarshal([]byte(body), &list)
	for _, s := range list.Sandboxes {
		f.call(t, "DELETE", "/v1/sandboxes/"+s.ID, "")
	}
}

type gen struct{ r *rand.Rand }

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

// str is a string that is sometimes hostile: long, deep, with control characters, NUL,
// invalid UTF-8 or "..".
func (g *gen) str() string {
	switch g.r.IntN(16) {
	case 0:
		return strings.Repeat("a", g.r.IntN(300_000))
	case 1:
		return strings.Repeat("x/", g.r.IntN(3000))
	case 2:
		return "a\x00b"
	case 3:
		return "\xff\xfe"
	case 4:
		return "../../etc/passwd"
	case 5:
		return string(rune(g.r.IntN(0x20))) + "ctl"
	case 6:
		return ""
	case 7:
		return "/" + strings.Repeat("n", g.r.IntN(6000))
	}
	return g.pick("ok", "/workspace/f", "hello world", "日本語", "x=y", "-rf")
}

// num is a number that is sometimes out of every range.
func (g *gen) num() any {
	switch g.r.IntN(8) {
	case 0:
		return int64(math.MaxInt64)
	case 1:
		return int64(math.MinInt64)
	case 2:
		return -1
	case 3:
		return 1e300
	case 4:
		return json.Number("1e400")
	case 5:
		return 0.0001
	case 6:
		return g.str()
	}
	return g.r.Int64N(1 << 34)
}

func (g *gen) strMap() map[string]any {
	m := map[string]any{}
	for range g.r.IntN(4) {
		m[g.pick("A", "B_2", "bad-key", "", "k/v", g.str())] = g.str()
	}
	return m
}

func (g *gen) spec() map[string]any {
	m := map[string]any{}
	fields := map[string]func() any{
		"name":       func() any { return g.str() },
		"image":      func() any { return g.pick("", "fake:latest", g.str()) },
		"session_id": func() any { return g.str() },
		"workdir":    func() any { return g.str() },
		"env":        func() any { return g.strMap() },
		"labels":     func() any { return g.strMap() },
		"network":    func() any { return g.pick("none", "host", "bridge", "") },
		"ttl":        func() any { return g.pick("1h", "-5s", "forever", "1e9h") },
		"options":    func() any { return map[string]any{"x": g.num()} },
		"limits": func() any {
			return map[string]any{"memory_bytes": g.num(), "cpus": g.num(), "pids": g.num(), "disk_bytes": g.num()}
		},
		"unknown": func() any { return 1 },
	}
	for k, v := range fields {
		if g.r.IntN(6) == 0 {
			m[k] = v()
		}
	}
	return m
}

func (g *gen) exec() map[string]any {
	m := map[string]any{}
	switch g.r.IntN(3) {
	case 0:
		argv := []any{g.pick("true", "echo", "cat", "no-such", "", g.str())}
		for range g.r.IntN(4) {
			argv = append(argv, g.str())
		}
		m["cmd"] = argv
	case 1:
		m["shell"] = g.pick("echo hi", "exit 3", g.str())
	}
	if g.r.IntN(2) == 0 {
		m["env"] = g.strMap()
	}
	if g.r.IntN(3) == 0 {
		m["workdir"] = g.str()
	}
	if g.r.IntN(3) == 0 {
		m["stdin"], m["stdin_encoding"] = g.str(), g.pick("", "base64", "rot13")
	}
	if g.r.IntN(3) == 0 {
		m["timeout_ms"] = g.num()
	}
	if g.r.IntN(3) == 0 {
		m["max_output_bytes"] = g.num()
	}
	return m
}

// body is JSON of v, or sometimes not JSON at all.
func (g *gen) body(v any) string {
	switch g.r.IntN(12) {
	case 0:
		return `{"name":`
	case 1:
		return `[]`
	case 2:
		return "\xff"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func (g *gen) request(id string) (method, path, body string) {
	sid := g.pick(id, id, "sb-nope", "", "..", g.str())
	q := func(k string, vs ...string) string { return k + "=" + url.QueryEscape(g.pick(vs...)) }
	switch g.r.IntN(9) {
	case 0, 1:
		return "POST", "/v1/sandboxes", g.body(g.spec())
	case 2:
		return "POST", "/v1/sandboxes/" + url.PathEscape(sid) + "/exec", g.body(g.exec())
	case 3:
		return "PUT", "/v1/sandboxes/" + url.PathEscape(sid) + "/files?" + q("path", g.str()) + "&" + q("mode", "", "0644", "999", "-1", "99999999999999999999"), g.str()
	case 4:
		return "GET", "/v1/sandboxes/" + url.PathEscape(sid) + "/files?" + q("path", g.str()) + "&" + q("list", "", "1", "x"), ""
	case 5:
		return g.pick("PUT", "DELETE"), "/v1/sandboxes/" + url.PathEscape(sid) + g.pick("/dirs", "/files") + "?" + q("path", g.str()) + "&" + q("recursive", "1", ""), ""
	case 6:
		return "GET", "/v1/sandboxes?" + q("status", "active", "sleepy", g.str()) + "&" + q("label", "a=b", "novalue", g.str()) + "&" + q("name", g.str()), ""
	case 7:
		return g.pick("PUT", "GET"), "/v1/sandboxes/" + url.PathEscape(sid) + "/archive?" + q("path", g.str()) + "&" + q("max_bytes", "-1", "1", "99999999999999999999999"), g.str()
	}
	return g.pick(http.MethodPatch, http.MethodPost, http.MethodPut, http.MethodDelete), "/v1/" + g.pick("sandboxes", "backends", "sessions/"+url.PathEscape(g.str())+"/backend", "settings/backends/"+url.PathEscape(g.str())), g.body(g.spec())
}
