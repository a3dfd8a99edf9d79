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

	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/errdefs"
)

// DefaultWorkdir is where commands start unless a spec says otherwise.
const DefaultWorkdir = moattype.DefaultWorkdir

// Limits are resource limits of a sandbox; zero means the backend's default (no limit).
type Limits = moattype.Limits

// NetworkMode is a sandbox's network: "none" (the default: loopback only) or "host" (the
// backend's outbound network; only when [network] allow_outbound permits it).
type NetworkMode = moattype.NetworkMode

// Network modes.
const (
	NetworkNone = moattype.NetworkNone
	NetworkHost = moattype.NetworkHost
)

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("90s").
type Duration = moattype.Duration

// Spec describes a sandbox to create (moattype.Spec: the same type is on the wire). The zero
// Spec is valid: the auto-detected backend, its default image, /workspace, no network, no
// limits beyond the configured defaults.
type Spec = moattype.Spec

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$`)
)

// normalizeSpec checks s and returns a normalized copy with defaults applied. It never
// changes the caller's maps.
func normalizeSpec(s, defaults Spec) (Spec, error) {
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
