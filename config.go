package moat

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// Config configures a Manager opened with Open. internal/config loads it from moat.toml;
// field comments there are the config reference (docs/config.md).
type Config struct {
	// Home is moat's state directory ($MOAT_HOME, default ~/.local/share/moat).
	Home string
	// Store is the record store URL; default "sqlite:<Home>/moat.db".
	Store string
	// Storage, when set, is an already open store used instead of opening Store; the
	// manager does not close it.
	Storage store.Store
	// Sandbox holds defaults applied to every Spec.
	Sandbox SandboxConfig
	// Network is the network policy.
	Network NetworkConfig
	// Security says which host paths API callers may name.
	Security SecurityConfig
	// Backends holds each [backends.<name>] section, decoded by that backend.
	Backends map[string]map[string]any
	// SettingsKeyFile holds the keys that encrypt backend settings saved through the API
	// (tokens) at rest; default <Home>/settings.key, made (mode 0600) on the first save.
	// Replicas sharing a store must share it. Env: MOAT_SETTINGS_KEY_FILE.
	SettingsKeyFile string
	// Getenv reads environment aliases (VERCEL_TOKEN, ...); default os.Getenv.
	Getenv func(string) string
	// Logger receives structured logs; default discards.
	Logger *slog.Logger
}

// SandboxConfig is the [sandbox] section.
type SandboxConfig struct {
	// Backend is the default backend: "auto" (default) or a registered name.
	Backend string
	// Image is the default image when a spec names none and the backend has no default.
	Image string
	// Workdir is the default working directory (default /workspace).
	Workdir string
	// Limits are the default limits.
	Limits Limits
	// TTL is the default time to live (0: forever).
	TTL Duration
	// Env is added to every sandbox's environment.
	Env map[string]string
	// AllowUnisolated lets moat run commands on the host without isolation (the "host"
	// backend), by explicit request or as the last resort of auto.
	AllowUnisolated bool
}

// NetworkConfig is the [network] section.
type NetworkConfig struct {
	// AllowOutbound lets specs ask for network "host". Off by default: sandboxes get no
	// network.
	AllowOutbound bool
}

func (c *Config) setDefaults() error {
	if c.Home == "" {
		c.Home = DefaultHome(os.Getenv)
	}
	if c.Store == "" {
		c.Store = "sqlite:" + filepath.Join(c.Home, "moat.db")
	}
	if c.Sandbox.Backend == "" {
		c.Sandbox.Backend = "auto"
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultHome returns $MOAT_HOME, else $XDG_DATA_HOME/moat, else ~/.local/share/moat.
func DefaultHome(getenv func(string) string) string {
	if h := getenv("MOAT_HOME"); h != "" {
		return h
	}
	if x := getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "moat")
	}
	home := getenv("HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = h
		}
	}
	return filepath.Join(home, ".local", "share", "moat")
}

// sectionDecoder returns a backend.Config Decode func for one [backends.<name>] section. It
// round-trips the section through TOML so the backend's struct tags and types apply, and
// unknown keys are errors that name the key.
func sectionDecoder(name string, section map[string]any) func(any) error {
	return func(v any) error {
		if len(section) == 0 {
			return nil
		}
		raw, err := toml.Marshal(section)
		if err != nil {
			return errdefs.InvalidArgumentf("config: [backends.%s]: %v", name, err)
		}
		dec := toml.NewDecoder(bytes.NewReader(raw)).DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			var sme *toml.StrictMissingError
			if errors.As(err, &sme) {
				var keys []string
				for _, e := range sme.Errors {
					keys = append(keys, strings.Join(e.Key(), "."))
				}
				return errdefs.InvalidArgumentf("config: [backends.%s]: unknown key %s", name, strings.Join(keys, ", "))
			}
			var de *toml.DecodeError
			if errors.As(err, &de) {
				return errdefs.InvalidArgumentf("config: [backends.%s]: %s: %v", name, strings.Join(de.Key(), "."), de)
			}
			return errdefs.InvalidArgumentf("config: [backends.%s]: %v", name, err)
		}
		return nil
	}
}
