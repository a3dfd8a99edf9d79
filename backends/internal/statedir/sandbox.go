package statedir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/limits"
	"github.com/moatsh/moat/errdefs"
)

// Dir is one local backend's sandboxes: <StateDir>/sandboxes/<id>/, their handles, and the
// commands running in them. Set the exported fields before first use and do not change
// them afterwards; the methods are then safe for concurrent use.
type Dir struct {
	Name    string // the backend's name: prefixes errors, names handles
	Version int    // the handle version
	// StateDir is the backend's state directory; "" makes a temporary one
	// ("moat-<Name>-*") on first use.
	StateDir string
	// Execs tracks the running commands, shared by every Dir of the backend in this
	// process so that any instance's Destroy kills them.
	Execs *limits.Tracker
	// Logger receives a warning for each sandbox whose limits are not all enforced.
	Logger *slog.Logger

	once     sync.Once
	stateDir string
	err      error
}

// Sandboxes returns <StateDir>/sandboxes (which may not exist yet).
func (d *Dir) Sandboxes() (string, error) {
	d.once.Do(func() {
		d.stateDir = d.StateDir
		if d.stateDir == "" {
			d.stateDir, d.err = os.MkdirTemp("", "moat-"+d.Name+"-")
		}
	})
	if d.err != nil {
		return "", fmt.Errorf("%s: state dir: %w", d.Name, d.err)
	}
	return filepath.Join(d.stateDir, "sandboxes"), nil
}

// CheckCreate rejects what no local backend accepts in a CreateRequest: an id that cannot
// name a directory, and create options.
func (d *Dir) CheckCreate(req *backend.CreateRequest) error {
	if !limits.ValidID(req.ID) {
		return errdefs.InvalidArgumentf("%s: invalid sandbox id %q", d.Name, req.ID)
	}
	if o := strings.TrimSpace(string(req.Options)); o != "" && o != "null" && o != "{}" {
		return errdefs.InvalidArgumentf("%s: the %s backend has no create options", d.Name, d.Name)
	}
	return nil
}

// MakeDir creates the directory of sandbox id (0700, AlreadyExists when it is there) and
// lets commands start in it again after an earlier Destroy. It returns the directory,
// which the caller removes with RemoveTree when the rest of its Create fails.
func (d *Dir) MakeDir(id string) (string, error) {
	sbs, err := d.Sandboxes()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(sbs, 0o700); err != nil {
		return "", fmt.Errorf("%s: %w", d.Name, err)
	}
	dir := filepath.Join(sbs, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", errdefs.AlreadyExistsf("%s: sandbox %s already exists", d.Name, id)
		}
		return "", fmt.Errorf("%s: %w", d.Name, err)
	}
	d.Execs.Revive(id)
	return dir, nil
}

// WriteMeta writes m to its sandbox directory's MetaFile, for List.
func (d *Dir) WriteMeta(m Meta) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Name, err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(m.SandboxRoot()), MetaFile), raw, 0o600); err != nil {
		return fmt.Errorf("%s: %w", d.Name, err)
	}
	return nil
}

// Attach decodes h into m, checking as Decode does.
func (d *Dir) Attach(h backend.Handle, m Meta) error { return Decode(d.Name, d.Version, h, m) }

// List implements backend.Lister's List for the backend: every sandbox directory.
func (d *Dir) List(newMeta func() Meta) ([]backend.Listed, error) {
	sbs, err := d.Sandboxes()
	if err != nil {
		return nil, err
	}
	return List(d.Name, sbs, d.Version, newMeta)
}

// Open returns the Sandbox of m with a limits group made from opts (keyed by m's id and
// root); it creates nothing on disk but the group's cgroups.
func (d *Dir) Open(m Meta, opts limits.Options) (*Sandbox, error) {
	g, err := limits.New(limits.ScopedID(m.SandboxID(), m.SandboxRoot()), opts)
	if err != nil {
		return nil, err
	}
	if len(g.Report().Skipped) > 0 && d.Logger != nil {
		d.Logger.Warn(d.Name+": some limits are not enforced", "sandbox", m.SandboxID(), "limits", g.Report().String())
	}
	return &Sandbox{d: d, m: m, group: g}, nil
}

// Sandbox is what an instance of a local backend has besides its way of running
// commands: its directory, handle, limits group and tracked commands. Safe for concurrent
// use.
type Sandbox struct {
	d     *Dir
	m     Meta
	group *limits.Group
}

// Handle is the sandbox's backend.Handle: its meta.
func (s *Sandbox) Handle() backend.Handle { return Handle(s.d.Name, s.d.Version, s.m) }

// Group is the sandbox's limits group, for the command runners.
func (s *Sandbox) Group() *limits.Group { return s.group }

// LimitsReport says which of the sandbox's limits are enforced.
func (s *Sandbox) LimitsReport() limits.Report { return s.group.Report() }

// Gone is the NotFound error of the sandbox when its root is gone, else nil.
func (s *Sandbox) Gone() error {
	if st, err := os.Stat(s.m.SandboxRoot()); err == nil && st.IsDir() {
		return nil
	}
	return errdefs.NotFoundf("%s: sandbox %s is gone", s.d.Name, s.m.SandboxID())
}

// Status implements backend.Instance's Status: running while the root exists.
func (s *Sandbox) Status(ctx context.Context) (backend.Status, error) {
	if s.Gone() != nil {
		return backend.StatusGone, nil
	}
	return backend.StatusRunning, nil
}

// Start tracks a command about to run in the sandbox: the returned ctx ends when ctx does
// or Destroy kills the sandbox's commands, and done must be called once the command has
// ended. A sandbox that is gone, or being destroyed, is NotFound.
func (s *Sandbox) Start(ctx context.Context) (context.Context, func(), error) {
	ctx, done, err := s.d.Execs.Start(ctx, s.m.SandboxID())
	if err != nil {
		return nil, nil, errdefs.NotFoundf("%s: sandbox %s is gone", s.d.Name, s.m.SandboxID())
	}
	if err := s.Gone(); err != nil {
		done()
		return nil, nil, err
	}
	return ctx, done, nil
}

// Close releases the limits group without removing anything, for a Create that failed
// after Open.
func (s *Sandbox) Close() error { return s.group.Close() }

// Destroy implements backend.Instance's Destroy: it kills the sandbox's commands, closes
// its limits group and removes its directory. It is idempotent.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.d.Execs.Kill(s.m.SandboxID())
	var errs []error
	if err := s.group.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := RemoveTree(filepath.Dir(s.m.SandboxRoot())); err != nil {
		errs = append(errs, fmt.Errorf("%s: remove %s: %w", s.d.Name, s.m.SandboxID(), err))
	}
	return errors.Join(errs...)
}

// RemoveTree removes dir even where commands left read-only directories. It never
// follows symlinks (WalkDir and RemoveAll do not).
func RemoveTree(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = syscall.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
