package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFull(t *testing.T) {
	doc := `
home = "/var/lib/moat"
store = "mem:"
[sandbox]
backend = "docker"
image = "busybox"
workdir = "/work"
memory = "512m"
cpus = 1.5
pids = 256
ttl = "1h"
allow_unisolated = true
env = { LANG = "C.UTF-8" }
[network]
allow_outbound = true
[server]
listen = "127.0.0.1:9999"
[backends.docker]
image = "debian"
`
	l, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	c := l.Moat
	if c.Home != "/var/lib/moat" || c.Store != "mem:" || c.Sandbox.Backend != "docker" || c.Sandbox.Image != "busybox" ||
		c.Sandbox.Workdir != "/work" || c.Sandbox.Limits.MemoryBytes != 512<<20 || c.Sandbox.Limits.CPUs != 1.5 ||
		c.Sandbox.Limits.PIDs != 256 || time.Duration(c.Sandbox.TTL) != time.Hour || !c.Sandbox.AllowUnisolated ||
		c.Sandbox.Env["LANG"] != "C.UTF-8" || !c.Network.AllowOutbound || l.Server.Listen != "127.0.0.1:9999" ||
		c.Backends["docker"]["image"] != "debian" {
		t.Fatalf("parsed config = %+v, server %+v", c, l.Server)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := map[string]string{
		"[sandbox]\nmemroy = \"1g\"\n":   "sandbox.memroy",
		"[sandbox]\nmemory = \"lots\"\n": "sandbox.memory",
		"[sandbox]\ncpus = \"two\"\n":    "sandbox.cpus",
		"[sandbox]\npids = -1\n":         "sandbox.pids",
		"[sandbox]\nttl = \"soon\"\n":    "sandbox.ttl",
		"[netwrok]\n":                    "netwrok",
		"colour = 1\n":                   "colour",
	}
	for doc, key := range cases {
		_, err := Parse([]byte(doc), env(nil))
		if !errdefs.Is(err, errdefs.KindInvalidArgument) || !strings.Contains(err.Error(), key) {
			t.Errorf("Parse(%q) = %v; want invalid_argument naming %q", doc, err, key)
		}
	}
}

func TestEnvAliasesAndPrecedence(t *testing.T) {
	l, err := Parse(nil, env(map[string]string{"MOAT_BACKEND": "bwrap", "MOAT_HOME": "/h"}))
	if err != nil {
		t.Fatal(err)
	}
	if l.Moat.Sandbox.Backend != "bwrap" || l.Moat.Home != "/h" {
		t.Fatalf("env aliases not applied: %+v", l.Moat)
	}
	l, err = Parse([]byte("[sandbox]\nbackend = \"docker\"\n"), env(map[string]string{"MOAT_BACKEND": "bwrap", "SANDBOX_PROVIDER": "vercel"}))
	if err != nil || l.Moat.Sandbox.Backend != "docker" {
		t.Fatalf("explicit config must beat env: %q %v", l.Moat.Sandbox.Backend, err)
	}
	l, _ = Parse(nil, env(map[string]string{"SANDBOX_PROVIDER": "vercel"}))
	if l.Moat.Sandbox.Backend != "vercel" {
		t.Fatalf("SANDBOX_PROVIDER alias: %q", l.Moat.Sandbox.Backend)
	}
}

func TestLoadMissingFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load("", env(map[string]string{"MOAT_HOME": dir})); err != nil {
		t.Fatalf("a missing default file must be fine: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "nope.toml"), env(nil)); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("a missing explicit file must be an error: %v", err)
	}
	p := filepath.Join(dir, "moat.toml")
	os.WriteFile(p, []byte("[sandbox]\nbogus = 1\n"), 0o600)
	if _, err := Load("", env(map[string]string{"MOAT_HOME": dir})); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error should name the file: %v", err)
	}
}

func TestLimitsUnsetDefaultOrUnlimited(t *testing.T) {
	cases := []struct {
		doc       string
		mem, pids int64
		cpus      float64
	}{
		{"", 0, 0, 0}, // unset: moat's defaults apply
		{"[sandbox]\nmemory = \"unlimited\"\ncpus = \"unlimited\"\npids = \"Unlimited\"\n", moat.Unlimited, moat.Unlimited, moat.Unlimited},
		{"[sandbox]\nmemory = 0\ncpus = 0\npids = 0\n", moat.Unlimited, moat.Unlimited, moat.Unlimited},
		{"[sandbox]\nmemory = \"0\"\ncpus = 0.0\n", moat.Unlimited, 0, moat.Unlimited},
		{"[sandbox]\nmemory = 1048576\ncpus = 2\npids = 64\n", 1 << 20, 64, 2},
		{"[sandbox]\nmemory = \"2g\"\ncpus = 0.5\n", 2 << 30, 0, 0.5},
	}
	for _, c := range cases {
		l, err := Parse([]byte(c.doc), env(nil))
		if err != nil {
			t.Errorf("%q: %v", c.doc, err)
			continue
		}
		got := l.Moat.Sandbox.Limits
		if got.MemoryBytes != c.mem || got.PIDs != c.pids || got.CPUs != c.cpus {
			t.Errorf("%q: limits %+v, want memory %d cpus %g pids %d", c.doc, got, c.mem, c.cpus, c.pids)
		}
	}
	for _, doc := range []string{
		"[sandbox]\nmemory = -5\n", "[sandbox]\npids = 1.5\n", "[sandbox]\ncpus = \"lots\"\n",
		"[sandbox]\nmemory = true\n", "[sandbox]\npids = \"unlimitted\"\n", "[sandbox]\ncpus = nan\n",
	} {
		if _, err := Parse([]byte(doc), env(nil)); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%q: err %v, want invalid_argument", doc, err)
		}
	}
}

func TestSecurityAllowedHostPaths(t *testing.T) {
	l, err := Parse([]byte("[security]\nallowed_host_paths = [\"/srv/images\", \"/data\"]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Moat.Security.AllowedHostPaths; len(got) != 2 || got[0] != "/srv/images" || got[1] != "/data" {
		t.Fatalf("allowed_host_paths = %q", got)
	}
	_, err = Parse([]byte("[security]\nallowed_host_paths = [\"images\"]\n"), env(nil))
	if !errdefs.Is(err, errdefs.KindInvalidArgument) || !strings.Contains(err.Error(), "security.allowed_host_paths") {
		t.Fatalf("relative root: %v; want invalid_argument naming security.allowed_host_paths", err)
	}
}
