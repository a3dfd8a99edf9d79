package settings

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store/memstore"
)

func ptr(s string) *string { return &s }

// A descriptor of the shape hosted backends have: a secret, an endpoint, a plain value and
// an operator-only key. The package names no backend, so the test makes its own.
var prov = backend.Descriptor{Name: "prov", Settings: []backend.Setting{
	{Key: "token", Aliases: []string{"api_key"}, Env: []string{"PROV_TOKEN", "PROV_OLD_TOKEN"}, Secret: true},
	{Key: "api_url", Env: []string{"PROV_API_URL"}, Endpoint: true},
	{Key: "team", Env: []string{"PROV_TEAM"}},
	{Key: "socket", Env: []string{"PROV_SOCKET"}, OperatorOnly: true},
}}

func TestPrecedenceAndSecrecy(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	env := map[string]string{"PROV_OLD_TOKEN": "env-key", "PROV_TEAM": "env-team"}
	getenv := func(k string) string { return env[k] }

	v := ViewOf(prov, nil, getenv)
	if !v.TokenConfigured || !v.FromEnv || v.Values["team"] != "env-team" || !v.Secrets["token"].FromEnv || v.Secrets["token"].Env != "PROV_TOKEN" {
		t.Fatalf("env only: %+v", v)
	}
	if len(v.Fields) != 3 || v.Fields[2].Key != "team" {
		t.Errorf("fields = %+v, want the three settable ones in order", v.Fields)
	}
	saved, err := Apply(prov, nil, map[string]*string{"token": ptr("explicit-key"), "team": ptr("set-team")})
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(ctx, st, nil, "prov", saved); err != nil {
		t.Fatal(err)
	}
	got, err := Get(ctx, st, nil, "prov")
	if err != nil || got["token"] != "explicit-key" || got["team"] != "set-team" {
		t.Fatalf("get = %v, %v", got, err)
	}
	all, err := Load(ctx, st, nil)
	if err != nil || all["prov"]["token"] != "explicit-key" || len(all) != 1 {
		t.Fatalf("load = %v, %v", all, err)
	}
	// What a factory reads: saved beats the environment.
	cfg := backend.Config{Saved: got, Getenv: getenv}
	if cfg.Value(prov.Settings[0]) != "explicit-key" || cfg.Value(prov.Settings[2]) != "set-team" {
		t.Errorf("factory values: %q %q", cfg.Value(prov.Settings[0]), cfg.Value(prov.Settings[2]))
	}
	explicit := "from-toml"
	cfg.Fill(prov.Settings[0], &explicit)
	if explicit != "from-toml" {
		t.Errorf("Fill overrode the section's value: %q", explicit)
	}
	v = ViewOf(prov, got, getenv)
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), "explicit-key") || strings.Contains(string(b), "env-key") || v.FromEnv || v.Values["team"] != "set-team" {
		t.Errorf("view: %s", b)
	}
	// nil removes: the environment applies again, and an empty map is deleted.
	saved, err = Apply(prov, got, map[string]*string{"token": nil, "team": ptr("")})
	if err != nil || len(saved) != 0 {
		t.Fatalf("remove: %v %v", saved, err)
	}
	if err := Save(ctx, st, nil, "prov", saved); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSetting(ctx, "backend/prov/settings"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("empty settings still stored: %v", err)
	}
	// Bad keys and values are refused whole, without quoting the value.
	before := map[string]string{"team": "keep"}
	if _, err := Apply(prov, before, map[string]*string{"token": ptr("ok"), "bogus": ptr("x")}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := Apply(prov, before, map[string]*string{"token": ptr("line\nbreak")}); !errdefs.Is(err, errdefs.KindInvalidArgument) || strings.Contains(err.Error(), "break") {
		t.Errorf("multi-line value: %v", err)
	}
	if _, err := Apply(prov, before, map[string]*string{"socket": ptr("/var/run/x.sock")}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Errorf("operator-only key through the API: %v", err)
	}
	if before["team"] != "keep" || len(before) != 1 {
		t.Errorf("Apply modified its input: %v", before)
	}
	if _, err := Apply(backend.Descriptor{Name: "docker"}, nil, map[string]*string{"x": ptr("y")}); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("backend without settings: %v", err)
	}
}

// A key renamed in a later release keeps working under its old name, in requests and in
// what was saved before the rename.
func TestDeprecatedAlias(t *testing.T) {
	old := map[string]string{"api_key": "saved-before-rename"}
	if v := (backend.Config{Saved: old}).Value(prov.Settings[0]); v != "saved-before-rename" {
		t.Errorf("value saved under the old name: %q", v)
	}
	next, err := Apply(prov, old, map[string]*string{"team": ptr("t")})
	if err != nil || next["token"] != "saved-before-rename" || next["api_key"] != "" {
		t.Fatalf("old name moves to the key on the next write: %v %v", next, err)
	}
	next, err = Apply(prov, nil, map[string]*string{"api_key": ptr("via-old-name")})
	if err != nil || next["token"] != "via-old-name" || len(next) != 1 {
		t.Fatalf("change under the old name: %v %v", next, err)
	}
	if _, err := Apply(prov, nil, map[string]*string{"api_key": ptr("a"), "token": ptr("b")}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("both names in one change: %v", err)
	}
}

// An API token holder must not be able to send the operator's environment token to a URL
// of their choosing.
func TestEnvSecretNeverGoesToAnAPIChosenURL(t *testing.T) {
	if _, err := Apply(prov, nil, map[string]*string{"api_url": ptr("http://attacker.invalid")}); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("api_url alone: %v", err)
	}
	saved, err := Apply(prov, nil, map[string]*string{"api_url": ptr("http://127.0.0.1:1/api"), "token": ptr("api-secret")})
	if err != nil {
		t.Fatalf("url and token together: %v", err)
	}
	// Dropping the saved token would let the env token flow to the saved URL.
	if _, err := Apply(prov, saved, map[string]*string{"token": nil}); !errdefs.Is(err, errdefs.KindFailedPrecondition) || strings.Contains(err.Error(), "api-secret") {
		t.Fatalf("removing the token under a saved url: %v", err)
	}
	if next, err := Apply(prov, saved, map[string]*string{"token": nil, "api_url": nil}); err != nil || len(next) != 0 {
		t.Fatalf("removing both: %v %v", next, err)
	}
}
