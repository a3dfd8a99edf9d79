package httpapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/backend"
	_ "github.com/moatsh/moat/backends/daytona"
	_ "github.com/moatsh/moat/backends/e2b"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/backends/vercel"
	"github.com/moatsh/moat/backends/vercel/vercelfake"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/syncbuf"
	"github.com/moatsh/moat/store/memstore"
)

// settingsFixture is moatd's shape for settings: the hosted backends built from their
// registered factories (so saved settings rebuild them), and a fake to run sandboxes on.
func settingsFixture(t *testing.T, env map[string]string) (*fixture, *moat.Manager) {
	t.Helper()
	opts := []moat.Option{moat.WithoutRegistered(), moat.WithBackend("fake", fake.New())}
	for _, n := range []string{"vercel", "daytona", "e2b"} {
		f, ok := backend.Lookup(n)
		if !ok {
			t.Fatalf("backend %s is not registered", n)
		}
		opts = append(opts, moat.WithFactory(n, f))
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Home: t.TempDir(),
		Getenv: func(k string) string { return env[k] }}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	f := &fixture{logs: &syncbuf.Buffer{}}
	f.h = httpapi.New(m, httpapi.Options{Logger: slog.New(slog.NewJSONHandler(f.logs, nil))})
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(func() {
		f.srv.Close()
		_ = f.h.Shutdown(context.Background())
	})
	if f.c, err = client.New(f.srv.URL); err != nil {
		t.Fatal(err)
	}
	return f, m
}

func TestSettings(t *testing.T) {
	env := map[string]string{"DAYTONA_API_KEY": "env-daytona-key", "VERCEL_TEAM_ID": "team-from-env"}
	f, _ := settingsFixture(t, env)
	const secret = "vercel-secret-token-123"
	code, body, _ := f.call(t, "PUT", "/v1/settings/backends/vercel", `{"token":"`+secret+`","project_id":"prj_1"}`)
	if code != 200 || strings.Contains(body, secret) {
		t.Fatalf("put: %d %s", code, body)
	}
	var v apitype.BackendSettings
	if err := json.Unmarshal([]byte(body), &v); err != nil || !v.TokenConfigured || v.FromEnv || v.Values["project_id"] != "prj_1" || v.Values["team_id"] != "team-from-env" {
		t.Errorf("put answer: %s", body)
	}
	if len(v.Fields) != len(vercel.Settings) || v.Fields[0].Key != "token" || !v.Fields[0].Secret || v.Fields[0].Env[0] != "VERCEL_TOKEN" {
		t.Errorf("the view does not carry the backend's own schema: %+v", v.Fields)
	}
	code, body, _ = f.call(t, "GET", "/v1/settings/backends", "")
	if code != 200 || strings.Contains(body, secret) || strings.Contains(body, "env-daytona-key") {
		t.Fatalf("list leaks a secret: %d %s", code, body)
	}
	var list apitype.BackendSettingsList
	_ = json.Unmarshal([]byte(body), &list)
	got := map[string]apitype.BackendSettings{}
	var names []string
	for _, b := range list.Backends {
		got[b.Name] = b
		names = append(names, b.Name)
	}
	// Only compiled-in backends with settings appear: not fake, not modal or runloop.
	if strings.Join(names, ",") != "daytona,e2b,vercel" {
		t.Errorf("settings list names %v, want daytona,e2b,vercel", names)
	}
	if d := got["daytona"]; !d.TokenConfigured || !d.FromEnv || !d.Secrets["token"].FromEnv {
		t.Errorf("daytona from env: %+v", d)
	}
	if e := got["e2b"]; e.TokenConfigured || e.FromEnv {
		t.Errorf("e2b without key: %+v", e)
	}
	// api_key is daytona's deprecated name of token: still accepted.
	if code, body, _ := f.call(t, "PUT", "/v1/settings/backends/daytona", `{"api_key":"explicit-key"}`); code != 200 || !strings.Contains(body, `"token":{"configured":true,"from_env":false`) {
		t.Errorf("PUT daytona api_key (deprecated alias): %d %s", code, body)
	}
	_, body, _ = f.call(t, "GET", "/v1/settings/backends/daytona", "")
	if !strings.Contains(body, `"from_env":false`) || strings.Contains(body, "explicit-key") {
		t.Errorf("daytona after explicit: %s", body)
	}
	// null removes the saved value: the environment applies again.
	f.call(t, "PUT", "/v1/settings/backends/daytona", `{"token":null}`)
	_, body, _ = f.call(t, "GET", "/v1/settings/backends/daytona", "")
	if !strings.Contains(body, `"from_env":true`) {
		t.Errorf("daytona after removal: %s", body)
	}
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/v1/settings/backends/vercel", `{"tokn":"x"}`, 400},
		{"/v1/settings/backends/vercel", `{"token":5}`, 400},
		{"/v1/settings/backends/vercel", `{"token":"a\nb"}`, 400},
		{"/v1/settings/backends/e2b", `{"domain":"attacker.example"}`, 412}, // no saved key: refused
		{"/v1/settings/backends/vercel", `{"api_url":"ftp://x","token":"t"}`, 400},
		{"/v1/settings/backends/daytona", `{"token":"x","api_key":"y"}`, 400},
		{"/v1/settings/backends/nosuch", `{"token":"x"}`, 404},
		{"/v1/settings/backends/fake", `{"token":"x"}`, 404},
	} {
		code, body, _ := f.call(t, "PUT", tc.path, tc.body)
		if code != tc.status || strings.Contains(body, "a\nb") {
			t.Errorf("PUT %s %s: %d %s", tc.path, tc.body, code, body)
		}
	}
	if strings.Contains(f.logs.String(), secret) || strings.Contains(f.logs.String(), "explicit-key") {
		t.Errorf("a secret reached the logs")
	}
}

// Settings saved through the API apply at once: the backend is built again, without a
// restart, and a sandbox can be created on it.
func TestSettingsApplyWithoutRestart(t *testing.T) {
	f, m := settingsFixture(t, map[string]string{})
	ctx := context.Background()
	srv := vercelfake.New(vercelfake.Options{Token: "tok-1", TeamID: "team_1", Backend: fake.New()})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(srv.Close)

	health := func() backend.Health {
		for _, b := range m.Backends(ctx).Backends {
			if b.Name == "vercel" {
				return b.Health
			}
		}
		t.Fatal("no vercel backend")
		return backend.Health{}
	}
	if h := health(); h.State != backend.Unavailable || !strings.Contains(h.Reason, "no API key") {
		t.Fatalf("before settings: %+v", h)
	}
	code, body, _ := f.call(t, "PUT", "/v1/settings/backends/vercel",
		`{"token":"tok-1","team_id":"team_1","project_id":"prj_1","api_url":"`+ts.URL+`/api"}`)
	if code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	if h := health(); h.State != backend.Ready {
		t.Fatalf("after settings, without a restart: %+v", h)
	}
	sb, err := f.c.Create(ctx, moat.Spec{Backend: "vercel"})
	if err != nil {
		t.Fatalf("create on the newly configured backend: %v", err)
	}
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "configured"}})
	if err != nil || string(res.Stdout) != "configured\n" {
		t.Fatalf("exec: %q %v", res.Stdout, err)
	}
	// A value the backend refuses changes nothing: the old build and settings stay.
	code, _, _ = f.call(t, "PUT", "/v1/settings/backends/vercel", `{"token":"tok-2","api_url":"::bad::"}`)
	if code != 400 {
		t.Errorf("bad api_url: %d, want 400", code)
	}
	if h := health(); h.State != backend.Ready {
		t.Errorf("a refused change broke the backend: %+v", h)
	}

	// The API moves to a second server: new sandboxes are created there, and the first
	// sandbox keeps talking to the server it was created on (its handle holds the URL).
	srv2 := vercelfake.New(vercelfake.Options{Token: "tok-1", TeamID: "team_1", Backend: fake.New()})
	ts2 := httptest.NewServer(srv2)
	t.Cleanup(ts2.Close)
	t.Cleanup(srv2.Close)
	code, body, _ = f.call(t, "PUT", "/v1/settings/backends/vercel", `{"token":"tok-1","api_url":"`+ts2.URL+`/api"}`)
	if code != 200 {
		t.Fatalf("put second api_url: %d %s", code, body)
	}
	before2 := srv2.Requests()
	res, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "still-first"}})
	if err != nil || string(res.Stdout) != "still-first\n" {
		t.Fatalf("exec on the first sandbox after api_url changed: %q %v", res.Stdout, err)
	}
	if n := srv2.Requests() - before2; n != 0 {
		t.Errorf("the second server received %d requests for the first sandbox; want none", n)
	}
	sb2, err := f.c.Create(ctx, moat.Spec{Backend: "vercel"})
	if err != nil {
		t.Fatalf("create after api_url changed: %v", err)
	}
	if len(srv2.SandboxNames()) != 1 || len(srv.SandboxNames()) != 1 {
		t.Errorf("sandboxes: first server %v, second %v; want one each", srv.SandboxNames(), srv2.SandboxNames())
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if len(srv.SandboxNames()) != 0 || len(srv2.SandboxNames()) != 0 {
		t.Errorf("after destroy: first server %v, second %v; want none", srv.SandboxNames(), srv2.SandboxNames())
	}
}

// A sandbox created on an endpoint an API caller set keeps it in its handle; once the
// saved token is gone and the operator's environment token applies, that token is never
// sent there: the sandbox answers failed_precondition without a request.
func TestRecordedAPIEndpointNeverGetsTheEnvToken(t *testing.T) {
	env := map[string]string{"VERCEL_TOKEN": "env-operator-token", "VERCEL_TEAM_ID": "team_1", "VERCEL_PROJECT_ID": "prj_1"}
	f, _ := settingsFixture(t, env)
	ctx := context.Background()
	evil := vercelfake.New(vercelfake.Options{Token: "caller-token", TeamID: "team_1", Backend: fake.New()})
	ts := httptest.NewServer(evil)
	t.Cleanup(ts.Close)
	t.Cleanup(evil.Close)
	if code, body, _ := f.call(t, "PUT", "/v1/settings/backends/vercel", `{"token":"caller-token","api_url":"`+ts.URL+`/api"}`); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	sb, err := f.c.Create(ctx, moat.Spec{Backend: "vercel"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body, _ := f.call(t, "PUT", "/v1/settings/backends/vercel", `{"token":null,"api_url":null}`); code != 200 {
		t.Fatalf("remove saved settings: %d %s", code, body)
	}
	before := evil.Requests()
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
	if !errdefs.Is(err, errdefs.KindFailedPrecondition) || strings.Contains(err.Error(), "env-operator-token") {
		t.Fatalf("exec on the API-chosen endpoint with the env token: %v, want failed_precondition", err)
	}
	if n := evil.Requests() - before; n != 0 {
		t.Fatalf("the API-chosen server received %d requests after the env token took over", n)
	}
}
