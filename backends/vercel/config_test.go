package vercel

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
)

func TestEnvAliasPrecedence(t *testing.T) {
	envs := map[string]string{
		"VERCEL_TOKEN": "env-token", "VERCEL_OIDC_TOKEN": "oidc-token", "VERCEL_TEAM_ID": "env-team",
		"VERCEL_PROJECT_ID": "env-project", "VERCEL_API_URL": "http://127.0.0.1:1/env",
	}
	getenv := func(k string) string { return envs[k] }
	f, _ := backend.Lookup(Name)

	// Explicit config beats the environment, field by field.
	b, err := f(backend.Config{Getenv: getenv, Decode: func(v any) error {
		c := v.(*Config)
		c.Token, c.ProjectID = "cfg-token", "cfg-project"
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := b.(*Backend).cfg
	if c.Token != "cfg-token" || c.ProjectID != "cfg-project" || c.TeamID != "env-team" || c.APIURL != "http://127.0.0.1:1/env" {
		t.Errorf("explicit + env = %+v", c)
	}

	// VERCEL_OIDC_TOKEN only when VERCEL_TOKEN is empty.
	delete(envs, "VERCEL_TOKEN")
	b, _ = f(backend.Config{Getenv: getenv})
	if got := b.(*Backend).cfg.Token; got != "oidc-token" {
		t.Errorf("token = %q; want the OIDC alias", got)
	}
}

func TestOIDCClaimsFillScope(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"owner_id":"team_oidc","project_id":"prj_oidc"}`))
	tok := "eyJhbGciOiJub25lIn0." + payload + ".sig"
	b, err := New(Config{Token: tok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.cfg.TeamID != "team_oidc" || b.cfg.ProjectID != "prj_oidc" {
		t.Errorf("scope from OIDC claims = %q/%q", b.cfg.TeamID, b.cfg.ProjectID)
	}
	b, _ = New(Config{Token: tok, TeamID: "team_explicit"}, nil)
	if b.cfg.TeamID != "team_explicit" {
		t.Errorf("explicit team lost to the token's claim: %q", b.cfg.TeamID)
	}
	if _, _, ok := oidcClaims("not-a-jwt"); ok {
		t.Error("plain token decoded as a JWT")
	}
}

func TestVCPUsFor(t *testing.T) {
	for _, tc := range []struct {
		l        backend.Limits
		opt, def int
		want     int
	}{
		{backend.Limits{}, 0, 0, 0},
		{backend.Limits{}, 0, 4, 4},
		{backend.Limits{CPUs: 0.5}, 0, 0, 1},
		{backend.Limits{CPUs: 3}, 0, 0, 4},
		{backend.Limits{MemoryBytes: 3 << 30}, 0, 0, 2},
		{backend.Limits{CPUs: 1, MemoryBytes: 5 << 30}, 0, 0, 4},
		{backend.Limits{CPUs: 64}, 0, 0, 8},
		{backend.Limits{CPUs: 64}, 2, 0, 2},
	} {
		if got := vcpusFor(tc.l, tc.opt, tc.def); got != tc.want {
			t.Errorf("vcpusFor(%+v, %d, %d) = %d; want %d", tc.l, tc.opt, tc.def, got, tc.want)
		}
	}
}

func TestDeprecatedTimeoutMs(t *testing.T) {
	open := func(section string) (*Backend, string, error) {
		b, logs, err := providertest.OpenTOML(Name, section)
		if err != nil {
			return nil, logs.String(), err
		}
		return b.(*Backend), logs.String(), nil
	}
	b, logs, err := open(`timeout = "10m"`)
	if err != nil || b.cfg.timeout != 10*time.Minute || logs != "" {
		t.Fatalf("timeout = \"10m\": %v, %v, logs %q", b, err, logs)
	}
	b, logs, err = open(`timeout_ms = 120000`)
	if err != nil || b.cfg.timeout != 2*time.Minute {
		t.Fatalf("timeout_ms: %v", err)
	}
	if strings.Count(logs, "timeout_ms is deprecated; use timeout") != 1 {
		t.Errorf("want one deprecation warning, got %q", logs)
	}
	if _, _, err := open("timeout = \"1m\"\ntimeout_ms = 1000"); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("both set: %v", err)
	}
	if _, _, err := open(`timeout = "1.5ms"`); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("sub-millisecond timeout: %v", err)
	}
}
