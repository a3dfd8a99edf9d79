package settings

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

func ptr(s string) *string { return &s }

func TestPrecedenceAndSecrecy(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	env := map[string]string{"E2B_API_KEY": "env-key", "E2B_DOMAIN": "env.example"}
	s := New(func() store.Store { return st }, func(k string) string { return env[k] })

	v, err := s.View(ctx, "e2b")
	if err != nil || !v.TokenConfigured || !v.FromEnv || v.Values["domain"] != "env.example" {
		t.Fatalf("env only: %+v, %v", v, err)
	}
	if err := s.Put(ctx, "e2b", map[string]*string{"token": ptr("explicit-key"), "domain": ptr("set.example")}); err != nil {
		t.Fatal(err)
	}
	val, fromEnv, ok, err := s.Value(ctx, "e2b", "token")
	if err != nil || !ok || fromEnv || val != "explicit-key" {
		t.Errorf("explicit wins: %q %v %v %v", val, fromEnv, ok, err)
	}
	v, _ = s.View(ctx, "e2b")
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), "explicit-key") || strings.Contains(string(b), "env-key") || v.FromEnv || v.Values["domain"] != "set.example" {
		t.Errorf("view: %s", b)
	}
	if got := s.Getenv(func(k string) string { return env[k] })("E2B_API_KEY"); got != "explicit-key" {
		t.Errorf("overlay = %q", got)
	}
	if err := s.Put(ctx, "e2b", map[string]*string{"token": nil, "domain": nil}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSetting(ctx, "backend/e2b/settings"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("empty settings still stored: %v", err)
	}
	if got := s.Getenv(func(k string) string { return env[k] })("E2B_API_KEY"); got != "env-key" {
		t.Errorf("overlay after removal = %q", got)
	}
	// Nothing is written when one key is bad.
	err = s.Put(ctx, "e2b", map[string]*string{"token": ptr("ok"), "bogus": ptr("x")})
	if !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("unknown key: %v", err)
	}
	if exp, _ := s.Explicit(ctx, "e2b"); len(exp) != 0 {
		t.Errorf("partial write: %v", exp)
	}
	if err := s.Put(ctx, "e2b", map[string]*string{"token": ptr("line\nbreak")}); !errdefs.Is(err, errdefs.KindInvalidArgument) || strings.Contains(err.Error(), "break") {
		t.Errorf("multi-line value: %v", err)
	}
	if _, err := s.View(ctx, "docker"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("backend without settings: %v", err)
	}
	// No store yet: the environment only, and Put is Unavailable.
	none := New(func() store.Store { return nil }, func(k string) string { return env[k] })
	if got := none.Getenv(func(k string) string { return env[k] })("E2B_API_KEY"); got != "env-key" {
		t.Errorf("no store overlay = %q", got)
	}
	if err := none.Put(ctx, "e2b", map[string]*string{"token": ptr("x")}); !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Errorf("put without store: %v", err)
	}
}

// An API token holder must not be able to send the operator's environment token to a URL
// of their choosing.
func TestEnvSecretNeverGoesToAnAPIChosenURL(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	env := map[string]string{"VERCEL_TOKEN": "env-secret"}
	s := New(func() store.Store { return st }, func(k string) string { return env[k] })
	str := func(v string) *string { return &v }

	err := s.Put(ctx, "vercel", map[string]*string{"api_url": str("http://attacker.invalid")})
	if !errdefs.Is(err, errdefs.KindFailedPrecondition) || strings.Contains(err.Error(), "env-secret") {
		t.Fatalf("api_url alone with an env token: %v", err)
	}
	if got := s.Getenv(func(k string) string { return env[k] })("VERCEL_API_URL"); got != "" {
		t.Fatalf("refused change was stored: %q", got)
	}
	if err := s.Put(ctx, "vercel", map[string]*string{"api_url": str("http://127.0.0.1:1/api"), "token": str("api-secret")}); err != nil {
		t.Fatalf("url and token together: %v", err)
	}
	// Dropping the explicit token would let the env token flow to the explicit URL.
	if err := s.Put(ctx, "vercel", map[string]*string{"token": nil}); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("removing the token under an explicit url: %v", err)
	}
	env["E2B_API_KEY"] = "e2b-env-key"
	if err := s.Put(ctx, "e2b", map[string]*string{"domain": str("attacker.invalid")}); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("e2b domain alone with an env key: %v", err)
	}
	if err := s.Put(ctx, "vercel", map[string]*string{"token": nil, "api_url": nil}); err != nil {
		t.Fatalf("removing both: %v", err)
	}
	if got := s.Getenv(func(k string) string { return env[k] })("VERCEL_TOKEN"); got != "env-secret" {
		t.Fatalf("env token after removing both: %q", got)
	}
}
