// Package backend answers "what must a sandbox backend implement?": the contract between
// the moat manager and each backend (docker, bwrap, host, hosted providers, the fake), like
// database/sql/driver for database/sql.
//
// The manager validates, defaults and normalizes every request before a backend sees it:
// backends never re-validate specs, paths or argv. A backend implements the small required
// interfaces Backend and Instance; everything else is an optional ability discovered by type
// assertion (FileTransferer, FileRemover, DirMaker, Archiver, Lister, Prober, Pauser,
// Snapshotter, PortExposer, Stopper, PTYExecer). Errors carry errdefs kinds.
package backend

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/moatsh/moat/moattype"
)

// Isolation is how strongly a backend separates a sandbox from its host (moattype.Isolation).
type Isolation = moattype.Isolation

// Isolation levels, weakest first.
const (
	IsolationNone      = moattype.IsolationNone
	IsolationNamespace = moattype.IsolationNamespace
	IsolationContainer = moattype.IsolationContainer
	IsolationMicroVM   = moattype.IsolationMicroVM
	IsolationRemote    = moattype.IsolationRemote
)

// Descriptor holds the static facts the router, the settings API, the web UI and the docs
// rank and show (moattype.Descriptor; it is on the wire as GET /v1/backends shows it). A
// backend states each fact there and nowhere else.
type Descriptor = moattype.Descriptor

// Auto ranks of the backends moat knows of, in DESIGN.md's order. A new backend picks a
// rank between its neighbours; equal ranks are ordered by name.
const (
	RankAppleContainer = 100
	RankPodman         = 200
	RankDocker         = 300
	RankFirecracker    = 400
	RankBwrap          = 500
	RankVercel         = 600
	RankDaytona        = 700
	RankE2B            = 800
	RankModal          = 900
	RankRunloop        = 1000
	RankSprites        = 1100
	RankHost           = 10000
)

// Setting is one key of a backend's section that may also come from an environment alias
// or the settings API (moattype.Setting).
type Setting = moattype.Setting

// Handle is the opaque, versioned reference a backend gives out for one sandbox
// (moattype.Handle). The manager stores it and hands it back to Attach after a restart.
type Handle = moattype.Handle

// Limits are resource limits; zero means "no limit" (or the backend's default).
type Limits = moattype.Limits

// NetworkMode says what network a sandbox gets. The zero value is NetworkNone.
type NetworkMode = moattype.NetworkMode

// Network modes.
const (
	NetworkNone = moattype.NetworkNone
	NetworkHost = moattype.NetworkHost
)

// CreateRequest is a validated, defaulted sandbox spec.
type CreateRequest struct {
	// ID is moat's own id for the sandbox; backends use it to name and label what they create.
	ID      string
	Name    string
	Image   string            // "" means the backend's default image
	Env     map[string]string // set for every exec
	Workdir string            // absolute; created by Create; default cwd for exec
	Labels  map[string]string
	Limits  Limits
	Network NetworkMode
	// TTL asks hosted providers to stop the sandbox by themselves after this long; 0 is none.
	TTL time.Duration
	// Options are backend-specific create options (the spec's "options" object), decoded by
	// the backend; unknown keys are InvalidArgument.
	Options json.RawMessage
}

// ExecRequest is one command to run. Argv is never empty and Argv[0] is never "". Env and
// Workdir are already merged with the sandbox's defaults. Stdin may be nil (no input: the
// process sees EOF). Stdout and Stderr are never nil; writes to them may block, and the
// backend must keep draining the process while they do. The manager caps output, so backends
// copy everything.
type ExecRequest struct {
	Argv    []string
	Env     map[string]string
	Workdir string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// Detail, when not nil, receives what the backend can tell of how the command ended
	// beyond its exit code. A backend that cannot tell leaves it zero; one that can sets
	// its fields before Exec returns (use SetOOMKilled).
	Detail *ExecDetail
}

// ExecDetail is what a backend may report about how a command ended besides its exit code.
// It is optional: the zero value claims nothing.
type ExecDetail struct {
	// OOMKilled is set when the command died of SIGKILL (exit code 137) because the
	// kernel's OOM killer struck the sandbox's memory cgroup while it ran (cgroup v2
	// memory.events or v1 memory.oom_control oom_kill went up), as opposed to a plain
	// kill -9. Where the sandbox runs several commands at once, an OOM kill during this
	// one's run is attributed to every one of them that died of SIGKILL.
	OOMKilled bool
}

// SetOOMKilled records in r.Detail, when there is one, that the command was OOM-killed.
func (r *ExecRequest) SetOOMKilled() {
	if r.Detail != nil {
		r.Detail.OOMKilled = true
	}
}

// Backend creates sandboxes and re-attaches to existing ones. Implementations are safe for
// concurrent use.
type Backend interface {
	// Descriptor returns static facts; it must not do I/O.
	Descriptor() Descriptor
	// Create makes a new running sandbox. On error nothing may be left behind when the
	// backend can help it; what it cannot clean up must carry req.ID so Lister finds it.
	Create(ctx context.Context, req *CreateRequest) (Instance, error)
	// Attach rebuilds an Instance from a handle returned earlier by Instance.Handle, possibly
	// by another process. It returns an errdefs NotFound error when the sandbox is gone.
	Attach(ctx context.Context, h Handle) (Instance, error)
}

// Status is what a backend knows of a sandbox's state.
type Status string

const (
	StatusRunning Status = "running"
	StatusPaused  Status = "paused"
	StatusStopped Status = "stopped"
	StatusGone    Status = "gone" // the backend has no such sandbox (any more)
)

// Instance is one sandbox. Methods are safe for concurrent use (20 execs at once on one
// sandbox must work).
type Instance interface {
	// Handle returns the reference to store for Attach. It does no I/O.
	Handle() Handle
	// Exec runs req to completion and returns its exit code. A process killed by a signal
	// returns 128+signal. When ctx ends, the process (and what it started) is killed and Exec
	// returns ctx.Err() wrapped. A missing executable is an errdefs NotFound error, not an
	// exit code. After Destroy, Exec returns NotFound.
	Exec(ctx context.Context, req *ExecRequest) (int, error)
	// Status reports the current state; StatusGone (not an error) when the sandbox vanished.
	Status(ctx context.Context) (Status, error)
	// Destroy removes the sandbox and everything it owns. Destroying a destroyed or vanished
	// sandbox succeeds.
	Destroy(ctx context.Context) error
}

// FileInfo describes one directory entry inside a sandbox.
type FileInfo = moattype.FileInfo

// FileTransferer is an Instance that moves files natively. Paths are absolute and clean, and
// never contain "..". A backend whose sandbox filesystem is visible on the host must still
// keep symlinks inside the sandbox from reaching the host (resolve within the root).
// Without it the manager falls back to exec (cat, tar).
type FileTransferer interface {
	// WriteFile creates or replaces the file at path with r's bytes and mode's permission
	// bits, creating missing parent directories (0755). It is all or nothing: when r fails
	// (a size cap, a client gone) or ctx ends before all of it is written, the old file is
	// left as it was and no partial or temporary file stays behind (write beside it and
	// rename, or hold all of r before the provider call).
	WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error
	// ReadFile copies the file at path to w. NotFound when it does not exist;
	// InvalidArgument when it is a directory.
	ReadFile(ctx context.Context, path string, w io.Writer) error
	// ListDir lists a directory's entries sorted by name. NotFound when missing.
	ListDir(ctx context.Context, path string) ([]FileInfo, error)
}

// FileRemover is an Instance that removes files natively. Without it the manager runs rm
// in the sandbox. path is absolute, clean and never "/".
type FileRemover interface {
	// Remove deletes the file, symlink (never its target) or, with recursive, directory
	// tree at path. NotFound when nothing is there; FailedPrecondition for a directory
	// without recursive.
	Remove(ctx context.Context, path string, recursive bool) error
}

// DirMaker is an Instance that makes directories natively. Without it the manager runs
// mkdir in the sandbox.
type DirMaker interface {
	// Mkdir creates the directory at path with mode's permission bits, and its missing
	// parents (0755). An existing directory (or symlink to one) is left as it is;
	// AlreadyExists when something else is there.
	Mkdir(ctx context.Context, path string, mode fs.FileMode) error
}

// Archiver is an Instance that moves whole trees as tar streams natively. Without it the
// manager packs and unpacks through FileTransferer, one file at a time. The manager checks
// every stream both ways (package internal/tarfs: names, types, size and entry caps), so an
// Archiver only moves bytes; it must still resolve names and symlinks inside the sandbox.
type Archiver interface {
	// PutArchive unpacks the tar stream r into the existing directory dir. The stream holds
	// only regular files and directories with clean relative names. Files are replaced.
	PutArchive(ctx context.Context, dir string, r io.Reader) error
	// GetArchive writes the tree at directory dir as a tar stream to w, names relative to
	// dir ("./" prefixes allowed). NotFound when dir is missing, InvalidArgument when it is
	// not a directory; either before anything is written to w.
	GetArchive(ctx context.Context, dir string, w io.Writer) error
}

// Health is the result of a probe.
type Health = moattype.Health

// HealthState says whether a backend can be used.
type HealthState = moattype.HealthState

// Health states.
const (
	Ready       = moattype.Ready
	Degraded    = moattype.Degraded
	Unavailable = moattype.Unavailable
)

// Prober is a Backend that can tell whether it is usable here. Backends without it are
// assumed ready.
type Prober interface {
	Probe(ctx context.Context) Health
}

// Listed is one sandbox a Lister found, with the moat id it was created for.
type Listed struct {
	ID     string // CreateRequest.ID, "" when unknown
	Handle Handle
}

// Lister is a Backend that can enumerate the sandboxes it created for moat, so the
// reconciler can remove the ones no record owns.
type Lister interface {
	List(ctx context.Context) ([]Listed, error)
}

// Stopper is an Instance that can stop without losing its filesystem, and start again.
type Stopper interface {
	Stop(ctx context.Context) error
	Start(ctx context.Context) error
}

// Pauser is an Instance that can freeze and thaw its processes.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// Snapshot names a saved sandbox filesystem that CreateRequest.Image may refer to.
type Snapshot = moattype.Snapshot

// Snapshotter is an Instance that can save its filesystem for later sandboxes.
type Snapshotter interface {
	Snapshot(ctx context.Context, name string) (Snapshot, error)
}

// PortExposer is an Instance that can make a port inside the sandbox reachable from outside.
type PortExposer interface {
	// ExposePort returns the URL (or host:port) that reaches port inside the sandbox.
	ExposePort(ctx context.Context, port int) (string, error)
}

// Config is what a Factory gets: the backend's section of moat.toml and where it may keep
// state. A Factory must not do I/O beyond decoding; use Prober for availability.
type Config struct {
	// Decode decodes the backend's [backends.<name>] section into v (a pointer to a struct),
	// rejecting unknown keys. It leaves v unchanged when the section is absent.
	Decode func(v any) error
	// StateDir is a directory the backend may use ($MOAT_HOME/backends/<name>). It may not
	// exist yet.
	StateDir string
	// Getenv reads the environment (os.Getenv in production, a map in tests), for aliases
	// such as VERCEL_TOKEN. Explicit config wins over it. Prefer Fill, which also applies
	// the values saved through the settings API.
	Getenv func(string) string
	// Saved holds the values saved through the settings API for this backend, by
	// Setting.Key, read before the factory runs. The manager builds the backend again when
	// they change, so a factory reads them once and never goes to the store itself.
	Saved  map[string]string
	Logger *slog.Logger
}

// Fill sets *dst from setting s when the [backends.<name>] section left it empty: the value
// saved through the settings API, else the first non-empty environment alias. Surrounding
// space is trimmed.
func (c Config) Fill(s Setting, dst *string) {
	if strings.TrimSpace(*dst) != "" {
		return
	}
	*dst = c.Value(s)
}

// FromAPI reports whether the value Fill would give a field whose section value is
// explicit comes from the settings API (rather than moat.toml or the environment). Hosted
// backends record it for endpoints, so a secret from the operator's environment is never
// sent to an endpoint an API caller chose, not even to one a sandbox's handle recorded.
// Call it before Fill.
func (c Config) FromAPI(s Setting, explicit string) bool {
	if strings.TrimSpace(explicit) != "" {
		return false
	}
	for _, k := range append([]string{s.Key}, s.Aliases...) {
		if strings.TrimSpace(c.Saved[k]) != "" {
			return true
		}
	}
	return false
}

// Value returns the value of s that does not come from the section: the saved one, else
// the first non-empty environment alias, else "".
func (c Config) Value(s Setting) string {
	for _, k := range append([]string{s.Key}, s.Aliases...) {
		if v := strings.TrimSpace(c.Saved[k]); v != "" {
			return v
		}
	}
	if c.Getenv == nil {
		return ""
	}
	for _, e := range s.Env {
		if v := strings.TrimSpace(c.Getenv(e)); v != "" {
			return v
		}
	}
	return ""
}

// Factory builds a Backend from its configuration.
type Factory func(cfg Config) (Backend, error)
