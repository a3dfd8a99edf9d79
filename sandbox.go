package moat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// Status is a sandbox's recorded lifecycle state.
type Status = moattype.Status

// Sandbox statuses.
const (
	StatusCreating  = moattype.StatusCreating
	StatusActive    = moattype.StatusActive
	StatusPaused    = moattype.StatusPaused
	StatusStopped   = moattype.StatusStopped
	StatusError     = moattype.StatusError
	StatusDestroyed = moattype.StatusDestroyed
)

// FileInfo describes a directory entry in a sandbox.
type FileInfo = moattype.FileInfo

// Info is a sandbox's record as users see it.
type Info = moattype.Info

func infoOf(r *store.Record) (Info, error) {
	info := Info{
		ID: r.ID, Name: r.Name, Backend: r.Backend, SessionID: r.SessionID, Status: r.Status,
		LastError: r.LastError, Labels: r.Labels, Handle: r.Handle,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, LastUsed: r.LastUsed,
	}
	if !r.ExpiresAt.IsZero() {
		t := r.ExpiresAt
		info.ExpiresAt = &t
	}
	if len(r.Spec) > 0 {
		if err := json.Unmarshal(r.Spec, &info.Spec); err != nil {
			return info, fmt.Errorf("moat: sandbox %s: stored spec: %w", r.ID, err)
		}
	}
	return info, nil
}

// Sandbox is a handle to one sandbox. It is cheap; get one from Manager.Create or Get. Its
// methods are safe for concurrent use.
type Sandbox struct {
	m       *Manager
	id      string
	backend string
	spec    Spec

	mu  sync.Mutex
	rec *store.Record // as of Get/Create or this handle's last state change; Info re-reads
}

func newSandbox(m *Manager, rec *store.Record, spec Spec) *Sandbox {
	s := &Sandbox{m: m, id: rec.ID, backend: rec.Backend, spec: spec}
	s.setRecord(rec)
	return s
}

// record returns the handle's view of the record. Callers must not modify it.
func (s *Sandbox) record() *store.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec
}

// setRecord publishes a copy of rec, so the caller may keep changing its own.
func (s *Sandbox) setRecord(rec *store.Record) {
	c := *rec
	s.mu.Lock()
	s.rec = &c
	s.mu.Unlock()
}

// ID returns moat's id of the sandbox.
func (s *Sandbox) ID() string { return s.id }

// Backend returns the name of the backend the sandbox runs on.
func (s *Sandbox) Backend() string { return s.backend }

// Info re-reads the sandbox's record.
func (s *Sandbox) Info(ctx context.Context) (Info, error) {
	rec, err := s.m.store.Get(ctx, s.id)
	if err != nil {
		return Info{}, err
	}
	return infoOf(rec)
}

// usable returns the attached instance, or an error saying why the sandbox cannot run
// anything.
func (s *Sandbox) usable(ctx context.Context) (backend.Instance, error) {
	rec := s.record()
	switch rec.Status {
	case store.StatusActive:
	case store.StatusStopped, store.StatusPaused:
		return nil, errdefs.FailedPreconditionf("moat: sandbox %s is %s", s.id, rec.Status)
	case store.StatusCreating:
		return nil, errdefs.FailedPreconditionf("moat: sandbox %s is still being created", s.id)
	case store.StatusError:
		return nil, errdefs.FailedPreconditionf("moat: sandbox %s is in error: %s", s.id, rec.LastError)
	default:
		return nil, errdefs.NotFoundf("moat: sandbox %s was destroyed", s.id)
	}
	inst, err := s.m.instance(ctx, rec)
	if err != nil {
		return nil, s.markGone(ctx, err)
	}
	return inst, nil
}

// ErrCommandNotFound is wrapped (with errdefs NotFound) by Exec errors whose program does
// not exist in the sandbox (moattype.ErrCommandNotFound).
var ErrCommandNotFound = moattype.ErrCommandNotFound

// checkGone turns a NotFound from an operation on inst into the right error: when the
// sandbox itself is gone the record says so; otherwise the NotFound is about the operation's
// object (a file, a program) and is returned as is. The status check runs under ctx: a
// backend that hangs must not hold the caller past its deadline (if ctx has ended, the
// NotFound is returned as is).
func (s *Sandbox) checkGone(ctx context.Context, inst backend.Instance, err error) error {
	if !errGone(err) {
		return err
	}
	st, serr := inst.Status(ctx)
	if (serr == nil && st == backend.StatusGone) || errGone(serr) {
		return s.markGone(ctx, err)
	}
	return err
}

// markGone records on the sandbox that its backend lost it. It marks the record only
// while the record still names the sandbox this handle found gone: another replica may
// have recreated it meanwhile (a new backend handle), and that one is not lost. Either way
// the handle takes the stored record, so its next call attaches what the record names. A
// sandbox whose spec asks to be recreated stays active: the reconciler recreates it.
func (s *Sandbox) markGone(ctx context.Context, err error) error {
	if !errGone(err) {
		return err
	}
	s.m.forgetInstance(s.id)
	ctx = context.WithoutCancel(ctx)
	gone := s.record().Handle
	rec, gerr := s.m.store.Get(ctx, s.id)
	if gerr == nil {
		if rec.Status == store.StatusActive && sameHandle(rec.Handle, gone) && !s.spec.Recreate {
			msg := "backend lost the sandbox: " + err.Error()
			// Expects the record as just read: a concurrent destroy or recreate stands.
			if uerr := s.m.update(ctx, rec, func(r *store.Record) {
				r.Status, r.LastError = store.StatusError, msg
			}); uerr != nil && !isStale(uerr) {
				s.m.log.Warn("record lost sandbox", "id", s.id, "err", uerr)
			}
		}
		s.setRecord(rec)
	}
	return errdefs.NotFoundf("moat: sandbox %s is gone from backend %s: %w", s.id, s.backend, err)
}

// envAndWorkdir merges a request's environment over the spec's and resolves its workdir
// against the spec's; what ("exec", "terminal") names the call in errors.
func (s *Sandbox) envAndWorkdir(what string, env map[string]string, workdir string) (map[string]string, string, error) {
	merged, err := mergeEnv(s.spec.Env, env)
	if err != nil {
		return nil, "", err
	}
	wd := s.spec.Workdir
	if workdir != "" {
		if wd, err = resolvePath(s.spec.Workdir, workdir); err != nil {
			return nil, "", errdefs.InvalidArgumentf("moat: %s: invalid workdir: %w", what, err)
		}
	}
	return merged, wd, nil
}

// Exec runs a command and waits for it. A non-zero exit is not an error: read ExitCode.
// Errors are for commands that could not run (NotFound for a missing program) or were
// cut short (ctx or Timeout: the command is killed).
func (s *Sandbox) Exec(ctx context.Context, req ExecRequest) (ExitResult, error) {
	argv, err := argvOf(&req)
	if err != nil {
		return ExitResult{}, err
	}
	env, wd, err := s.envAndWorkdir("exec", req.Env, req.Workdir)
	if err != nil {
		return ExitResult{}, err
	}
	if err := checkArgSize(argv, env); err != nil {
		return ExitResult{}, err
	}
	if req.MaxOutputBytes < 0 {
		return ExitResult{}, errdefs.InvalidArgumentf("moat: exec: negative output cap")
	}
	inst, err := s.usable(ctx)
	if err != nil {
		return ExitResult{}, err
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	var outBuf, errBuf bytes.Buffer
	stdout := s.outWriter(req.Stdout, &outBuf, req.MaxOutputBytes)
	stderr := s.outWriter(req.Stderr, &errBuf, req.MaxOutputBytes)
	start := time.Now()
	var detail backend.ExecDetail
	code, err := inst.Exec(ctx, &backend.ExecRequest{
		Argv: argv, Env: env, Workdir: wd, Stdin: req.Stdin, Stdout: stdout, Stderr: stderr,
		Detail: &detail,
	})
	res := ExitResult{ExitCode: code, Duration: time.Since(start), OOMKilled: detail.OOMKilled && err == nil}
	stdout.Close()
	stderr.Close()
	res.StdoutTruncated, res.StderrTruncated = stdout.truncated, stderr.truncated
	if req.Stdout == nil {
		res.Stdout = outBuf.Bytes()
	}
	if req.Stderr == nil {
		res.Stderr = errBuf.Bytes()
	}
	s.m.touch(s.id)
	if err != nil {
		if ctx.Err() != nil && errdefs.KindOf(err) == errdefs.KindUnknown {
			err = errdefs.Wrap(ctx.Err(), err)
		}
		if errGone(err) {
			if gerr := s.checkGone(ctx, inst, err); gerr != err {
				return res, gerr
			}
			return res, errdefs.Newf(errdefs.ErrNotFound, "moat: exec %s: %w", argv[0], errors.Join(ErrCommandNotFound, err))
		}
		return res, err
	}
	if w := firstErr(stdout.err, stderr.err); w != nil {
		return res, fmt.Errorf("moat: exec: writing output: %w", w)
	}
	return res, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func (s *Sandbox) outWriter(w io.Writer, buf *bytes.Buffer, max int64) *capWriter {
	if w == nil {
		if max == 0 {
			max = DefaultMaxOutput
		}
		return newCapWriter(buf, max)
	}
	if max == 0 {
		max = -1
	}
	return newCapWriter(w, max)
}

// touch records that the sandbox was used, at most once a minute per sandbox so that a
// busy exec loop does not turn into a database write loop.
func (m *Manager) touch(id string) {
	now := time.Now()
	m.mu.Lock()
	last := m.lastTouch[id]
	if now.Sub(last) < time.Minute {
		m.mu.Unlock()
		return
	}
	m.lastTouch[id] = now
	m.mu.Unlock()
	m.background(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		// A touch merges with any concurrent write: it changes only last-used (never
		// backwards), on the record as it is now, by compare-and-swap, so it cannot undo
		// a status change; on a conflict it reads again.
		for range 5 {
			rec, err := m.store.Get(ctx, id)
			if err != nil || rec.Status == store.StatusDestroyed || !rec.LastUsed.Before(now) {
				return
			}
			rec.LastUsed = now.UTC()
			if err := m.store.Update(ctx, rec); !errdefs.Is(err, errdefs.KindConflict) {
				return
			}
		}
	})
}

// files returns the native file transfer of inst, or the exec fallback.
func files(inst backend.Instance) backend.FileTransferer {
	if ft, ok := inst.(backend.FileTransferer); ok {
		return ft
	}
	return execfs.New(inst)
}

func (s *Sandbox) filePath(p string) (string, error) {
	c, err := resolvePath(s.spec.Workdir, p)
	if err != nil {
		return "", errdefs.InvalidArgumentf("moat: %w", err)
	}
	return c, nil
}

// WriteFile creates or replaces the file at p (absolute, or relative to the workdir) with
// r's bytes, creating parent directories. mode 0 means 0644.
func (s *Sandbox) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	p, err := s.filePath(p)
	if err != nil {
		return err
	}
	if p == "/" {
		return errdefs.InvalidArgumentf("moat: cannot write to /")
	}
	if mode, err = permMode("file", mode, 0o644); err != nil {
		return err
	}
	return s.fileOp(ctx, func(inst backend.Instance) error { return files(inst).WriteFile(ctx, p, r, mode) })
}

// permMode is mode, or def when mode is 0; InvalidArgument when it has more than
// permission bits. what names it in the message ("file", "directory").
func permMode(what string, mode, def fs.FileMode) (fs.FileMode, error) {
	if mode == 0 {
		return def, nil
	}
	if mode&^fs.ModePerm != 0 {
		return 0, errdefs.InvalidArgumentf("moat: %s mode %v: only permission bits are allowed", what, mode)
	}
	return mode, nil
}

// fileOp runs op on the sandbox's instance: the sandbox must be usable, the operation
// counts as activity, and an error saying the sandbox is gone is recorded (checkGone).
func (s *Sandbox) fileOp(ctx context.Context, op func(inst backend.Instance) error) error {
	inst, err := s.usable(ctx)
	if err != nil {
		return err
	}
	s.m.touch(s.id)
	return s.checkGone(ctx, inst, op(inst))
}

// ReadFile copies the file at p to w.
func (s *Sandbox) ReadFile(ctx context.Context, p string, w io.Writer) error {
	p, err := s.filePath(p)
	if err != nil {
		return err
	}
	return s.fileOp(ctx, func(inst backend.Instance) error { return files(inst).ReadFile(ctx, p, w) })
}

// ListDir lists the directory at p, sorted by name.
func (s *Sandbox) ListDir(ctx context.Context, p string) ([]FileInfo, error) {
	p, err := s.filePath(p)
	if err != nil {
		return nil, err
	}
	inst, err := s.usable(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := files(inst).ListDir(ctx, p)
	return infos, s.checkGone(ctx, inst, err)
}

// Stop stops the sandbox, keeping its filesystem, when the backend can (Unsupported
// otherwise). Start brings it back.
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.setRunning(ctx, false)
}

// Start restarts a stopped sandbox.
func (s *Sandbox) Start(ctx context.Context) error {
	return s.setRunning(ctx, true)
}

func (s *Sandbox) setRunning(ctx context.Context, run bool) error {
	from, to := store.StatusActive, store.StatusStopped
	if run {
		from, to = store.StatusStopped, store.StatusActive
	}
	return s.transition(ctx, from, to, func(inst backend.Instance) error {
		st, ok := inst.(backend.Stopper)
		if !ok {
			return errdefs.Unsupportedf("moat: backend %s cannot stop and restart sandboxes", s.backend)
		}
		if run {
			return st.Start(ctx)
		}
		return st.Stop(ctx)
	})
}

// Destroy removes the sandbox from its backend and marks its record destroyed, also when
// the backend had already lost it. Destroying a destroyed sandbox succeeds; so does racing
// another destroy (in another replica, too). When the backend fails, the record is left
// as it was, so Destroy can be retried.
func (s *Sandbox) Destroy(ctx context.Context) error {
	return s.m.destroy(ctx, s.id)
}

// Destroy destroys the sandbox with this id or name.
func (m *Manager) Destroy(ctx context.Context, idOrName string) error {
	rec, err := m.lookup(ctx, idOrName)
	if errdefs.Is(err, errdefs.KindNotFound) {
		if r, gerr := m.store.Get(ctx, idOrName); gerr == nil && r.Status == store.StatusDestroyed {
			return nil
		}
	}
	if err != nil {
		return err
	}
	return m.destroy(ctx, rec.ID)
}

func (m *Manager) destroy(ctx context.Context, id string) error {
	_, err := m.destroyIf(ctx, id, nil)
	return err
}

// destroyingMsg is the last error of a record claimed by a destroy in progress.
const destroyingMsg = "being destroyed"

// destroyIf destroys the sandbox with this id when the record is not destroyed and ok
// (when given) holds for it, and reports whether this call marked it destroyed.
//
// It first claims the record by compare-and-swap: status error, "being destroyed". From
// then on no replica recreates the sandbox, nothing runs in it, and a create still in
// flight finds its record taken and removes what it made. Then it removes what the record
// names from the backend and marks the record destroyed. When the removal fails the record
// is given back as it was, so the caller can retry. A destroy that finds the record
// destroyed by someone else succeeds; a destroy interrupted by a crash is finished by
// Reconcile.
func (m *Manager) destroyIf(ctx context.Context, id string, ok func(*store.Record) bool) (bool, error) {
	for range 5 {
		rec, err := m.store.Get(ctx, id)
		if err != nil {
			return false, err
		}
		if rec.Status == store.StatusDestroyed || (ok != nil && !ok(rec)) {
			return false, nil
		}
		before := *rec
		err = m.update(ctx, rec, func(r *store.Record) { r.Status, r.LastError = store.StatusError, destroyingMsg })
		if isStale(err) {
			continue // read again and decide again
		}
		if err != nil {
			return false, err
		}
		if err := m.destroyInstance(ctx, rec); err != nil {
			msg := before.LastError
			if before.Status == store.StatusError && before.LastError == destroyingMsg {
				msg = "destroy failed: " + err.Error()
			}
			if uerr := m.update(context.WithoutCancel(ctx), rec, func(r *store.Record) {
				r.Status, r.LastError = before.Status, msg
			}); uerr != nil && !isStale(uerr) {
				m.log.Warn("give back the record of a failed destroy", "id", id, "err", uerr)
			}
			return false, err
		}
		m.forgetInstance(id)
		err = m.update(context.WithoutCancel(ctx), rec, func(r *store.Record) {
			r.Status, r.LastError = store.StatusDestroyed, before.LastError
		})
		if err == nil {
			return true, nil
		}
		if !isStale(err) {
			return false, err
		}
		// Another destroy took the record over: look again (it has finished, or we do).
	}
	return false, errdefs.Conflictf("moat: destroy %s: the record kept changing; try again", id)
}

// destroyInstance removes rec's sandbox from its backend; a sandbox already gone is fine.
func (m *Manager) destroyInstance(ctx context.Context, rec *store.Record) error {
	if rec.Handle.Version == pendingVersion {
		// The backend never returned a handle: nothing to attach to. If the create went
		// through after all, the reconciler finds the sandbox by its id and removes it.
		return nil
	}
	inst, err := m.instance(ctx, rec)
	if errGone(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := inst.Destroy(ctx); err != nil && !errGone(err) {
		return err
	}
	return nil
}
