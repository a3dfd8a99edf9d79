package moat

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/errdefs"
)

// DefaultWorkdir is where commands start unless a spec says otherwise.
const DefaultWorkdir = moattype.DefaultWorkdir

// Limits are resource limits of a sandbox. In a Spec a zero field means the configured
// default (see SandboxConfig.Limits); the stored spec, and so Info, holds the limits in
// effect, where zero means none.
type Limits = moattype.Limits

// Unlimited, in a SandboxConfig.Limits field, turns the shipped default off: sandboxes get no
// such limit unless their spec asks for one ([sandbox] memory = "unlimited" or 0).
const Unlimited = -1

// DefaultLimits are the limits of a sandbox on a local backend when neither its spec nor
// [sandbox] sets them: one runaway command must not take the host down. Where the host has
// less, the default is what the host has.
var DefaultLimits = Limits{MemoryBytes: 1 << 30, CPUs: 2, PIDs: 512}

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
	if out.TTL == 0 {
		out.TTL = defaults.TTL
	}
	if out.Name != "" && !nameRE.MatchString(out.Name) {
		return out, errdefs.InvalidArgumentf("moat: invalid name %q: want letters, digits, '_', '.', '-' (at most 63)", out.Name)
	}
	if err := checkLimits(out.Limits); err != nil {
		return out, err
	}
	if out.SessionID != "" {
		if err := CheckSessionID(out.SessionID); err != nil {
			return out, err
		}
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
	if n := envBytes(env); n > moattype.MaxArgBytes {
		return out, errdefs.InvalidArgumentf("moat: the environment takes %d bytes, over the %d byte limit of every exec's argv and environment", n, moattype.MaxArgBytes)
	}
	if len(out.Labels) > moattype.MaxLabels {
		return out, errdefs.InvalidArgumentf("moat: %d labels, over the limit of %d", len(out.Labels), moattype.MaxLabels)
	}
	for k, v := range out.Labels {
		if !labelKeyRE.MatchString(k) {
			return out, errdefs.InvalidArgumentf("moat: invalid label key %q", k)
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return out, errdefs.InvalidArgumentf("moat: label %q has a value that is not valid UTF-8 text", k)
		}
		if len(v) > moattype.MaxLabelValueBytes {
			return out, errdefs.InvalidArgumentf("moat: label %q has a %d byte value, over the limit of %d", k, len(v), moattype.MaxLabelValueBytes)
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

// checkLimits checks the ranges of the limits a spec asks for that hold on every backend;
// checkHostLimits adds what the host has, for local backends.
func checkLimits(l Limits) error {
	switch {
	case l.MemoryBytes < 0:
		return errdefs.InvalidArgumentf("moat: invalid memory limit %d: must not be negative", l.MemoryBytes)
	case l.MemoryBytes != 0 && l.MemoryBytes < 4<<20:
		return errdefs.InvalidArgumentf("moat: memory limit %d bytes is below the 4 MiB minimum", l.MemoryBytes)
	case l.MemoryBytes > moattype.MaxRemoteMemoryBytes:
		return errdefs.InvalidArgumentf("moat: memory limit %d bytes is over the %d byte maximum", l.MemoryBytes, int64(moattype.MaxRemoteMemoryBytes))
	case l.CPUs < 0 || math.IsNaN(l.CPUs) || math.IsInf(l.CPUs, 0):
		return errdefs.InvalidArgumentf("moat: invalid cpus %g: must be a non-negative number", l.CPUs)
	case l.CPUs != 0 && l.CPUs < 0.01:
		return errdefs.InvalidArgumentf("moat: cpus %g is below the 0.01 minimum", l.CPUs)
	case l.CPUs > moattype.MaxRemoteCPUs:
		return errdefs.InvalidArgumentf("moat: cpus %g is over the maximum of %d", l.CPUs, moattype.MaxRemoteCPUs)
	case l.PIDs < 0:
		return errdefs.InvalidArgumentf("moat: invalid pids limit %d: must not be negative", l.PIDs)
	case l.PIDs > moattype.MaxPIDs:
		return errdefs.InvalidArgumentf("moat: pids limit %d is over the maximum of %d", l.PIDs, moattype.MaxPIDs)
	case l.DiskBytes < 0:
		return errdefs.InvalidArgumentf("moat: invalid disk limit %d: must not be negative", l.DiskBytes)
	case l.DiskBytes > moattype.MaxDiskBytes:
		return errdefs.InvalidArgumentf("moat: disk limit %d bytes is over the %d byte maximum", l.DiskBytes, int64(moattype.MaxDiskBytes))
	}
	return nil
}

// hostCapacity returns this machine's memory (0 when unknown) and CPUs; a variable so that
// tests can pretend to be a smaller host.
var hostCapacity = func() (memBytes int64, cpus int) { return hostMemory(), runtime.NumCPU() }

// hostMemory reads MemTotal from /proc/meminfo; 0 when it cannot.
func hostMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
}

// effectiveLimits returns the limits a sandbox of spec gets on a backend described by d,
// and checks them. A spec's own limits always apply. Otherwise the configured ones do
// (Unlimited: none); a field [sandbox] leaves unset takes DefaultLimits on a local backend
// (capped at what the host has) and nothing on a hosted provider, whose plan decides.
// On a local backend, a limit above what the host has is invalid_argument.
func effectiveLimits(spec, conf Limits, d backend.Descriptor) (Limits, error) {
	mem, cpus := hostCapacity()
	def := DefaultLimits
	if mem > 0 {
		def.MemoryBytes = min(def.MemoryBytes, mem)
	}
	if cpus > 0 {
		def.CPUs = min(def.CPUs, float64(cpus))
	}
	out := Limits{
		MemoryBytes: pickLimit(spec.MemoryBytes, conf.MemoryBytes, def.MemoryBytes, d.Remote),
		CPUs:        pickLimit(spec.CPUs, conf.CPUs, def.CPUs, d.Remote),
		PIDs:        pickLimit(spec.PIDs, conf.PIDs, def.PIDs, d.Remote),
		DiskBytes:   pickLimit(spec.DiskBytes, conf.DiskBytes, 0, d.Remote),
	}
	if err := checkLimits(out); err != nil {
		return out, err
	}
	if d.Remote {
		return out, nil
	}
	if mem > 0 && out.MemoryBytes > mem {
		return out, errdefs.InvalidArgumentf("moat: memory limit %d bytes is more than this host has (%d bytes)", out.MemoryBytes, mem)
	}
	if cpus > 0 && out.CPUs > float64(cpus) {
		return out, errdefs.InvalidArgumentf("moat: cpus %g is more than this host has (%d)", out.CPUs, cpus)
	}
	return out, nil
}

// pickLimit is one field of effectiveLimits: the spec's, else the configured one (negative:
// Unlimited), else the default on a local backend.
func pickLimit[T int64 | float64](spec, conf, def T, remote bool) T {
	switch {
	case spec != 0:
		return spec
	case conf > 0:
		return conf
	case conf == 0 && !remote:
		return def
	}
	return 0
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
				return nil, errdefs.InvalidArgumentf("moat: invalid environment variable name %q", clip(k))
			}
			if strings.ContainsRune(v, 0) {
				return nil, errdefs.InvalidArgumentf("moat: environment variable %s contains a NUL byte", clip(k))
			}
			if n := len(k) + 1 + len(v); n > moattype.MaxArgStringBytes {
				return nil, errdefs.InvalidArgumentf("moat: environment variable %s is %d bytes, over the limit of %d", clip(k), n, moattype.MaxArgStringBytes)
			}
			out[k] = v
		}
	}
	if len(out) > moattype.MaxEnvVars {
		return nil, errdefs.InvalidArgumentf("moat: %d environment variables, over the limit of %d", len(out), moattype.MaxEnvVars)
	}
	return out, nil
}

// envBytes is what env takes of an exec's argv and environment (see MaxArgBytes).
func envBytes(env map[string]string) int {
	n := 0
	for k, v := range env {
		n += len(k) + len(v) + 2
	}
	return n
}

// clip shortens s for an error message: a megabyte-long name is not worth echoing.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return strings.ToValidUTF8(s[:64], "") + "…"
}

// cleanSandboxPath checks that p is an absolute path inside the sandbox and returns it
// cleaned. ".." elements are rejected outright rather than cleaned away: a caller that
// writes them means to leave the directory it named, and silently re-rooting that would
// hide a bug or an attack.
func cleanSandboxPath(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("empty path")
	case len(p) > moattype.MaxPathBytes:
		return "", fmt.Errorf("path %q is %d bytes, over the limit of %d", clip(p), len(p), moattype.MaxPathBytes)
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
		if len(el) > moattype.MaxPathElemBytes {
			return "", fmt.Errorf("path %q has a %d byte element, over the limit of %d", clip(p), len(el), moattype.MaxPathElemBytes)
		}
	}
	c := path.Clean(p)
	if d := strings.Count(c, "/"); d > moattype.MaxPathDepth {
		return "", fmt.Errorf("path %q is %d elements deep, over the limit of %d", clip(p), d, moattype.MaxPathDepth)
	}
	return c, nil
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
