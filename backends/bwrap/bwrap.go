// Package bwrap answers "how do I run a sandbox in Linux namespaces without a container
// runtime?": the bubblewrap backend ("bwrap").
//
// Each sandbox owns a persistent root directory <StateDir>/sandboxes/<id>/root. With an
// image (CreateRequest.Image, else the configured rootfs: a directory, .tar or .tar.gz) the
// image is copied into it once at Create, safely (see package rootfs); without one, the
// root holds only the sandbox's own directories and the host's /usr and /etc (and /bin,
// /lib, ... as they are on the host) are bind-mounted read-only. Every Exec is one bwrap
// process: new user (uid 0 inside), pid, ipc, uts, cgroup and — unless the sandbox asks
// for the host network — network namespaces (loopback only), the root bind-mounted
// read-write as /, a fresh /proc and /dev, a clean environment, and --die-with-parent, so
// killing bwrap tears the whole pid namespace down. Files written by one exec are there
// for the next. The same flags work as root and unprivileged (where user namespaces are
// allowed). Uid 0 inside holds no capabilities (--cap-drop ALL): it owns the root's files
// but cannot mount, remount the read-only binds or load anything into the kernel. Seccomp
// filtering is not implemented: every syscall the kernel allows an unprivileged process in
// a user namespace is reachable, so the kernel is the attack surface.
package bwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/limits"
	"github.com/moatsh/moat/backends/internal/rootfs"
	"github.com/moatsh/moat/backends/internal/statedir"
	"github.com/moatsh/moat/errdefs"
)

// Name is the name the backend registers under.
const Name = "bwrap"

const handleVersion = 1

func init() { backend.Register(Name, New) }

// sharedExecs tracks running commands across all Backend values of this process.
var sharedExecs = &limits.Tracker{}

// Config is the [backends.bwrap] section of moat.toml.
type Config struct {
	// BwrapPath is the bwrap executable; "" looks "bwrap" up in PATH.
	BwrapPath string `toml:"bwrap_path" json:"bwrap_path"`
	// Rootfs is the default image: a directory or a .tar/.tar.gz rootfs. "" binds the
	// host's /usr, /etc (and /bin, /lib, ...) read-only instead.
	Rootfs string `toml:"rootfs" json:"rootfs"`
	// PackageManager overrides the detected package manager of the default image
	// ("apk", "apt-get", "dnf"); detection happens when a sandbox is created from it.
	PackageManager string `toml:"package_manager" json:"package_manager"`
	// MaxImageBytes bounds how much an image may unpack to; 0 means 8 GiB.
	MaxImageBytes int64 `toml:"max_image_bytes" json:"max_image_bytes"`
	// NoCgroups disables cgroup limits; only rlimits (via prlimit) are applied.
	NoCgroups bool `toml:"no_cgroups" json:"no_cgroups"`
	// MaxOpenFiles is RLIMIT_NOFILE for every command; 0 leaves it unchanged.
	MaxOpenFiles int64 `toml:"max_open_files" json:"max_open_files"`
}

// Backend is the bubblewrap backend.
type Backend struct {
	conf Config
	dir  statedir.Dir

	pkgMgr atomic.Value // string detected from the default image
}

// New is the backend.Factory: it decodes the config and does no I/O.
func New(cfg backend.Config) (backend.Backend, error) {
	b := &Backend{dir: statedir.Dir{Name: Name, Version: handleVersion, StateDir: cfg.StateDir,
		Execs: sharedExecs, Logger: cfg.Logger}}
	if cfg.Decode != nil {
		if err := cfg.Decode(&b.conf); err != nil {
			return nil, errdefs.InvalidArgumentf("bwrap: config: %w", err)
		}
	}
	if b.conf.Rootfs != "" && !filepath.IsAbs(b.conf.Rootfs) {
		return nil, errdefs.InvalidArgumentf("bwrap: config: rootfs must be an absolute path")
	}
	return b, nil
}

// Descriptor implements backend.Backend.
func (b *Backend) Descriptor() backend.Descriptor {
	pm := b.conf.PackageManager
	if pm == "" {
		pm, _ = b.pkgMgr.Load().(string)
	}
	return backend.Descriptor{Name: Name, Isolation: backend.IsolationNamespace,
		PackageManager: pm, DefaultImage: b.conf.Rootfs, AutoRank: backend.RankBwrap,
		// An image is a host directory or tarball that Create copies in.
		HostPaths: []string{"image"},
		Summary:   "bubblewrap: user/pid/ipc/uts/net namespaces, own rootfs (tarball or directory) or read-only host binds; state persists between execs"}
}

func (b *Backend) bwrapPath() (string, error) {
	p := b.conf.BwrapPath
	if p == "" {
		p = "bwrap"
	}
	return exec.LookPath(p)
}

// meta is the handle state and <sandbox>/.moat.json.
type meta struct {
	ID      string              `json:"id"`
	Root    string              `json:"root"`
	Image   string              `json:"image"` // "" is the host-bind layout
	Limits  backend.Limits      `json:"limits,omitzero"`
	Network backend.NetworkMode `json:"network,omitempty"`
}

// hostDirs are what the default image takes from the host, read-only.
var hostDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// hostEtc are the parts of the host's /etc the default image binds, read-only: what
// programs need to run (users, name resolution, the loader, certificates, alternatives),
// and nothing secret — never /etc as a whole, which holds shadow, ssh host keys and
// credentials the sandbox's uid 0 could otherwise read. The sandbox's own /etc stays
// writable.
var hostEtc = []string{
	"/etc/passwd", "/etc/group", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
	"/etc/ssl", "/etc/ca-certificates", "/etc/localtime", "/etc/os-release",
	"/etc/debian_version", "/etc/profile", "/etc/mime.types", "/etc/protocols", "/etc/services",
}

// hostLayout prepares root for the host-bind image: symlinks where the host has symlinks
// (merged /usr), empty mount points where it has directories. It returns the binds.
func hostLayout(root string) (map[string]string, error) {
	binds := map[string]string{}
	for _, d := range hostDirs {
		fi, err := os.Lstat(d)
		if err != nil {
			continue
		}
		dst := filepath.Join(root, d)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(d)
			if err != nil {
				return nil, err
			}
			if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
				if err := os.Symlink(target, dst); err != nil {
					return nil, err
				}
			}
		case fi.IsDir():
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return nil, err
			}
			binds[d] = d
		}
	}
	for _, p := range hostEtc {
		fi, err := os.Stat(p) // follow links: /etc/os-release is one on Debian
		if err != nil {
			continue
		}
		dst := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if fi.IsDir() {
			err = os.MkdirAll(dst, 0o755)
		} else if _, serr := os.Lstat(dst); errors.Is(serr, fs.ErrNotExist) {
			err = os.WriteFile(dst, nil, 0o644) // a mount point for the file bind
		}
		if err != nil {
			return nil, err
		}
		binds[p] = p
	}
	return binds, nil
}

// binds returns the read-only host binds of a sandbox without creating anything.
func binds(m meta) map[string]string {
	if m.Image != "" {
		return nil
	}
	out := map[string]string{}
	for _, d := range hostDirs {
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
			out[d] = d
		}
	}
	for _, p := range hostEtc {
		if _, err := os.Stat(p); err == nil {
			out[p] = p
		}
	}
	return out
}

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	if err := b.dir.CheckCreate(req); err != nil {
		return nil, err
	}
	image := req.Image
	if image == "" {
		image = b.conf.Rootfs
	}
	if image != "" && !filepath.IsAbs(image) {
		return nil, errdefs.InvalidArgumentf("bwrap: image must be an absolute path to a rootfs directory or tarball: %q", image)
	}
	if _, err := b.bwrapPath(); err != nil {
		return nil, errdefs.Unavailablef("bwrap: not installed: %v", err)
	}
	dir, err := b.dir.MakeDir(req.ID)
	if err != nil {
		return nil, err
	}
	m := meta{ID: req.ID, Root: filepath.Join(dir, "root"), Image: image, Limits: req.Limits, Network: req.Network}
	inst, err := b.create(ctx, m, req.Workdir)
	if err != nil {
		_ = statedir.RemoveTree(dir)
		return nil, err
	}
	return inst, nil
}

func (b *Backend) create(ctx context.Context, m meta, workdir string) (*Instance, error) {
	if err := os.Mkdir(m.Root, 0o755); err != nil {
		return nil, fmt.Errorf("bwrap: %w", err)
	}
	if m.Image != "" {
		if err := rootfs.Import(ctx, m.Image, m.Root, rootfs.ImportLimits{MaxBytes: b.conf.MaxImageBytes}); err != nil {
			return nil, fmt.Errorf("bwrap: %w", err)
		}
		if m.Image == b.conf.Rootfs {
			b.pkgMgr.Store(detectPackageManager(m.Root))
		}
	} else if _, err := hostLayout(m.Root); err != nil {
		return nil, fmt.Errorf("bwrap: host layout: %w", err)
	}
	inst, err := b.instance(m)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"/proc", "/dev", "/tmp", "/root", "/home", workdir} {
		if d == "" {
			continue
		}
		if _, _, bound := inst.bound(d); bound {
			continue
		}
		if err := inst.fs.MkdirAll(d, 0o755); err != nil {
			_ = inst.sb.Close()
			return nil, err
		}
	}
	if p, err := inst.fs.HostPath("/tmp"); err == nil {
		_ = os.Chmod(p, 0o1777)
	}
	if err := b.dir.WriteMeta(m); err != nil {
		_ = inst.sb.Close()
		return nil, err
	}
	return inst, nil
}

// detectPackageManager names the package manager an unpacked image has.
func detectPackageManager(root string) string {
	for _, c := range []struct{ file, name string }{
		{"sbin/apk", "apk"}, {"usr/bin/apt-get", "apt-get"}, {"usr/bin/dnf", "dnf"},
	} {
		f := &rootfs.FS{Name: Name, Root: root}
		if p, err := f.HostPath("/" + c.file); err == nil {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return c.name
			}
		}
	}
	return ""
}

func (b *Backend) instance(m meta) (*Instance, error) {
	sb, err := b.dir.Open(m, limits.Options{
		Limits: m.Limits, NoCgroups: b.conf.NoCgroups,
		Extra: limits.Extra{NoFile: b.conf.MaxOpenFiles},
	})
	if err != nil {
		return nil, err
	}
	root := &rootfs.FS{Name: Name, Root: m.Root, Binds: binds(m)}
	return &Instance{b: b, m: m, sb: sb, fs: root, Files: sb.Files(root)}, nil
}

// Attach implements backend.Backend.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	var m meta
	if err := b.dir.Attach(h, &m); err != nil {
		return nil, err
	}
	return b.instance(m)
}

// List implements backend.Lister.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	return b.dir.List(func() statedir.Meta { return new(meta) })
}

// Probe implements backend.Prober: bwrap must exist and be able to create the namespaces.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	p, err := b.bwrapPath()
	if err != nil {
		return backend.Health{State: backend.Unavailable, Reason: "bwrap: not installed: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, "--unshare-user", "--uid", "0", "--gid", "0", "--cap-drop", "ALL", "--unshare-pid",
		"--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
		"--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true")
	cmd.Env = []string{}
	// When ctx ends bwrap is killed, but a child of it may still hold the output pipe:
	// WaitDelay closes it, so a cancelled probe returns at once instead of hanging (moatd's
	// shutdown waits for the probe of its maintenance loop).
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = msg[:300]
		}
		if msg == "" {
			msg = err.Error()
		}
		return backend.Health{State: backend.Unavailable, Reason: "bwrap: user namespaces disabled: " + msg}
	}
	if b.conf.Rootfs != "" {
		if _, err := os.Stat(b.conf.Rootfs); err != nil {
			return backend.Health{State: backend.Unavailable, Reason: "bwrap: rootfs " + b.conf.Rootfs + " unavailable: " + err.Error()}
		}
	}
	rep := limits.Check(limits.Options{NoCgroups: b.conf.NoCgroups,
		Limits: backend.Limits{MemoryBytes: 1, CPUs: 1, PIDs: 1, DiskBytes: 1}})
	if len(rep.Skipped) > 0 {
		return backend.Health{State: backend.Degraded, Reason: "bwrap: limits: " + rep.String()}
	}
	return backend.Health{State: backend.Ready}
}

// SandboxID and SandboxRoot let package statedir check and list sandboxes.
func (m meta) SandboxID() string   { return m.ID }
func (m meta) SandboxRoot() string { return m.Root }

// Instance is one bwrap sandbox.
type Instance struct {
	b  *Backend
	m  meta
	sb *statedir.Sandbox
	fs *rootfs.FS
	statedir.Files
}

// Handle implements backend.Instance.
func (i *Instance) Handle() backend.Handle { return i.sb.Handle() }

// LimitsReport says which of the sandbox's limits are enforced.
func (i *Instance) LimitsReport() limits.Report { return i.sb.LimitsReport() }

func (i *Instance) bound(p string) (string, string, bool) {
	for prefix, host := range i.fs.Binds {
		if p == prefix || strings.HasPrefix(p, prefix+"/") {
			return host, strings.TrimPrefix(p, prefix), true
		}
	}
	return "", "", false
}

// Status implements backend.Instance.
func (i *Instance) Status(ctx context.Context) (backend.Status, error) { return i.sb.Status(ctx) }

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// args builds bwrap's argv for one exec; user values only ever become separate arguments.
func (i *Instance) args(bwrap, wd string, env map[string]string, argv []string) []string {
	a := []string{bwrap,
		// --cap-drop ALL: for --uid 0 bwrap otherwise keeps every capability in the new
		// user namespace, and as moat runs as root (uid 0 mapped to the host's root) that
		// is enough to remount the read-only host binds read-write and change the host.
		"--unshare-user", "--uid", "0", "--gid", "0", "--cap-drop", "ALL",
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--die-with-parent", "--new-session", "--hostname", "moat",
	}
	if i.m.Network != backend.NetworkHost {
		a = append(a, "--unshare-net")
	}
	a = append(a, "--bind", i.m.Root, "/")
	prefixes := make([]string, 0, len(i.fs.Binds))
	for p := range i.fs.Binds {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	for _, p := range prefixes {
		a = append(a, "--ro-bind", i.fs.Binds[p], p)
	}
	a = append(a, "--proc", "/proc", "--dev", "/dev", "--chdir", wd, "--clearenv")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a = append(a, "--setenv", k, env[k])
	}
	a = append(a, "--")
	return append(a, argv...)
}

// lookPath checks that argv0 exists inside the sandbox, resolving like execvp with the
// command's PATH, so a missing executable is NotFound rather than bwrap's exit code 1.
func (i *Instance) lookPath(file, pathEnv, wd string) error {
	isExec := func(p string) bool {
		hp, err := i.fs.HostPath(p)
		if err != nil {
			return false
		}
		st, err := os.Stat(hp)
		return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
	}
	if strings.Contains(file, "/") {
		p := file
		if !path.IsAbs(p) {
			p = path.Join(wd, p)
		}
		if isExec(p) {
			return nil
		}
		return errdefs.NotFoundf("bwrap: executable %s not found in the sandbox", file)
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		if !path.IsAbs(dir) {
			dir = path.Join(wd, dir)
		}
		if isExec(path.Join(dir, file)) {
			return nil
		}
	}
	return errdefs.NotFoundf("bwrap: executable %s not found in the sandbox PATH", file)
}

// prepared is a command ready to start: the sandbox is there and tracked, the workdir
// exists and the program is found inside the sandbox.
type prepared struct {
	ctx  context.Context // ends when the command must die (ctx, or Destroy)
	done func()
	bw   string // the bwrap binary
	wd   string
	env  map[string]string
}

// prepare does what Exec and ExecPTY share. Call p.done when the command has ended.
func (i *Instance) prepare(ctx context.Context, req *backend.ExecRequest) (*prepared, error) {
	ctx, done, err := i.sb.Start(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*prepared, error) { done(); return nil, err }
	bw, err := i.b.bwrapPath()
	if err != nil {
		return fail(errdefs.Unavailablef("bwrap: not installed: %v", err))
	}
	wd := path.Clean("/" + req.Workdir)
	if _, _, bound := i.bound(wd); !bound {
		if err := i.fs.MkdirAll(wd, 0o755); err != nil {
			return fail(err)
		}
	}
	env := map[string]string{"PATH": defaultPath, "HOME": "/root"}
	for k, v := range req.Env {
		env[k] = v
	}
	if err := i.lookPath(req.Argv[0], env["PATH"], wd); err != nil {
		return fail(err)
	}
	return &prepared{ctx: ctx, done: done, bw: bw, wd: wd, env: env}, nil
}

// Exec implements backend.Instance.
func (i *Instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	p, err := i.prepare(ctx, req)
	if err != nil {
		return -1, err
	}
	defer p.done()
	ctx, bw, wd, env := p.ctx, p.bw, p.wd, p.env
	stderr := &sniffer{w: req.Stderr}
	argv := i.args(bw, wd, env, req.Argv)
	code, err := limits.Run(ctx, limits.Cmd{
		Argv: argv, Path: bw, Env: []string{}, Dir: "/",
		Stdin: req.Stdin, Stdout: req.Stdout, Stderr: stderr, Group: i.sb.Group(),
		Detail: req.Detail,
	})
	if err != nil {
		return code, fmt.Errorf("bwrap: %w", err)
	}
	// Backstop for what lookPath cannot see (a missing ELF interpreter): bwrap itself
	// reports the failed execvp on stderr and exits 1.
	if code == 1 && stderr.execFailed() {
		return -1, errdefs.NotFoundf("bwrap: executable %s could not be started in the sandbox", req.Argv[0])
	}
	return code, nil
}

// sniffer passes stderr through and keeps its first bytes to recognise bwrap's own
// "bwrap: execvp X: No such file or directory".
type sniffer struct {
	w    io.Writer
	mu   sync.Mutex
	head []byte
}

func (s *sniffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	if n := 512 - len(s.head); n > 0 {
		s.head = append(s.head, p[:min(n, len(p))]...)
	}
	s.mu.Unlock()
	return s.w.Write(p)
}

func (s *sniffer) execFailed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := string(s.head)
	return strings.HasPrefix(h, "bwrap: execvp ") && strings.Contains(h, "No such file or directory")
}

// Destroy implements backend.Instance: kills the sandbox's processes and removes its
// state directory. It is idempotent.
func (i *Instance) Destroy(ctx context.Context) error { return i.sb.Destroy(ctx) }

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Lister         = (*Backend)(nil)
	_ backend.Prober         = (*Backend)(nil)
	_ backend.Instance       = (*Instance)(nil)
	_ backend.FileTransferer = (*Instance)(nil)
)
