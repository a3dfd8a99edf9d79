// Package fake answers "how do I test moat without a real sandbox runtime?": an in-memory,
// scriptable backend registered as "fake" that passes the conformance suite and backs the
// manager, router, HTTP API and CLI tests.
//
// Each sandbox has an in-memory filesystem (with /tmp, /dev/null, /dev/zero, /dev/urandom)
// and runs commands with builtin tools — sh (a strict POSIX subset, see shell.go), echo,
// printf, cat, pwd, env, sleep, head, wc, ls, mkdir, ln -s, stat, test/[, chmod, rm, touch,
// find, kill, basename, dirname, true, false — plus commands registered with WithCommand.
// Nothing runs on the host and no path can reach it: symlinks resolve inside the sandbox's
// own tree.
//
// Its terminal (backend.PTYExecer, see pty.go) is a double for tests of the terminal's
// plumbing, not a shell: it prints "argv <argv> size RxC", echoes each input line as
// "> line", reports each resize as "size RxC" and exits with N on "exit N".
//
// Tests steer it with fault hooks (WithFault / SetFault make any operation fail or block,
// before or after it takes effect), Vanish (a sandbox disappears behind moat's back),
// SetHealth (what Probe reports) and Calls (how often each operation ran).
//
// Handles are only meaningful to the Backend that made them, as a real backend's are only
// to its runtime. The registered factory shares one Backend per Config.StateDir within a
// process, so a manager reopened on the same state directory re-attaches to its sandboxes.
package fake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Name is the name the fake registers under and, by default, its Descriptor name.
const Name = "fake"

// Operation names for faults and call counters.
const (
	OpCreate    = "create"
	OpAttach    = "attach"
	OpList      = "list"
	OpProbe     = "probe" // counted only: Probe has no error to fail with (use SetHealth)
	OpExec      = "exec"
	OpExecPTY   = "execpty"
	OpStatus    = "status"
	OpDestroy   = "destroy"
	OpWriteFile = "writefile"
	OpReadFile  = "readfile"
	OpListDir   = "listdir"
	OpRemove    = "remove"
	OpMkdir     = "mkdir"
	OpStop      = "stop"
	OpStart     = "start"
	OpPause     = "pause"
	OpResume    = "resume"
	OpSnapshot  = "snapshot"
)

// handleVersion is the version of the fake's Handle.State layout.
const handleVersion = 1

// SnapshotImagePrefix starts the CreateRequest.Image of a sandbox made from a snapshot.
const SnapshotImagePrefix = "fake-snapshot:"

// Fault is a hook run by an operation. Returning an error makes the operation return it
// (wrap an errdefs kind to choose how moat sees it); blocking blocks the operation, honoring
// ctx or not, as the test wishes.
type Fault func(ctx context.Context) error

// Option configures a Backend.
type Option func(*Backend)

// WithName sets the Descriptor name (and Handle.Backend); default "fake".
func WithName(name string) Option { return func(b *Backend) { b.desc.Name = name } }

// WithDescriptor replaces the whole Descriptor (its Name too).
func WithDescriptor(d backend.Descriptor) Option { return func(b *Backend) { b.desc = d } }

// WithCommand registers a command by name (also reachable as /bin/NAME, /usr/bin/NAME ...).
// It overrides a builtin of the same name, in exec argv and inside sh scripts alike.
func WithCommand(name string, fn CommandFunc) Option {
	return func(b *Backend) { b.cmds[name] = fn }
}

// WithFault runs fn at the start of op (one of the Op constants); see SetFault.
func WithFault(op string, fn Fault) Option { return func(b *Backend) { b.before[op] = fn } }

// WithFaultAfter runs fn after op took effect; an error from it is returned although the
// effect stays ("the sandbox was created but the call failed").
func WithFaultAfter(op string, fn Fault) Option { return func(b *Backend) { b.after[op] = fn } }

// WithHealth sets what Probe reports (default Ready).
func WithHealth(h backend.Health) Option { return func(b *Backend) { b.health = h } }

// Backend is the fake backend. It is safe for concurrent use.
type Backend struct {
	desc backend.Descriptor
	cmds map[string]CommandFunc

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by fake id
	snapshots map[string]*memfs   // by image name
	before    map[string]Fault
	after     map[string]Fault
	health    backend.Health
	calls     map[string]int
}

// New returns an empty fake backend.
func New(opts ...Option) *Backend {
	b := &Backend{
		desc: backend.Descriptor{
			Name:           Name,
			Isolation:      backend.IsolationContainer,
			PackageManager: "",
			DefaultImage:   "fake:latest",
		},
		cmds:      map[string]CommandFunc{},
		sandboxes: map[string]*sandbox{},
		snapshots: map[string]*memfs{},
		before:    map[string]Fault{},
		after:     map[string]Fault{},
		health:    backend.Health{State: backend.Ready},
		calls:     map[string]int{},
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

// sandbox is one fake sandbox.
type sandbox struct {
	id      string
	req     backend.CreateRequest
	rt      *runtime
	created time.Time

	mu     sync.Mutex
	status backend.Status
}

// handleState is what a fake Handle carries.
type handleState struct {
	ID string `json:"id"`
}

// SetFault sets (fn != nil) or clears the hook run at the start of op.
func (b *Backend) SetFault(op string, fn Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if fn == nil {
		delete(b.before, op)
	} else {
		b.before[op] = fn
	}
}

// SetFaultAfter sets or clears the hook run after op took effect.
func (b *Backend) SetFaultAfter(op string, fn Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if fn == nil {
		delete(b.after, op)
	} else {
		b.after[op] = fn
	}
}

// SetHealth sets what Probe reports.
func (b *Backend) SetHealth(h backend.Health) {
	b.mu.Lock()
	b.health = h
	b.mu.Unlock()
}

// Calls reports how many times op was called (including calls that failed by a fault).
func (b *Backend) Calls(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op]
}

// Vanish makes the sandbox created for moat id (CreateRequest.ID) or with fake id disappear
// without moat's doing: its processes die, Status reports gone, everything else NotFound.
// It reports whether there was such a sandbox.
func (b *Backend) Vanish(id string) bool {
	b.mu.Lock()
	var found []*sandbox
	for k, sb := range b.sandboxes {
		if k == id || sb.req.ID == id {
			found = append(found, sb)
			delete(b.sandboxes, k)
		}
	}
	b.mu.Unlock()
	for _, sb := range found {
		sb.rt.killAll(9)
	}
	return len(found) > 0
}

// IDs returns the moat ids (CreateRequest.ID) of the live sandboxes, sorted.
func (b *Backend) IDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.sandboxes))
	for _, sb := range b.sandboxes {
		ids = append(ids, sb.req.ID)
	}
	sort.Strings(ids)
	return ids
}

// enter counts op and runs its before-fault.
func (b *Backend) enter(ctx context.Context, op string) error {
	b.mu.Lock()
	b.calls[op]++
	f := b.before[op]
	b.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	return nil
}

// leave runs op's after-fault.
func (b *Backend) leave(ctx context.Context, op string) error {
	b.mu.Lock()
	f := b.after[op]
	b.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	return nil
}

// Descriptor returns the static facts.
func (b *Backend) Descriptor() backend.Descriptor { return b.desc }

// Create makes a sandbox: the base filesystem (or a snapshot's) with Workdir created.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	if err := b.enter(ctx, OpCreate); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fake: create: %w", err)
	}
	if len(req.Options) > 0 && !bytes.Equal(bytes.TrimSpace(req.Options), []byte("{}")) && string(req.Options) != "null" {
		return nil, errdefs.InvalidArgumentf("fake: create: no options are supported")
	}
	var fsys *memfs
	if strings.HasPrefix(req.Image, SnapshotImagePrefix) {
		b.mu.Lock()
		snap := b.snapshots[req.Image]
		b.mu.Unlock()
		if snap == nil {
			return nil, errdefs.NotFoundf("fake: create: image %s not found", req.Image)
		}
		fsys = snap.clone()
	} else {
		fsys = newBaseFS()
	}
	if req.Workdir != "" {
		if err := fsys.mkdirAll("/", req.Workdir, 0o755); err != nil {
			return nil, errdefs.InvalidArgumentf("fake: create: workdir %s: %s", req.Workdir, errText(err))
		}
	}
	r := *req
	r.Env = cloneMap(req.Env)
	r.Labels = cloneMap(req.Labels)
	sb := &sandbox{id: "fk-" + randHex(8), req: r, rt: newRuntime(fsys, b.cmds), created: time.Now(), status: backend.StatusRunning}
	b.mu.Lock()
	b.sandboxes[sb.id] = sb
	b.mu.Unlock()
	inst := &Instance{b: b, id: sb.id}
	if err := b.leave(ctx, OpCreate); err != nil {
		return nil, err
	}
	return inst, nil
}

// Attach returns the instance for a handle, NotFound when the sandbox is gone.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	if err := b.enter(ctx, OpAttach); err != nil {
		return nil, err
	}
	if h.Backend != b.desc.Name {
		return nil, errdefs.InvalidArgumentf("fake: attach: handle is for backend %q", h.Backend)
	}
	if h.Version != handleVersion {
		return nil, errdefs.InvalidArgumentf("fake: attach: unknown handle version %d", h.Version)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil || st.ID == "" {
		return nil, errdefs.InvalidArgumentf("fake: attach: bad handle state")
	}
	inst := &Instance{b: b, id: st.ID}
	if _, err := inst.get(); err != nil {
		return nil, err
	}
	if err := b.leave(ctx, OpAttach); err != nil {
		return nil, err
	}
	return inst, nil
}

// List returns every live sandbox.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	if err := b.enter(ctx, OpList); err != nil {
		return nil, err
	}
	b.mu.Lock()
	out := make([]backend.Listed, 0, len(b.sandboxes))
	for _, sb := range b.sandboxes {
		out = append(out, backend.Listed{ID: sb.req.ID, Handle: (&Instance{b: b, id: sb.id}).Handle()})
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if err := b.leave(ctx, OpList); err != nil {
		return nil, err
	}
	return out, nil
}

// Probe reports the health set by WithHealth / SetHealth.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[OpProbe]++
	return b.health
}

// Instance is one fake sandbox. It holds only the id: every call looks the sandbox up, so a
// Vanish or a Destroy through another Instance is seen at once.
type Instance struct {
	b  *Backend
	id string
}

// Handle returns the handle for Attach.
func (i *Instance) Handle() backend.Handle {
	st, _ := json.Marshal(handleState{ID: i.id})
	return backend.Handle{Backend: i.b.desc.Name, Version: handleVersion, State: st}
}

func (i *Instance) get() (*sandbox, error) {
	i.b.mu.Lock()
	defer i.b.mu.Unlock()
	sb := i.b.sandboxes[i.id]
	if sb == nil {
		return nil, errdefs.NotFoundf("fake: sandbox %s not found", i.id)
	}
	return sb, nil
}

// running returns the sandbox when it can run commands.
func (i *Instance) running() (*sandbox, error) {
	sb, err := i.get()
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.status != backend.StatusRunning {
		return nil, errdefs.FailedPreconditionf("fake: sandbox %s is %s", i.id, sb.status)
	}
	return sb, nil
}

// Exec runs req with the builtin tools and registered commands.
func (i *Instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	if err := i.b.enter(ctx, OpExec); err != nil {
		return 0, err
	}
	sb, err := i.running()
	if err != nil {
		return 0, err
	}
	wd := req.Workdir
	if wd == "" {
		wd = sb.req.Workdir
	}
	if wd == "" {
		wd = "/"
	}
	if n, err := sb.rt.fs.stat("/", wd, true); err != nil || !n.isDir() {
		return 0, errdefs.InvalidArgumentf("fake: exec: workdir %s is not a directory", wd)
	}
	stdin := req.Stdin
	if stdin == nil {
		stdin = bytes.NewReader(nil)
	}
	code, err := sb.rt.run(ctx, &call{
		argv: req.Argv, env: cloneMap(req.Env), cwd: wd,
		stdin: stdin, stdout: req.Stdout, stderr: req.Stderr, detail: req.Detail,
	})
	switch {
	case err == errNotFoundCmd:
		return 0, errdefs.NotFoundf("fake: exec %q: executable file not found", req.Argv[0])
	case err != nil && ctx.Err() != nil:
		return 0, fmt.Errorf("fake: exec: %w", ctx.Err())
	case err != nil:
		return 0, fmt.Errorf("fake: exec: %w", err)
	}
	if err := i.b.leave(ctx, OpExec); err != nil {
		return 0, err
	}
	return code, nil
}

// Status reports running, paused, stopped or gone.
func (i *Instance) Status(ctx context.Context) (backend.Status, error) {
	if err := i.b.enter(ctx, OpStatus); err != nil {
		return "", err
	}
	sb, err := i.get()
	if err != nil {
		return backend.StatusGone, nil
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.status, nil
}

// Destroy kills the sandbox's processes and forgets it; destroying twice succeeds.
func (i *Instance) Destroy(ctx context.Context) error {
	if err := i.b.enter(ctx, OpDestroy); err != nil {
		return err
	}
	i.b.mu.Lock()
	sb := i.b.sandboxes[i.id]
	delete(i.b.sandboxes, i.id)
	i.b.mu.Unlock()
	if sb != nil {
		sb.rt.killAll(9)
	}
	return i.b.leave(ctx, OpDestroy)
}

// setStatus moves from one of from to to.
func (i *Instance) setStatus(ctx context.Context, op string, to backend.Status, from ...backend.Status) error {
	if err := i.b.enter(ctx, op); err != nil {
		return err
	}
	sb, err := i.get()
	if err != nil {
		return err
	}
	sb.mu.Lock()
	cur := sb.status
	ok := cur == to
	for _, f := range from {
		ok = ok || cur == f
	}
	if ok {
		sb.status = to
	}
	sb.mu.Unlock()
	if !ok {
		return errdefs.FailedPreconditionf("fake: %s: sandbox %s is %s", op, i.id, cur)
	}
	if to == backend.StatusStopped && cur != to {
		sb.rt.killAll(15)
	}
	return i.b.leave(ctx, op)
}

// Stop kills the sandbox's processes and keeps its filesystem.
func (i *Instance) Stop(ctx context.Context) error {
	return i.setStatus(ctx, OpStop, backend.StatusStopped, backend.StatusRunning, backend.StatusPaused)
}

// Start makes a stopped sandbox run again.
func (i *Instance) Start(ctx context.Context) error {
	return i.setStatus(ctx, OpStart, backend.StatusRunning, backend.StatusStopped)
}

// Pause freezes the sandbox: new execs fail until Resume. Running execs go on (the fake has
// no way to freeze a Go function).
func (i *Instance) Pause(ctx context.Context) error {
	return i.setStatus(ctx, OpPause, backend.StatusPaused, backend.StatusRunning)
}

// Resume thaws a paused sandbox.
func (i *Instance) Resume(ctx context.Context) error {
	return i.setStatus(ctx, OpResume, backend.StatusRunning, backend.StatusPaused)
}

// Snapshot saves the filesystem as image SnapshotImagePrefix+name.
func (i *Instance) Snapshot(ctx context.Context, name string) (backend.Snapshot, error) {
	if err := i.b.enter(ctx, OpSnapshot); err != nil {
		return backend.Snapshot{}, err
	}
	sb, err := i.get()
	if err != nil {
		return backend.Snapshot{}, err
	}
	if name == "" {
		name = randHex(6)
	}
	img := SnapshotImagePrefix + name
	i.b.mu.Lock()
	if i.b.snapshots[img] != nil {
		i.b.mu.Unlock()
		return backend.Snapshot{}, errdefs.AlreadyExistsf("fake: snapshot %s already exists", name)
	}
	i.b.snapshots[img] = sb.rt.fs.clone()
	i.b.mu.Unlock()
	snap := backend.Snapshot{ID: name, Image: img, CreatedAt: time.Now()}
	if err := i.b.leave(ctx, OpSnapshot); err != nil {
		return backend.Snapshot{}, err
	}
	return snap, nil
}

// WriteFile writes natively into the in-memory filesystem.
func (i *Instance) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	if err := i.b.enter(ctx, OpWriteFile); err != nil {
		return err
	}
	sb, err := i.running()
	if err != nil {
		return err
	}
	data, err := io.ReadAll(ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("fake: write %s: %w", p, err)
	}
	perm := mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if err := sb.rt.fs.writeFile(p, data, perm); err != nil {
		return fsError("write", p, err)
	}
	return i.b.leave(ctx, OpWriteFile)
}

// ReadFile copies a file out: NotFound when missing, InvalidArgument for a directory.
func (i *Instance) ReadFile(ctx context.Context, p string, w io.Writer) error {
	if err := i.b.enter(ctx, OpReadFile); err != nil {
		return err
	}
	sb, err := i.running()
	if err != nil {
		return err
	}
	n, err := sb.rt.fs.stat("/", p, true)
	if err != nil {
		return fsError("read", p, err)
	}
	if n.dev != devNone {
		return errdefs.InvalidArgumentf("fake: read %s: is a device", p)
	}
	r, err := sb.rt.fs.open("/", p)
	if err != nil {
		return fsError("read", p, err)
	}
	if _, err := io.Copy(w, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("fake: read %s: %w", p, err)
	}
	return i.b.leave(ctx, OpReadFile)
}

// ListDir lists a directory sorted by name.
func (i *Instance) ListDir(ctx context.Context, p string) ([]backend.FileInfo, error) {
	if err := i.b.enter(ctx, OpListDir); err != nil {
		return nil, err
	}
	sb, err := i.running()
	if err != nil {
		return nil, err
	}
	infos, err := sb.rt.fs.readDir("/", p)
	if err != nil {
		return nil, fsError("list", p, err)
	}
	if err := i.b.leave(ctx, OpListDir); err != nil {
		return nil, err
	}
	return infos, nil
}

// Remove deletes natively; the link itself for a symlink.
func (i *Instance) Remove(ctx context.Context, p string, recursive bool) error {
	if err := i.b.enter(ctx, OpRemove); err != nil {
		return err
	}
	sb, err := i.running()
	if err != nil {
		return err
	}
	if err := sb.rt.fs.remove("/", p, recursive); err != nil {
		if err == errIsDir {
			return errdefs.FailedPreconditionf("fake: remove %s: is a directory", p)
		}
		return fsError("remove", p, err)
	}
	return i.b.leave(ctx, OpRemove)
}

// Mkdir creates a directory and its missing parents natively.
func (i *Instance) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	if err := i.b.enter(ctx, OpMkdir); err != nil {
		return err
	}
	sb, err := i.running()
	if err != nil {
		return err
	}
	if n, err := sb.rt.fs.stat("/", p, true); err == nil && !n.isDir() {
		return errdefs.AlreadyExistsf("fake: mkdir %s: file exists", p)
	}
	if err := sb.rt.fs.mkdirAll("/", p, mode.Perm()); err != nil {
		return fsError("mkdir", p, err)
	}
	return i.b.leave(ctx, OpMkdir)
}

// fsError prefixes an in-memory filesystem error, keeping its kind.
func fsError(op, p string, err error) error {
	return errdefs.Wrap(err, fmt.Errorf("fake: %s %s: %s", op, p, strings.ToLower(errText(err))))
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

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// config is the [backends.fake] section of moat.toml.
type config struct {
	// Health is what Probe reports: "ready" (default), "degraded" or "unavailable".
	Health string `toml:"health"`
	// Reason goes with a health other than ready.
	Reason string `toml:"reason"`
}

var (
	sharedMu sync.Mutex
	shared   = map[string]*Backend{}
)

func init() {
	backend.Register(Name, func(cfg backend.Config) (backend.Backend, error) {
		var c config
		if cfg.Decode != nil {
			if err := cfg.Decode(&c); err != nil {
				return nil, errdefs.InvalidArgumentf("fake: config: %v", err)
			}
		}
		h := backend.Health{State: backend.Ready}
		switch c.Health {
		case "", string(backend.Ready):
		case string(backend.Degraded), string(backend.Unavailable):
			h = backend.Health{State: backend.HealthState(c.Health), Reason: "fake: " + c.Reason}
		default:
			return nil, errdefs.InvalidArgumentf("fake: config: health %q is not ready, degraded or unavailable", c.Health)
		}
		sharedMu.Lock()
		defer sharedMu.Unlock()
		b := shared[cfg.StateDir]
		if b == nil {
			b = New()
			shared[cfg.StateDir] = b
		}
		b.SetHealth(h)
		return b, nil
	})
}

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Lister         = (*Backend)(nil)
	_ backend.Prober         = (*Backend)(nil)
	_ backend.Instance       = (*Instance)(nil)
	_ backend.FileTransferer = (*Instance)(nil)
	_ backend.FileRemover    = (*Instance)(nil)
	_ backend.DirMaker       = (*Instance)(nil)
	_ backend.Stopper        = (*Instance)(nil)
	_ backend.Pauser         = (*Instance)(nil)
	_ backend.Snapshotter    = (*Instance)(nil)
)
