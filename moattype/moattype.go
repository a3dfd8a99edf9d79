// Package moattype answers "what values does moat's API speak in?": the value types shared by
// the library (package moat aliases them), backend authors (package backend aliases the ones
// backends produce), the HTTP wire types (apitype) and the Go client. It imports nothing of
// moat but errdefs, so a front end can speak moat without compiling the manager, router,
// stores or backends.
package moattype

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/moatsh/moat/errdefs"
)

// Isolation is how strongly a backend separates a sandbox from its host, weakest first.
type Isolation string

const (
	IsolationNone      Isolation = "none"      // processes run on the host (restricted host)
	IsolationNamespace Isolation = "namespace" // Linux namespaces without a container runtime (bwrap)
	IsolationContainer Isolation = "container" // a container runtime (docker, podman)
	IsolationMicroVM   Isolation = "microvm"   // own kernel on this machine (firecracker, apple container)
	IsolationRemote    Isolation = "remote"    // on someone else's machine (hosted providers)
)

// Rank orders isolation levels: none < namespace < container < microvm, remote.
// Remote ranks with microvm: the host running moat cannot be reached from the sandbox.
func (i Isolation) Rank() int {
	switch i {
	case IsolationNone:
		return 0
	case IsolationNamespace:
		return 1
	case IsolationContainer:
		return 2
	case IsolationMicroVM, IsolationRemote:
		return 3
	}
	return -1
}

// Descriptor holds the static facts the router, the settings API, the web UI and the docs
// rank and show. A backend states each fact here and nowhere else: every table of backends
// (auto order, settings schema, environment aliases) is derived from the registered
// backends' descriptors, so a backend that is not compiled in appears nowhere.
type Descriptor struct {
	Name           string    `json:"name"`
	Isolation      Isolation `json:"isolation"`
	Remote         bool      `json:"remote"`          // runs on a hosted provider
	PackageManager string    `json:"package_manager"` // "apt-get", "dnf", "apk", "" when unknown
	DefaultImage   string    `json:"default_image,omitempty"`
	// Summary says in one line what the backend is and how it isolates (the README's
	// backend table and the web UI show it).
	Summary string `json:"summary,omitempty"`
	// AutoRank places the backend in backend = "auto": candidates are tried by ascending
	// rank. 0 means auto never picks it (select it by name). The ranks in use follow
	// DESIGN.md's order: local VMs and containers, namespace jails, hosted providers, and
	// the restricted host last (see backend.RankDocker and its neighbours).
	AutoRank int `json:"auto_rank,omitempty"`
	// Settings are the keys of the backend's [backends.<name>] section that an operator may
	// also give through an environment alias or the settings API.
	Settings []Setting `json:"settings,omitempty"`
	// HostPaths names the create-request fields whose values can name a path on the host
	// moat runs on: "image" when an absolute image is a host directory or tarball (bwrap),
	// "options.<key>[.<key>...]" for a string, or an array of strings, inside
	// Spec.Options (arrays of objects are walked element by element). Only the operator
	// names host paths: the manager refuses such a value from an API caller with
	// permission_denied unless it lies under a [security] allowed_host_paths root, and
	// hands the backend the canonical path (symlinks resolved) it checked. A backend that
	// adds a field naming a host path lists it here; nothing else is needed.
	HostPaths []string `json:"host_paths,omitempty"`
}

// Setting is one key of a backend's [backends.<name>] section that may also come from an
// environment alias or from the settings API (stored beside the records). The value of a
// key is, first to last: the section's explicit value, the value saved through the API,
// the first non-empty environment alias, the backend's default.
type Setting struct {
	Key string `json:"key"`
	// Aliases are deprecated names of the key, still accepted by the settings API and read
	// from values saved under them before the rename.
	Aliases []string `json:"aliases,omitempty"`
	// Env lists the environment aliases, most preferred first.
	Env []string `json:"env,omitempty"`
	// Secret settings are write-only: no API returns them and no log prints them.
	Secret bool `json:"secret,omitempty"`
	// Endpoint marks a setting that says where the backend sends its secrets (an API URL,
	// a domain). Set through the API, it requires every secret to be set through the API
	// too, so a token from the environment never goes to a URL an API caller chose.
	Endpoint bool `json:"endpoint,omitempty"`
	// OperatorOnly settings come from moat.toml or the environment only; the settings API
	// refuses them, because they name something on the host (a daemon socket, a path):
	// only the operator names host paths.
	OperatorOnly bool `json:"operator_only,omitempty"`
	// Doc says in a few words what the value is (shown by the web UI and docs/config.md).
	Doc string `json:"doc,omitempty"`
}

// Handle is the opaque, versioned reference a backend gives out for one sandbox. The manager
// stores it and hands it back to Attach after a restart. State belongs to the backend (the
// provider's or container id lives inside); Version lets a backend migrate old handles.
type Handle struct {
	Backend string          `json:"backend"`
	Version int             `json:"version"`
	State   json.RawMessage `json:"state"`
}

// Limits are resource limits. In a Spec, zero means the configured default ([sandbox]
// memory, cpus, pids; moat ships 1 GiB, 2 CPUs and 512 processes); in a backend request,
// zero means no limit (the operator configured "unlimited").
type Limits struct {
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	CPUs        float64 `json:"cpus,omitempty"`
	PIDs        int64   `json:"pids,omitempty"`
	DiskBytes   int64   `json:"disk_bytes,omitempty"`
}

// Bounds on what a request may carry. The manager refuses anything beyond them with
// invalid_argument before a backend sees it, so every backend can honour every accepted
// request (Linux's execve, PATH_MAX and NAME_MAX, the agent's frame size).
const (
	// MaxArgBytes bounds one exec's argv and environment together: each argument counts its
	// length plus one, each variable len(key)+len(value)+2. The sandbox's environment is
	// part of every exec, so a spec's env must fit too.
	MaxArgBytes = 512 << 10
	// MaxArgStringBytes bounds one argument or one KEY=value string (Linux MAX_ARG_STRLEN
	// less the NUL).
	MaxArgStringBytes = 128<<10 - 1
	// MaxPathBytes bounds a sandbox path, after resolving it against the workdir; also each
	// archive entry joined to its target directory. It leaves 1 KiB of Linux's PATH_MAX
	// (4096) to backends that reach the sandbox's files through a host directory (the
	// Docker daemon's archive API puts /var/lib/docker/overlay2/<id>/merged in front).
	MaxPathBytes = 3071
	// MaxPathElemBytes bounds one element of a path (NAME_MAX).
	MaxPathElemBytes = 255
	// MaxPathDepth bounds how many elements a path (or an archive entry under its target
	// directory) has.
	MaxPathDepth = 256
	// MaxEnvVars bounds how many variables a spec or an exec sets.
	MaxEnvVars = 4096
	// MaxLabels bounds how many labels a spec sets; MaxLabelValueBytes one value.
	MaxLabels          = 256
	MaxLabelValueBytes = 1024
	// MaxPIDs is the largest process-count limit (Linux PID_MAX_LIMIT).
	MaxPIDs = 1 << 22
	// MaxRemoteMemoryBytes and MaxRemoteCPUs bound limits asked of a hosted provider, whose
	// own plan limits apply below them; local backends are bounded by the host's RAM and
	// CPUs instead.
	MaxRemoteMemoryBytes = 1 << 40
	MaxRemoteCPUs        = 256
	// MaxDiskBytes bounds a disk limit.
	MaxDiskBytes = 1 << 50
)

// NetworkMode says what network a sandbox gets. The zero value is NetworkNone.
type NetworkMode string

const (
	NetworkNone NetworkMode = "none" // loopback only
	NetworkHost NetworkMode = "host" // the backend's normal outbound network
)

// FileInfo describes one directory entry inside a sandbox.
type FileInfo struct {
	Name    string      `json:"name"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mod_time"`
	IsDir   bool        `json:"is_dir"`
}

// Health is the result of a probe.
type Health struct {
	State  HealthState `json:"state"`
	Reason string      `json:"reason,omitempty"` // human-readable, prefixed with the backend name
}

// HealthState says whether a backend can be used.
type HealthState string

const (
	Ready       HealthState = "ready"
	Degraded    HealthState = "degraded" // usable, with a caveat in Reason
	Unavailable HealthState = "unavailable"
)

// Snapshot names a saved sandbox filesystem that CreateRequest.Image may refer to.
type Snapshot struct {
	ID        string    `json:"id"`
	Image     string    `json:"image"` // what to put in CreateRequest.Image to start from it
	CreatedAt time.Time `json:"created_at"`
}

// WinSize is a terminal's size in character cells.
type WinSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// DefaultWorkdir is where commands start unless a spec says otherwise.
const DefaultWorkdir = "/workspace"

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

// DefaultMaxOutput caps each captured stream (stdout, stderr) when ExecRequest leaves
// MaxOutputBytes at zero and gives no writer of its own.
const DefaultMaxOutput = 1 << 20

// ExecRequest is one command. Cmd is argv and runs without a shell; to run a shell command
// line, say so explicitly with Shell (it runs as sh -c Shell). Exactly one of them is set.
type ExecRequest struct {
	Cmd   []string
	Shell string
	// Env is added to the sandbox's environment for this command.
	Env map[string]string
	// Workdir is where the command starts: absolute, or relative to the sandbox's workdir.
	Workdir string
	// Stdin feeds the command; nil means no input (EOF).
	Stdin io.Reader
	// Stdout and Stderr receive the output as it is produced. When nil, the output is
	// captured into ExitResult.Stdout / Stderr.
	Stdout io.Writer
	Stderr io.Writer
	// MaxOutputBytes caps each stream. Zero means DefaultMaxOutput for captured streams and
	// no cap for caller writers. Beyond the cap output is drained and dropped (the command
	// is not blocked), the Truncated flag is set, and the cut never splits a UTF-8
	// character.
	MaxOutputBytes int64
	// Timeout bounds the command (0: only ctx bounds it).
	Timeout time.Duration
}

// ExitResult is how a command ended.
type ExitResult struct {
	ExitCode int `json:"exit_code"`
	// Stdout and Stderr hold captured output (when the request gave no writer).
	Stdout          []byte `json:"-"`
	Stderr          []byte `json:"-"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	// OOMKilled is true when the command was killed (exit code 137) because the sandbox ran
	// out of memory under its limit, not by a plain SIGKILL. Backends that cannot tell
	// (hosted providers, docker without moat-agent) leave it false.
	OOMKilled bool          `json:"oom_killed"`
	Duration  time.Duration `json:"duration"`
}

// TerminalRequest is an interactive command on a pseudo-terminal. Cmd defaults to
// ["sh"]. The terminal's output (stdout and stderr merged, as on a real terminal) goes to
// Stdout; Stdin carries keystrokes; Resize, when set, delivers new sizes until closed.
type TerminalRequest struct {
	Cmd     []string
	Env     map[string]string
	Workdir string
	Stdin   io.Reader
	Stdout  io.Writer
	// Size is the initial size; zero means 24x80.
	Size   WinSize
	Resize <-chan WinSize
}

// Status is a sandbox's recorded lifecycle state.
type Status string

// Sandbox statuses.
const (
	StatusCreating  Status = "creating" // written before the backend is called
	StatusActive    Status = "active"
	StatusPaused    Status = "paused"
	StatusStopped   Status = "stopped"
	StatusError     Status = "error" // LastError says why
	StatusDestroyed Status = "destroyed"
)

// Info is a sandbox's record as users see it.
type Info struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	Backend   string            `json:"backend"`
	SessionID string            `json:"session_id,omitempty"`
	Status    Status            `json:"status"`
	LastError string            `json:"last_error,omitempty"`
	Spec      Spec              `json:"spec"`
	Labels    map[string]string `json:"labels,omitempty"`
	Handle    Handle            `json:"handle"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	LastUsed  time.Time         `json:"last_used"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
}

// ErrCommandNotFound is wrapped (with errdefs NotFound) by Exec errors whose program does
// not exist in the sandbox, to tell them from a sandbox that does not exist.
var ErrCommandNotFound = errors.New("command not found")

// ListFilter selects sandboxes in List. Zero fields match everything; Labels must all
// match; destroyed sandboxes are left out unless IncludeDestroyed is set or Status names
// "destroyed".
type ListFilter struct {
	Backend   string
	SessionID string
	Status    []Status
	Labels    map[string]string
	Name      string
	// IncludeDestroyed includes destroyed records when Status is empty.
	IncludeDestroyed bool
}

// SecretState says whether a write-only setting has a value and where it came from.
type SecretState struct {
	Configured bool `json:"configured"`
	FromEnv    bool `json:"from_env"`
	// Env is the environment alias the value may come from.
	Env string `json:"env,omitempty"`
}

// BackendSettings is one backend's settings as the API shows them: non-secret values, only the state of
// secrets, and the schema, so a front end needs no table of its own.
type BackendSettings struct {
	Name string `json:"name"`
	// Values are the effective non-secret settings (saved, else from the environment).
	Values map[string]string `json:"values"`
	// Secrets are the write-only settings' states, by key.
	Secrets map[string]SecretState `json:"secrets"`
	// TokenConfigured is true when every secret of the backend has a value.
	TokenConfigured bool `json:"token_configured"`
	// FromEnv is true when a secret's value comes from the environment rather than a saved
	// setting.
	FromEnv bool `json:"from_env"`
	// Fields are the settings the API takes for this backend, in the backend's order.
	Fields []Setting `json:"fields"`
}

// BackendStatus is one backend as `moat backends` and GET /v1/backends show it.
type BackendStatus struct {
	Descriptor
	Health Health `json:"health"`
	// Auto is true for the backend that "auto" picks now.
	Auto bool `json:"auto"`
}

// BackendReport lists every backend and what auto picks, with the reasons.
type BackendReport struct {
	Backends []BackendStatus `json:"backends"`
	Auto     string          `json:"auto"`
	// AutoExplain is the router's reasoning in one line, or why nothing is usable.
	AutoExplain string `json:"auto_explain"`
}

// Default archive caps, used for a zero ArchiveLimits field.
const (
	DefaultArchiveMaxBytes   = 1 << 30
	DefaultArchiveMaxEntries = 100000
)

// ArchiveLimits caps one archive transfer. A zero field takes its default: MaxBytes 1 GiB,
// MaxEntries 100000, MaxFileBytes MaxBytes.
type ArchiveLimits struct {
	MaxBytes     int64 `json:"max_bytes,omitempty"`      // file content in total
	MaxEntries   int   `json:"max_entries,omitempty"`    // entries of any type, skipped ones too
	MaxFileBytes int64 `json:"max_file_bytes,omitempty"` // one file's content
}

// Defaults returns l with its zero (or negative) fields set to their defaults.
func (l ArchiveLimits) Defaults() ArchiveLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultArchiveMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultArchiveMaxEntries
	}
	if l.MaxFileBytes <= 0 || l.MaxFileBytes > l.MaxBytes {
		l.MaxFileBytes = l.MaxBytes
	}
	return l
}

// Tighter returns, field by field, the smaller of l and m after defaults: a server applies
// its own caps and a caller's tighter ones.
func (l ArchiveLimits) Tighter(m ArchiveLimits) ArchiveLimits {
	l, m = l.Defaults(), m.Defaults()
	return ArchiveLimits{
		MaxBytes:     min(l.MaxBytes, m.MaxBytes),
		MaxEntries:   min(l.MaxEntries, m.MaxEntries),
		MaxFileBytes: min(l.MaxFileBytes, m.MaxFileBytes),
	}.Defaults()
}

// ArchiveResult counts what an archive transfer carried.
type ArchiveResult struct {
	Files int   `json:"files"`
	Dirs  int   `json:"dirs"`
	Bytes int64 `json:"bytes"`
}

// SessionMode says how a session's sandboxes are isolated.
type SessionMode string

const (
	// SessionIsolated (the default) runs the session's sandboxes on an isolating backend:
	// the session's, the spec's, the configured one or auto's pick.
	SessionIsolated SessionMode = "isolated"
	// SessionHost runs them unsandboxed on the restricted host backend (isolation none).
	// It is allowed only when [sandbox] allow_unisolated is on: else permission_denied.
	SessionHost SessionMode = "host"
)

// MaxSessionIDBytes is the longest session id moat accepts. A session id is free UTF-8
// text (spaces, '/', '?' are fine) without control characters, other than "." and "..".
const MaxSessionIDBytes = 256

// Session is a session's stored settings: every sandbox created with its id starts from
// them. A field the sandbox's spec sets wins over the session's, and the session's over
// the configured [sandbox] defaults; Env and Labels are merged key by key the same way.
// (Workspace sync is not part of a session yet: moat has no workspace sync.)
type Session struct {
	ID string `json:"id"`
	// Backend names the backend of the session's sandboxes ("" or "auto": the configured
	// default, then auto-detection).
	Backend string `json:"backend,omitempty"`
	// Image is the image of the session's sandboxes ("" for the backend's default).
	Image   string            `json:"image,omitempty"`
	Limits  Limits            `json:"limits"`
	Network NetworkMode       `json:"network,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Mode is "isolated" (the default; "" reads as it) or "host".
	Mode      SessionMode `json:"mode,omitempty"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// SessionPatch changes some of a session's fields (JSON merge-patch style): a field left
// out (nil) stays as it is, an empty string or zero clears it, and an Env or Labels key
// whose value is null is removed.
type SessionPatch struct {
	Backend *string            `json:"backend,omitempty"`
	Image   *string            `json:"image,omitempty"`
	Limits  *LimitsPatch       `json:"limits,omitempty"`
	Network *NetworkMode       `json:"network,omitempty"`
	Env     map[string]*string `json:"env,omitempty"`
	Labels  map[string]*string `json:"labels,omitempty"`
	Mode    *SessionMode       `json:"mode,omitempty"`
}

// LimitsPatch changes some limits: nil leaves one as it is, zero clears it.
type LimitsPatch struct {
	MemoryBytes *int64   `json:"memory_bytes,omitempty"`
	CPUs        *float64 `json:"cpus,omitempty"`
	PIDs        *int64   `json:"pids,omitempty"`
	DiskBytes   *int64   `json:"disk_bytes,omitempty"`
}

// Apply returns s with p applied. It never changes s's maps.
func (p SessionPatch) Apply(s Session) Session {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&s.Backend, p.Backend)
	set(&s.Image, p.Image)
	if p.Network != nil {
		s.Network = *p.Network
	}
	if p.Mode != nil {
		s.Mode = *p.Mode
	}
	if l := p.Limits; l != nil {
		if l.MemoryBytes != nil {
			s.Limits.MemoryBytes = *l.MemoryBytes
		}
		if l.CPUs != nil {
			s.Limits.CPUs = *l.CPUs
		}
		if l.PIDs != nil {
			s.Limits.PIDs = *l.PIDs
		}
		if l.DiskBytes != nil {
			s.Limits.DiskBytes = *l.DiskBytes
		}
	}
	s.Env = patchMap(s.Env, p.Env)
	s.Labels = patchMap(s.Labels, p.Labels)
	return s
}

func patchMap(m map[string]string, p map[string]*string) map[string]string {
	if len(p) == 0 {
		return m
	}
	out := make(map[string]string, len(m)+len(p))
	for k, v := range m {
		out[k] = v
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// SandboxFailure is one sandbox a bulk operation could not act on, and why.
type SandboxFailure struct {
	ID    string       `json:"id"`
	Kind  errdefs.Kind `json:"kind"`
	Error string       `json:"error"`
}

// SessionTeardown is what destroying a session's sandboxes did: the ids destroyed and the
// ones that failed, each with its error.
type SessionTeardown struct {
	Session   string           `json:"session"`
	Destroyed []string         `json:"destroyed"`
	Failed    []SandboxFailure `json:"failed,omitempty"`
}

// Err is nil when every sandbox was destroyed, else an error of the first failure's kind
// that names each sandbox left and why. The library and the Go client both return it, so
// a partial failure reads the same in-process and over HTTP.
func (t SessionTeardown) Err() error {
	if len(t.Failed) == 0 {
		return nil
	}
	parts := make([]string, len(t.Failed))
	for i, f := range t.Failed {
		parts[i] = f.ID + ": " + f.Error
	}
	msg := fmt.Sprintf("moat: session %q: %d of %d sandboxes not destroyed: %s",
		t.Session, len(t.Failed), len(t.Failed)+len(t.Destroyed), strings.Join(parts, "; "))
	if k := errdefs.Sentinel(t.Failed[0].Kind); k != nil {
		return errdefs.New(k, msg)
	}
	return errors.New(msg)
}
