package daytona_test

import (
	"context"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/daytona"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store/memstore"
)

// openWithSection opens a Manager whose only backend is daytona, built by its registered
// factory from section, with env as the environment.
func openWithSection(t *testing.T, section map[string]any, env map[string]string) (*moat.Manager, error) {
	t.Helper()
	f, ok := backend.Lookup(daytona.Name)
	if !ok {
		t.Fatal("daytona is not registered")
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Home: t.TempDir(),
		Backends: map[string]map[string]any{daytona.Name: section}, Getenv: func(k string) string { return env[k] }},
		moat.WithoutRegistered(), moat.WithFactory(daytona.Name, f))
	if err == nil {
		t.Cleanup(func() { _ = m.Close() })
	}
	return m, err
}

func daytonaHealth(t *testing.T, m *moat.Manager) backend.Health {
	t.Helper()
	for _, b := range m.Backends(testCtx(t)).Backends {
		if b.Name == daytona.Name {
			return b.Health
		}
	}
	t.Fatal("no daytona in the report")
	return backend.Health{}
}

// A moat.toml may name the variable that holds a secret (token_env) instead of the secret.
func TestTokenFromNamedVariable(t *testing.T) {
	_, apiURL := fakeServer(t, providertest.HostRunner(t))
	section := map[string]any{"token_env": "MY_DAYTONA_KEY", "api_url": apiURL}

	m, err := openWithSection(t, section, map[string]string{"MY_DAYTONA_KEY": testToken, "DAYTONA_API_KEY": "wrong-default-var"})
	if err != nil {
		t.Fatal(err)
	}
	if h := daytonaHealth(t, m); h.State != backend.Ready {
		t.Fatalf("with MY_DAYTONA_KEY set: %+v", h)
	}
	v, err := m.BackendSettings(testCtx(t), daytona.Name)
	if err != nil {
		t.Fatal(err)
	}
	if st := v.Secrets["token"]; !st.Configured || !st.FromEnv || st.Env != "MY_DAYTONA_KEY" {
		t.Errorf("settings view: %+v, want configured from env MY_DAYTONA_KEY", st)
	}
	tok := "other"
	if _, err := m.PutBackendSettings(testCtx(t), daytona.Name, map[string]*string{"api_key": &tok}); !errdefs.Is(err, errdefs.KindFailedPrecondition) || !strings.Contains(err.Error(), "MY_DAYTONA_KEY") {
		t.Errorf("saving a secret moat.toml names a variable for: %v", err)
	}
	sb, err := m.Create(testCtx(t), moat.Spec{Backend: daytona.Name, Workdir: "/tmp"})
	if err != nil {
		t.Fatalf("create with the named variable's token: %v", err)
	}
	if err := sb.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}

	// Unset: the probe says which variable it expected.
	m, err = openWithSection(t, section, map[string]string{"DAYTONA_API_KEY": testToken})
	if err != nil {
		t.Fatal(err)
	}
	if h := daytonaHealth(t, m); h.State != backend.Unavailable || !strings.Contains(h.Reason, "token_env names MY_DAYTONA_KEY, which is not set") {
		t.Fatalf("with MY_DAYTONA_KEY unset: %+v", h)
	}
}

func TestNamedVariableBadInput(t *testing.T) {
	for _, tc := range []struct {
		section map[string]any
		want    string
	}{
		{map[string]any{"token": "x", "token_env": "MY_KEY"}, "token and token_env are both set"},
		{map[string]any{"api_key": "x", "token_env": "MY_KEY"}, "api_key and token_env are both set"},
		{map[string]any{"target_env": "MY_TARGET"}, "only secret settings take an _env indirection"},
		{map[string]any{"token_env": "not a name"}, "want the name of an environment variable"},
		{map[string]any{"token_env": 5}, "want the name of an environment variable"},
	} {
		_, err := openWithSection(t, tc.section, nil)
		if !errdefs.Is(err, errdefs.KindInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want invalid_argument saying %q", tc.section, err, tc.want)
		}
	}
}
