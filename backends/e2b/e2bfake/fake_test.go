package e2bfake_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/backends/host"
)

// These tests speak the wire protocol by hand, independently of the client in package e2b,
// so the fake's framing and error shapes are pinned on their own.

func startFake(t *testing.T) (*e2bfake.Server, *httptest.Server) {
	t.Helper()
	runner, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fake := e2bfake.New(e2bfake.Options{Token: "e2b_k", Backend: runner})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() { srv.Close(); fake.Close() })
	return fake, srv
}

func do(t *testing.T, method, url string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func createSandbox(t *testing.T, srv *httptest.Server) (id, token string) {
	t.Helper()
	resp, b := do(t, "POST", srv.URL+"/v2/sandboxes", map[string]string{"X-API-Key": "e2b_k", "Content-Type": "application/json"},
		[]byte(`{"templateID":"base","timeout":60}`))
	var sb struct {
		SandboxID       string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
		EnvdVersion     string `json:"envdVersion"`
	}
	if resp.StatusCode != 201 || json.Unmarshal(b, &sb) != nil || sb.SandboxID == "" || sb.EnvdAccessToken == "" || sb.EnvdVersion == "" {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	return sb.SandboxID, sb.EnvdAccessToken
}

func TestControlPlaneErrors(t *testing.T) {
	_, srv := startFake(t)
	for _, tc := range []struct {
		key, method, path string
		status            int
		msg               string
	}{
		{"", "GET", "/v2/sandboxes", 401, "authorization header is missing"},
		{"e2b_wrong", "GET", "/v2/sandboxes", 401, "Invalid API key"},
		{"e2b_k", "GET", "/sandboxes/nope", 404, `sandbox "nope" doesn't exist`},
		{"e2b_k", "DELETE", "/sandboxes/nope", 404, "doesn't exist"},
		{"e2b_k", "POST", "/v2/sandboxes", 400, "templateID"},
	} {
		resp, b := do(t, tc.method, srv.URL+tc.path, map[string]string{"X-API-Key": tc.key}, []byte(`{}`))
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if resp.StatusCode != tc.status || json.Unmarshal(b, &e) != nil || e.Code != tc.status || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s %s (key %q): %d %s; want %d with %q", tc.method, tc.path, tc.key, resp.StatusCode, b, tc.status, tc.msg)
		}
	}
}

func frame(flags byte, payload string) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

// readFrames splits a server-stream body into (flags, payload) pairs.
func readFrames(t *testing.T, b []byte) (flags []byte, msgs []string) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("trailing %d bytes", len(b))
		}
		n := binary.BigEndian.Uint32(b[1:5])
		flags = append(flags, b[0])
		msgs = append(msgs, string(b[5:5+n]))
		b = b[5+n:]
	}
	return flags, msgs
}

func TestEnvdWire(t *testing.T) {
	_, srv := startFake(t)
	id, token := createSandbox(t, srv)
	h := map[string]string{"E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "49983", "X-Access-Token": token,
		"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}

	// Server stream: start, data, end (exit code 0 left out, as proto3 JSON does), then an
	// empty end-of-stream message.
	resp, b := do(t, "POST", srv.URL+"/process.Process/Start", h,
		frame(0, `{"process":{"cmd":"/bin/sh","args":["-c","printf hi"]},"stdin":false}`))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/connect+json" {
		t.Fatalf("Start: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	flags, msgs := readFrames(t, b)
	last := len(msgs) - 1
	if len(msgs) < 4 || !strings.Contains(msgs[0], `"start":{"pid":`) || !strings.Contains(strings.Join(msgs, ""), `"stdout":"aGk="`) ||
		!strings.Contains(msgs[last-1], `"end":{`) || strings.Contains(msgs[last-1], "exitCode") ||
		flags[last] != 0x02 || strings.TrimSpace(msgs[last]) != "{}" {
		t.Fatalf("stream frames %v %q", flags, msgs)
	}

	// A missing cwd ends the stream with a Connect error, still with HTTP 200.
	resp, b = do(t, "POST", srv.URL+"/process.Process/Start", h,
		frame(0, `{"process":{"cmd":"/bin/true","cwd":"/no/such/dir"}}`))
	flags, msgs = readFrames(t, b)
	if resp.StatusCode != 200 || len(msgs) != 1 || flags[0] != 0x02 || !strings.Contains(msgs[0], `"code":"invalid_argument"`) {
		t.Fatalf("bad cwd: %d %v %q", resp.StatusCode, flags, msgs)
	}

	// Unary errors: HTTP status from the Connect code, JSON {code, message}.
	h["Content-Type"] = "application/json"
	resp, b = do(t, "POST", srv.URL+"/process.Process/SendSignal", h, []byte(`{"process":{"pid":9999},"signal":"SIGNAL_SIGKILL"}`))
	if resp.StatusCode != 404 || !strings.Contains(string(b), `"code":"not_found"`) {
		t.Fatalf("SendSignal unknown pid: %d %s", resp.StatusCode, b)
	}
	resp, b = do(t, "POST", srv.URL+"/filesystem.Filesystem/ListDir", h, []byte(`{"path":"/nope","depth":1}`))
	if resp.StatusCode != 404 || !strings.Contains(string(b), `"code":"not_found"`) {
		t.Fatalf("ListDir missing: %d %s", resp.StatusCode, b)
	}

	// envd rejects a wrong access token with its plain JSON error.
	h["X-Access-Token"] = "wrong"
	resp, b = do(t, "POST", srv.URL+"/filesystem.Filesystem/ListDir", h, []byte(`{"path":"/"}`))
	if resp.StatusCode != 401 || !strings.Contains(string(b), `"code":401`) {
		t.Fatalf("wrong access token: %d %s", resp.StatusCode, b)
	}

	// The edge proxy answers 502 for an unknown sandbox.
	h["E2b-Sandbox-Id"] = "gone"
	resp, b = do(t, "GET", srv.URL+"/files?path=/x", h, nil)
	if resp.StatusCode != 502 || !strings.Contains(string(b), "The sandbox was not found") {
		t.Fatalf("unknown sandbox: %d %s", resp.StatusCode, b)
	}
}

func TestFaultsAndPagination(t *testing.T) {
	fake, srv := startFake(t)
	for range 3 {
		createSandbox(t, srv)
	}
	key := map[string]string{"X-API-Key": "e2b_k"}
	fake.Inject(e2bfake.Fault{Count: 1, Status: 429, RetryAfter: "2", PathPrefix: "/v2/sandboxes"})
	resp, _ := do(t, "GET", srv.URL+"/v2/sandboxes", key, nil)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("injected 429: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	seen := map[string]bool{}
	next := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		url := srv.URL + "/v2/sandboxes?limit=2"
		if next != "" {
			url += "&nextToken=" + next
		}
		resp, b := do(t, "GET", url, key, nil)
		var page []struct {
			SandboxID string `json:"sandboxID"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &page) != nil || len(page) > 2 {
			t.Fatalf("page: %d %s", resp.StatusCode, b)
		}
		for _, s := range page {
			seen[s.SandboxID] = true
		}
		if next = resp.Header.Get("X-Next-Token"); next == "" {
			break
		}
	}
	if len(seen) != 3 {
		t.Fatalf("pages covered %d sandboxes, want 3", len(seen))
	}
}
