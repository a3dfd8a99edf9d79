package moat

import (
	"encoding/json"
	"fmt"
	"math"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// DefaultWorkdir is where commands start unless a spec says otherwise.
const DefaultWorkdir = "/workspace"

// Limits are resource limits of a sandbox; zero means the backend's default (no limit).
type Limits = backend.Limits

// NetworkMode is a sandbox's network: "none" (the default: loopback only) or "host" (the
// backend's outbound network; only when [network] allow_outbound permits it).
type NetworkMode = backend.NetworkMode

// Network modes.
const (
	NetworkNone = backend.NetworkNone
	NetworkHost = backend.NetworkHost
)

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("90s").
type Duration time.Duration

// MarshalJSON writes d as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("invalid duration %s: want a string like \"90s\" or seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// Spec describes a sandbox to create. The zero Spec is valid: the auto-detected backend,
// its default image, /workspace, no network, no limits beyond the configured defaults.
type Spec struct {
	// Backend names the backend, or "" / "auto" to let the router pick (a session's
	// override, then the configured default, then auto-detection).
	Backend string `json:"backend,omitempty"`
	// Image is the backend's image, template, runtime or rootfs; "" for the default.
	Image string `json:"image,omitempty"`
	// Name is an optional human name, unique among live sandboxes.
	Name string `json:"name,omitempty"`
	// SessionID ties the sandbox to an agent session (routing overrides, listing).
	SessionID string            `json:"session_id,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	// Workdir is the absolute directory commands start in; created at create time.
	Workdir string            `json:"workdir,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Limits  Limits            `json:"limits"`
	// Network defaults to "none".
	Network NetworkMode `json:"network,omitempty"`
	// TTL destroys the sandbox this long after creation (0: never).
	TTL Duration `json:"ttl,omitempty"`
	// Recreate asks the manager to create the sandbox again from this spec when its
	// backend lost it (a hosted provider reaped it, a container was removed).
	Recreate bool `json:"recreate,omitempty"`
	// Options are backend-specific create options, passed through to the backend.
	Options json.RawMessage `json:"options,omitempty"`
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$`)
)

// normalize checks s and returns a normalized copy with defaults applied. It never changes
// the caller's maps.
func (s Spec) normalize(defaults Spec) (Spec, error) {
	out := s
	if out.Image == "" {
		out.Image = defaults.Image
	}
	if out.Workdir == "" {
		out.Workdir = defaults.Workdir
	}
	if out.Workdir == "" {
		out.Workdir = DefaultWorkdir
	}
	if out.Network == "" {
		out.Network = defaults.Network
	}
	if out.Network == "" {
		out.Network = NetworkNone
	}
	if out.Limits.MemoryBytes == 0 {
		out.Limits.MemoryBytes = defaults.Limits.MemoryBytes
	}
	if out.Limits.CPUs == 0 {
		out.Limits.CPUs = defaults.Limits.CPUs
	}
	if out.Limits.PIDs == 0 {
		out.Limits.PIDs = defaults.Limits.PIDs
	}
	if out.Limits.DiskBytes == 0 {
		out.Limits.DiskBytes = defaults.Limits.DiskBytes
	}
	if out.TTL == 0 {
		out.TTL = defaults.TTL
	}
	if out.Name != "" && !nameRE.MatchString(out.Name) {
		return out, errdefs.InvalidArgumentf("moat: invalid name %q: want letters, digits, '_', '.', '-' (at most 63)", out.Name)
	}
	if out.Limits.MemoryBytes < 0 {
		return out, errdefs.InvalidArgumentf("moat: invalid memory limit %d: must not be negative", out.Limits.MemoryBytes)
	}
	if out.Limits.MemoryBytes != 0 && out.Limits.MemoryBytes < 4<<20 {
		return out, errdefs.InvalidArgumentf("moat: memory limit %d bytes is below the 4 MiB minimum", out.Limits.MemoryBytes)
	}
	if out.Limits.CPUs < 0 || math.IsNaN(out.Limits.CPUs) || math.IsInf(out.Limits.CPUs, 0) {
		return out, errdefs.InvalidArgumentf("moat: invalid cpus %g: must be a non-negative number", out.Limits.CPUs)
	}
	if out.Limits.PIDs < 0 {
		return out, errdefs.InvalidArgumentf("moat: invalid pids limit %d: must not be negative", out.Limits.PIDs)
	}
	if out.Limits.DiskBytes < 0 {
		return out, errdefs.InvalidArgumentf("moat: invalid disk limit %d: must not be negative", out.Limits.DiskBytes)
	}
	if out.TTL < 0 {
		return out, errdefs.InvalidArgumentf("moat: invalid ttl %s: must not be negative", time.Duration(out.TTL))
	}
	switch out.Network {
	case NetworkNone, NetworkHost:
	default:
		return out, errdefs.InvalidArgumentf("moat: invalid network %q: want none or host", out.Network)
	}
	wd, err := cleanSandboxPath(out.Workdir)
	if err != nil {
		return out, errdefs.InvalidArgumentf("moat: invalid workdir: %w", err)
	}
	out.Workdir = wd
	env, err := mergeEnv(defaults.Env, out.Env)
	if err != nil {
		return out, err
	}
	out.Env = env
	for k, v := range out.Labels {
		if !labelKeyRE.MatchString(k) {
			return out, errdefs.InvalidArgumentf("moat: invalid label key %q", k)
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return out, errdefs.InvalidArgumentf("moat: label %q has a value that is not valid UTF-8 text", k)
		}
	}
	if len(out.Labels) > 0 {
		out.Labels = cloneMap(out.Labels)
	}
	if len(out.Options) > 0 && !json.Valid(out.Options) {
		return out, errdefs.InvalidArgumentf("moat: options are not valid JSON")
	}
	return out, nil
}

// mergeEnv returns base overlaid with over, after checking every key and value.
func mergeEnv(base, over map[string]string) (map[string]string, error) {
	if len(base) == 0 && len(over) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(base)+len(over))
	for _, m := range []map[string]string{base, over} {
		for k, v := range m {
			if !envKeyRE.MatchString(k) {
				return nil, errdefs.InvalidArgumentf("moat: invalid environment variable name %q", k)
			}
			if strings.ContainsRune(v, 0) {
				return nil, errdefs.InvalidArgumentf("moat: environment variable %s contains a NUL byte", k)
			}
			out[k] = v
		}
	}
	return out, nil
}

// cleanSandboxPath checks that p is an absolute path inside the sandbox and returns it
// cleaned. ".." elements are rejected outright rather than cleaned away: a caller that
// writes them means to leave the directory it named, and silently re-rooting that would
// hide a bug or an attack.
func cleanSandboxPath(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("empty path")
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("path %q contains a NUL byte", p)
	case !utf8.ValidString(p):
		return "", fmt.Errorf("path %q is not valid UTF-8", p)
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("path %q escapes the sandbox (contains \"..\")", p)
		}
	}
	return path.Clean(p), nil
}

// resolvePath resolves p against the sandbox directory base when it is relative, then
// checks it like cleanSandboxPath. ".." is rejected before joining, so "../.." cannot
// climb out of base by being cleaned away.
func resolvePath(base, p string) (string, error) {
	if p != "" && !strings.HasPrefix(p, "/") {
		if _, err := cleanSandboxPath("/" + p); err != nil {
			return "", err
		}
		p = path.Join(base, p)
	}
	return cleanSandboxPath(p)
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
