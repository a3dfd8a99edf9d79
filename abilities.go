package moat

import (
	"context"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// Snapshot is a saved sandbox filesystem; put its Image in a Spec to start from it.
type Snapshot = backend.Snapshot

// Pause freezes the sandbox's processes (Unsupported when its backend cannot). Resume
// thaws them. Exec on a paused sandbox is FailedPrecondition.
func (s *Sandbox) Pause(ctx context.Context) error {
	return s.transition(ctx, store.StatusActive, store.StatusPaused, func(inst backend.Instance) error {
		p, ok := inst.(backend.Pauser)
		if !ok {
			return errdefs.Unsupportedf("moat: backend %s cannot pause sandboxes", s.backend)
		}
		return p.Pause(ctx)
	})
}

// Resume thaws a paused sandbox.
func (s *Sandbox) Resume(ctx context.Context) error {
	return s.transition(ctx, store.StatusPaused, store.StatusActive, func(inst backend.Instance) error {
		p, ok := inst.(backend.Pauser)
		if !ok {
			return errdefs.Unsupportedf("moat: backend %s cannot pause sandboxes", s.backend)
		}
		return p.Resume(ctx)
	})
}

// transition moves the record from one status to another around op, which runs on the
// attached instance. Being in the target status already is success.
func (s *Sandbox) transition(ctx context.Context, from, to store.Status, op func(backend.Instance) error) error {
	rec, err := s.m.store.Get(ctx, s.id)
	if err != nil {
		return err
	}
	s.setRecord(rec)
	if rec.Status == to {
		return nil
	}
	if rec.Status != from {
		return errdefs.FailedPreconditionf("moat: sandbox %s is %s, not %s", rec.ID, rec.Status, from)
	}
	inst, err := s.m.instance(ctx, rec)
	if err != nil {
		return s.markGone(ctx, err)
	}
	if err := op(inst); err != nil {
		return s.checkGone(ctx, inst, err)
	}
	// Expects the record as read before op: when it changed meanwhile (a concurrent
	// destroy, another transition), that write stands and the caller hears of it.
	if err := s.m.update(ctx, rec, func(r *store.Record) { r.Status = to }); err != nil {
		return err
	}
	s.setRecord(rec)
	return nil
}

// Snapshot saves the sandbox's filesystem under name (Unsupported when its backend cannot).
// The name is required: letters, digits, '_', '.', '-' (at most 63); an empty or other name
// is InvalidArgument.
func (s *Sandbox) Snapshot(ctx context.Context, name string) (Snapshot, error) {
	if name == "" {
		return Snapshot{}, errdefs.InvalidArgumentf("moat: a snapshot needs a name")
	}
	if !nameRE.MatchString(name) {
		return Snapshot{}, errdefs.InvalidArgumentf("moat: invalid snapshot name %q", name)
	}
	inst, err := s.usable(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	sn, ok := inst.(backend.Snapshotter)
	if !ok {
		return Snapshot{}, errdefs.Unsupportedf("moat: backend %s cannot snapshot sandboxes", s.backend)
	}
	snap, err := sn.Snapshot(ctx, name)
	return snap, s.checkGone(ctx, inst, err)
}

// ExposePort returns the URL (or host:port) that reaches port inside the sandbox, where
// the backend can expose ports (hosted providers' public URLs); Unsupported otherwise.
func (s *Sandbox) ExposePort(ctx context.Context, port int) (string, error) {
	if port < 1 || port > 65535 {
		return "", errdefs.InvalidArgumentf("moat: invalid port %d", port)
	}
	inst, err := s.usable(ctx)
	if err != nil {
		return "", err
	}
	pe, ok := inst.(backend.PortExposer)
	if !ok {
		return "", errdefs.Unsupportedf("moat: backend %s cannot expose ports", s.backend)
	}
	u, err := pe.ExposePort(ctx, port)
	return u, s.checkGone(ctx, inst, err)
}
