package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/httpapi"
)

// TestSessionWire checks the session routes' JSON rules: PUT's body id must match the
// path, PATCH merges (null removes an env key), unknown fields are 400, and the /backend
// sub-resource is the record's backend.
func TestSessionWire(t *testing.T) {
	f := newFixture(t, httpapi.Options{})
	code, body, _ := f.call(t, "PUT", "/v1/sessions/a%2Fb", `{"id":"other"}`)
	if code != 400 || !strings.Contains(body, "invalid_argument") {
		t.Errorf("PUT with another id: %d %s", code, body)
	}
	code, body, _ = f.call(t, "PUT", "/v1/sessions/a%2Fb", `{"image":"img","env":{"A":"1","B":"2"},"limits":{"memory_bytes":67108864}}`)
	var s apitype.Session
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil || s.ID != "a/b" || s.Mode != "isolated" {
		t.Fatalf("PUT: %d %s", code, body)
	}
	code, body, _ = f.call(t, "PATCH", "/v1/sessions/a%2Fb", `{"env":{"A":null,"C":"3"},"limits":{"pids":10},"backend":"fake"}`)
	s = apitype.Session{}
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil || len(s.Env) != 2 || s.Env["B"] != "2" || s.Env["C"] != "3" ||
		s.Limits.MemoryBytes != 64<<20 || s.Limits.PIDs != 10 || s.Image != "img" {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	if code, body, _ := f.call(t, "PATCH", "/v1/sessions/a%2Fb", `{"imag":"x"}`); code != 400 {
		t.Errorf("PATCH with an unknown field: %d %s", code, body)
	}
	if code, body, _ := f.call(t, "GET", "/v1/sessions/a%2Fb/backend", ""); code != 200 || !strings.Contains(body, `"backend":"fake"`) {
		t.Errorf("GET /backend: %d %s", code, body)
	}
	if code, body, _ := f.call(t, "GET", "/v1/sessions", ""); code != 200 || !strings.Contains(body, `"id":"a/b"`) {
		t.Errorf("GET /v1/sessions: %d %s", code, body)
	}
	if code, body, _ := f.call(t, "GET", "/v1/sessions/bad%0Aid", ""); code != 400 {
		t.Errorf("GET a bad id: %d %s", code, body)
	}
	if code, body, _ := f.call(t, "PUT", "/v1/sessions/h", `{"mode":"host"}`); code != 403 || !strings.Contains(body, "allow_unisolated") {
		t.Errorf("PUT mode host: %d %s", code, body)
	}
	if code, body, _ := f.call(t, "DELETE", "/v1/sessions/a%2Fb/sandboxes", ""); code != 200 || body != `{"session":"a/b","destroyed":[]}`+"\n" {
		t.Errorf("DELETE sandboxes of an empty session: %d %q", code, body)
	}
	if code, _, _ := f.call(t, "DELETE", "/v1/sessions/a%2Fb", ""); code != 204 {
		t.Errorf("DELETE: %d", code)
	}
	if code, _, _ := f.call(t, "GET", "/v1/sessions/a%2Fb", ""); code != 404 {
		t.Errorf("GET after DELETE: %d", code)
	}
}
