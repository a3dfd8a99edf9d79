// Package host answers "how do I run sandbox commands when nothing better is available?":
// the restricted-host backend ("host"), which runs commands directly on this machine with
// resource limits (cgroups where writable, rlimits via prlimit) and no isolation at all.
//
// Commands see — and may change — the host filesystem, network and processes, as the user
// running moat. What the backend keeps private is only bookkeeping: each sandbox gets a
// directory <StateDir>/sandboxes/<id>/root; the sandbox workdir, $HOME and $TMPDIR live
// inside it, relative workdirs resolve there, and the file API (WriteFile, ReadFile,
// ListDir) resolves every path inside that root, so "/workspace/f" is <root>/workspace/f
// and a symlink cannot make it touch the host. Absolute paths in a command's argv are host
// paths. Each command gets a clean environment (PATH, HOME, TMPDIR and the request's
// variables), never moat's own, and runs in its own process group: cancellation kills that
// group. Each sandbox also gets a cgroup (even without limits) where one can be created, so
// Destroy kills what left the group too (setsid, daemons); without a writable cgroup those
// survive Destroy. Rlimits bind only an unprivileged command: one running as root with
// CAP_SYS_RESOURCE raises them again (memory without a cgroup, disk, open files). Use it only where its Probe reason ("no isolation") is acceptable.
package host

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/limits"
	"github.com/moatsh/moat/backends/internal/rootfs"
	"github.com/moatsh/moat/backends/internal/statedir"
	"github.com/moatsh/moat/errdefs"
)

// sharedExecs tracks running commands across all Backend values of this process, so an
// Instance attached through another Backend can kill them on Destroy.
var sharedExecs = &limits.Tracker{}

// Name is the name the backend registers under.
const Name = "host"

// handleVersion is the version of the handle State layout.
const handleVersion = 1

func init() { backend.Register(Name, New) }

// Config is the [backends.host] section of moat.toml.
type Config struct {
	// NoCgroups disables cgroup limits; only rlimits (via prlimit) are applied.
	NoCgroups bool `toml:"no_cgroups" json:"no_cgroups"`
	// MaxOpenFiles is RLIMIT_NOFILE for every command; 0 leaves it unchanged.
	MaxOpenFiles int64 `toml:"max_open_files" json:"max_open_files"`
	// MaxFileSize is RLIMIT_FSIZE (bytes) for every command; 0 means the sandbox's disk
	// limit, if any.
	MaxFileSize int64 `toml:"max_file_size" json:"max_file_size"`
}

// Backend is the restricted-host backend.
type Backend struct {
	conf Config
	dir  statedir.Dir
}

// New is the backend.Factory: it decodes the config and does no I/O.
func New(cfg backend.Config) (backend.Backend, error) {
	b := &Backend{dir: statedir.Dir{Name: Name, Version: handleVersion, StateDir: cfg.StateDir,
		Execs: sharedExecs, Logger: cfg.Logger}}
	if cfg.Decode != nil {
		if err := cfg.Decode(&b.conf); err != nil {
			return nil, errdefs.InvalidArgumentf("host: config: %w", err)
		}
	}
	return b, nil
}

// Descriptor implements backend.Backend.
func (b *Backend) Descriptor() backend.Descriptor {
	return backend.Descriptor{Name: Name, Isolation: backend.IsolationNone, AutoRank: backend.RankHost,
		Summary: "restricted host: a private directory, rlimits and cgroup limits where available; **no isolation** — only with `allow_unisolated = true`"}
}

// meta is written to <sandbox>/.moat.json for Lister, and is the handle state.
type meta struct {
	ID     string         `json:"id"`
	Root   string         `json:"root"`
	Limits backend.Limits `json:"limits,omitzero"`
}

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	if err := b.dir.CheckCreate(req); err != nil {
		return nil, err
	}
	if req.Image != "" {
		return nil, errdefs.InvalidArgumentf("host: images are not supported (commands run on the host): %q", req.Image)
	}
	dir, err := b.dir.MakeDir(req.ID)
	if err != nil {
		return nil, err
	}
	m := meta{ID: req.ID, Root: filepath.Join(dir, "root"), Limits: req.Limits}
	inst, err := b.create(m, req.Workdir)
	if err != nil {
		_ = statedir.RemoveTree(dir)
		return nil, err
	}
	return inst, nil
}

func (b *Backend) create(m meta, workdir string) (*Instance, error) {
	for _, d := range []string{m.Root, filepath.Join(m.Root, "home"), filepath.Join(m.Root, "tmp")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(m.Root, "tmp"), 0o1777); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	if err := b.dir.WriteMeta(m); err != nil {
		return nil, err
	}
	inst, err := b.instance(m)
	if err != nil {
		return nil, err
	}
	if workdir != "" {
		if err := inst.fs.MkdirAll(workdir, 0o755); err != nil {
			_ = inst.sb.Close()
			return nil, err
		}
	}
	return inst, nil
}

func (b *Backend) instance(m meta) (*Instance, error) {
	sb, err := b.dir.Open(m, limits.Options{
		Limits:    m.Limits,
		NoCgroups: b.conf.NoCgroups,
		Extra:     limits.Extra{NoFile: b.conf.MaxOpenFiles, FileSizeBytes: b.conf.MaxFileSize},
		// Commands run on the host, where setsid or a daemon leaves the process group:
		// only a cgroup lets Destroy find them.
		Track: true,
	})
	if err != nil {
		return nil, err
	}
	root := &rootfs.FS{Name: Name, Root: m.Root}
	return &Instance{m: m, sb: sb, fs: root, Files: sb.Files(root)}, nil
}

// Attach implements backend.Backend.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	var m meta
	if err := b.dir.Attach(h, &m); err != nil {
		return nil, err
	}
	return b.instance(m)
}

// List implements backend.Lister: every sandbox directory under the state dir.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	return b.dir.List(func() statedir.Meta { return new(meta) })
}

// Probe implements backend.Prober: always usable, never isolated.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	who := strconv.Itoa(os.Geteuid())
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	rep := limits.Check(limits.Options{NoCgroups: b.conf.NoCgroups,
		Limits: backend.Limits{MemoryBytes: 1, CPUs: 1, PIDs: 1, DiskBytes: 1}})
	return backend.Health{State: backend.Degraded,
		Reason: "host: no isolation: commands run on the host as " + who + "; limits: " + rep.String()}
}

// SandboxID and SandboxRoot let package statedir check and list sandboxes.
func (m meta) SandboxID() string   { return m.ID }
func (m meta) SandboxRoot() string { return m.Root }

// Instance is one host sandbox.
type Instance struct {
	m  meta
	sb *statedir.Sandbox
	fs *rootfs.FS
	statedir.Files
}

// Handle implements backend.Instance.
func (i *Instance) Handle() backend.Handle { return i.sb.Handle() }

// LimitsReport says which of the sandbox's limits are enforced.
func (i *Instance) LimitsReport() limits.Report { return i.sb.LimitsReport() }

// Status implements backend.Instance.
func (i *Instance) Status(ctx context.Context) (backend.Status, error) { return i.sb.Status(ctx) }

// defaultPath is PATH when the request sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// prepared is a command ready to start: the sandbox is there and tracked, the workdir
// exists, the environment is clean and the program is resolved.
type prepared struct {
	ctx  context.Context // ends when the command must die (ctx, or Destroy)
	done func()
	path string
	dir  string
	env  []string
}

// prepare does what Exec and ExecPTY share. Call p.done when the command has ended.
func (i *Instance) prepare(ctx context.Context, req *backend.ExecRequest) (*prepared, error) {
	ctx, done, err := i.sb.Start(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*prepared, error) { done(); return nil, err }
	wd := req.Workdir
	if wd == "" {
		wd = "/"
	}
	if err := i.fs.MkdirAll(wd, 0o755); err != nil {
		return fail(err)
	}
	cwd, err := i.fs.HostPath(wd)
	if err != nil {
		return fail(fmt.Errorf("host: workdir %s: %w", wd, err))
	}
	env := map[string]string{
		"PATH":   defaultPath,
		"HOME":   filepath.Join(i.m.Root, "home"),
		"TMPDIR": filepath.Join(i.m.Root, "tmp"),
	}
	for k, v := range req.Env {
		env[k] = v
	}
	envList := make([]string, 0, len(env))
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	sort.Strings(envList)
	resolved, err := lookPath(req.Argv[0], env["PATH"], cwd)
	if err != nil {
		return fail(err)
	}
	return &prepared{ctx: ctx, done: done, path: resolved, dir: cwd, env: envList}, nil
}

// Exec implements backend.Instance.
func (i *Instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	p, err := i.prepare(ctx, req)
	if err != nil {
		return -1, err
	}
	defer p.done()
	return limits.Run(p.ctx, limits.Cmd{
		Argv: req.Argv, Path: p.path, Dir: p.dir, Env: p.env,
		Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Group: i.sb.Group(),
		Detail: req.Detail,
	})
}

// lookPath finds file like execvp would with the command's PATH (not moat's), so a
// missing executable is NotFound rather than a wrapper's exit code 127.
func lookPath(file, pathEnv, cwd string) (string, error) {
	isExec := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && st.Mode().IsRegular() && syscall.Access(p, 1 /* X_OK */) == nil
	}
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		if isExec(p) {
			return p, nil
		}
		return "", errdefs.NotFoundf("host: executable %s not found", file)
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		if p := filepath.Join(dir, file); isExec(p) {
			return p, nil
		}
	}
	return "", errdefs.NotFoundf("host: executable %s not found in PATH", file)
}

// Destroy implements backend.Instance: kills the sandbox's commands and removes its
// directory. It is idempotent.
func (i *Instance) Destroy(ctx context.Context) error { return i.sb.Destroy(ctx) }

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Lister         = (*Backend)(nil)
	_ backend.Prober         = (*Backend)(nil)
	_ backend.Instance       = (*Instance)(nil)
	_ backend.FileTransferer = (*Instance)(nil)
)
