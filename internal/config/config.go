// Package config answers "what did the operator configure?": it reads moat.toml into a
// moat.Config, strictly (an unknown key or a bad value is an error that names the key),
// and applies environment aliases below explicit settings.
//
// The file's sections and keys (docs/config.md is generated from the same words):
//
//	home = "/var/lib/moat"         # state directory; default $MOAT_HOME or ~/.local/share/moat
//	store = "sqlite:/path/moat.db" # record store: sqlite:PATH (default), postgres://..., mem:
//
//	[sandbox]
//	backend = "auto"           # or a backend name; env MOAT_BACKEND / SANDBOX_PROVIDER
//	image = ""                 # default image when a spec names none
//	workdir = "/workspace"
//	memory = "512m"            # k, m, g suffixes (binary); default 1g on local backends
//	cpus = 1.5                 # default 2 on local backends (at most the host's CPUs)
//	pids = 256                 # default 512 on local backends
//	                           # "unlimited" (or 0) turns a default off; hosted providers
//	                           # get only limits set here or in the spec (their plan decides)
//	ttl = "1h"                 # destroy sandboxes this long after creation
//	allow_unisolated = false   # allow the "host" backend (no isolation)
//	env = { LANG = "C.UTF-8" }
//
//	[network]
//	allow_outbound = false     # let specs ask for network "host"
//
//	[security]
//	allowed_host_paths = []    # host roots under which API callers may name host paths
//
//	[server]
//	listen = "127.0.0.1:8080"
//
//	[backends.docker]          # one section per backend; keys are the backend's own
//	image = "debian:bookworm"
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/pelletier/go-toml/v2"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
)

// File is moat.toml as written.
type File struct {
	Home     string                    `toml:"home"`
	Store    string                    `toml:"store"`
	Sandbox  SandboxSection            `toml:"sandbox"`
	Network  NetworkSection            `toml:"network"`
	Security SecuritySection           `toml:"security"`
	Server   ServerSection             `toml:"server"`
	Backends map[string]map[string]any `toml:"backends"`
}

// SandboxSection is [sandbox].
type SandboxSection struct {
	Backend string `toml:"backend"`
	Image   string `toml:"image"`
	Workdir string `toml:"workdir"`
	// Memory, CPUs and PIDs are limits: absent means moat's default (moat.DefaultLimits,
	// on local backends), "unlimited" or 0 means none. Memory is a size ("512m") or a
	// number of bytes; CPUs a number (fractions allowed); PIDs a whole number.
	Memory          any               `toml:"memory"`
	CPUs            any               `toml:"cpus"`
	PIDs            any               `toml:"pids"`
	TTL             string            `toml:"ttl"`
	AllowUnisolated bool              `toml:"allow_unisolated"`
	Env             map[string]string `toml:"env"`
}

// NetworkSection is [network].
type NetworkSection struct {
	AllowOutbound bool `toml:"allow_outbound"`
}

// SecuritySection is [security].
type SecuritySection struct {
	// AllowedHostPaths are absolute host directories under which an API caller may name a
	// host path (a bwrap image, any field a backend declares a host path). Empty: only the
	// operator (moat.toml, the local CLI) names host paths.
	AllowedHostPaths []string `toml:"allowed_host_paths"`
}

// ServerSection is [server], read by moatd.
type ServerSection struct {
	Listen string `toml:"listen"`
	// Tokens are accepted API bearer tokens (also MOAT_API_TOKEN).
	Tokens []string `toml:"tokens"`
}

// Loaded is a parsed configuration.
type Loaded struct {
	Moat   moat.Config
	Server ServerSection
	// Path is the file read, "" when none existed.
	Path string
}

// DefaultPath returns $MOAT_HOME/moat.toml (see moat.DefaultHome).
func DefaultPath(getenv func(string) string) string {
	return filepath.Join(moat.DefaultHome(getenv), "moat.toml")
}

// Load reads path. When path is "" the default path is used, and a missing default file
// is not an error (an explicitly named one is).
func Load(path string, getenv func(string) string) (Loaded, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	explicit := path != ""
	if !explicit {
		path = DefaultPath(getenv)
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist) && !explicit:
		path, data = "", nil
	default:
		return Loaded{}, errdefs.InvalidArgumentf("config: %v", err)
	}
	l, err := Parse(data, getenv)
	if err != nil {
		if path != "" {
			return Loaded{}, errdefs.InvalidArgumentf("config: %s: %w", path, err)
		}
		return Loaded{}, err
	}
	l.Path = path
	return l, nil
}

// Parse parses a moat.toml document.
func Parse(data []byte, getenv func(string) string) (Loaded, error) {
	var f File
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var sme *toml.StrictMissingError
		if errors.As(err, &sme) {
			var keys []string
			for _, e := range sme.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return Loaded{}, errdefs.InvalidArgumentf("unknown key %s", strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			key := strings.Join(de.Key(), ".")
			if key != "" {
				return Loaded{}, errdefs.InvalidArgumentf("%s (line %d, column %d): %s", key, row, col, de.Error())
			}
			return Loaded{}, errdefs.InvalidArgumentf("line %d, column %d: %s", row, col, de.Error())
		}
		return Loaded{}, errdefs.InvalidArgumentf("%v", err)
	}
	return f.toConfig(getenv)
}

func (f File) toConfig(getenv func(string) string) (Loaded, error) {
	c := moat.Config{
		Home: f.Home, Store: f.Store, Backends: f.Backends, Getenv: getenv,
		Sandbox: moat.SandboxConfig{
			Backend: f.Sandbox.Backend, Image: f.Sandbox.Image, Workdir: f.Sandbox.Workdir,
			AllowUnisolated: f.Sandbox.AllowUnisolated, Env: f.Sandbox.Env,
		},
		Network:  moat.NetworkConfig{AllowOutbound: f.Network.AllowOutbound},
		Security: moat.SecurityConfig{AllowedHostPaths: f.Security.AllowedHostPaths},
	}
	for _, p := range f.Security.AllowedHostPaths {
		if !filepath.IsAbs(p) {
			return Loaded{}, errdefs.InvalidArgumentf("security.allowed_host_paths: %q is not an absolute path", p)
		}
	}
	if c.Home == "" {
		c.Home = moat.DefaultHome(getenv)
	}
	if c.Store == "" {
		c.Store = getenv("MOAT_STORE")
	}
	c.SettingsKeyFile = getenv("MOAT_SETTINGS_KEY_FILE")
	if c.Sandbox.Backend == "" {
		c.Sandbox.Backend = firstNonEmpty(getenv("MOAT_BACKEND"), getenv("SANDBOX_PROVIDER"))
	}
	var err error
	if c.Sandbox.Limits.MemoryBytes, err = parseLimit(f.Sandbox.Memory, func(v any) (int64, error) {
		switch v := v.(type) {
		case string:
			return ParseBytes(v)
		case int64:
			return v, nil
		}
		return 0, fmt.Errorf("want a size such as \"512m\", a number of bytes or \"unlimited\"")
	}); err != nil {
		return Loaded{}, errdefs.InvalidArgumentf("sandbox.memory: %v", err)
	}
	if c.Sandbox.Limits.CPUs, err = parseLimit(f.Sandbox.CPUs, func(v any) (float64, error) {
		switch v := v.(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return 0, fmt.Errorf("%g is not a number of CPUs", v)
			}
			return v, nil
		case int64:
			return float64(v), nil
		}
		return 0, fmt.Errorf("want a number of CPUs or \"unlimited\"")
	}); err != nil {
		return Loaded{}, errdefs.InvalidArgumentf("sandbox.cpus: %v", err)
	}
	if c.Sandbox.Limits.PIDs, err = parseLimit(f.Sandbox.PIDs, func(v any) (int64, error) {
		if n, ok := v.(int64); ok {
			return n, nil
		}
		return 0, fmt.Errorf("want a whole number of processes or \"unlimited\"")
	}); err != nil {
		return Loaded{}, errdefs.InvalidArgumentf("sandbox.pids: %v", err)
	}
	if f.Sandbox.TTL != "" {
		d, err := time.ParseDuration(f.Sandbox.TTL)
		if err != nil || d < 0 {
			return Loaded{}, errdefs.InvalidArgumentf("sandbox.ttl: %q is not a duration like \"1h\"", f.Sandbox.TTL)
		}
		c.Sandbox.TTL = moat.Duration(d)
	}
	srv := f.Server
	if srv.Listen == "" {
		srv.Listen = firstNonEmpty(getenv("MOAT_LISTEN"), "127.0.0.1:8080")
	}
	return Loaded{Moat: c, Server: srv}, nil
}

// parseLimit reads one [sandbox] limit: absent is 0 (moat's default applies), "unlimited"
// or 0 is moat.Unlimited, anything else what conv makes of it, which must be positive.
func parseLimit[T int64 | float64](v any, conv func(any) (T, error)) (T, error) {
	if v == nil {
		return 0, nil
	}
	if s, ok := v.(string); ok && strings.EqualFold(strings.TrimSpace(s), "unlimited") {
		return moat.Unlimited, nil
	}
	n, err := conv(v)
	if err != nil {
		return 0, err
	}
	switch {
	case n != n: // NaN
		return 0, fmt.Errorf("%v is not a number", v)
	case n < 0:
		return 0, fmt.Errorf("%v must not be negative (say \"unlimited\" for no limit)", v)
	case n == 0:
		return moat.Unlimited, nil
	}
	return n, nil
}

// ParseBytes parses a size such as "512m", "1.5g", "1024" (bytes). Suffixes are binary
// (k = 1024), as docker's --memory.
func ParseBytes(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional k, m or g suffix", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("invalid size %q: must not be negative", s)
	}
	return n, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
