package moat

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// ReconcileReport says what Reconcile found and did.
type ReconcileReport struct {
	Attached    []string `json:"attached"`    // active records whose sandbox is there
	Recreated   []string `json:"recreated"`   // records whose sandbox was gone and was created again from the spec
	Lost        []string `json:"lost"`        // records whose sandbox was gone (now status error)
	Interrupted []string `json:"interrupted"` // creates interrupted by a crash (now status error), and destroys (now finished)
	Expired     []string `json:"expired"`     // sandboxes destroyed because their TTL ran out
	Orphans     []string `json:"orphans"`     // backend sandboxes no record owns, removed ("backend/id")
	Errors      []string `json:"errors"`      // what could not be checked, and why
}

// Empty reports whether nothing needed doing.
func (r ReconcileReport) Empty() bool {
	return len(r.Recreated)+len(r.Lost)+len(r.Interrupted)+len(r.Expired)+len(r.Orphans)+len(r.Errors) == 0
}

func (r ReconcileReport) String() string {
	var parts []string
	add := func(what string, ids []string) {
		if len(ids) > 0 {
			parts = append(parts, fmt.Sprintf("%s: %s", what, strings.Join(ids, ", ")))
		}
	}
	add("attached", r.Attached)
	add("recreated", r.Recreated)
	add("lost", r.Lost)
	add("interrupted", r.Interrupted)
	add("expired", r.Expired)
	add("orphans removed", r.Orphans)
	add("errors", r.Errors)
	return strings.Join(parts, "; ")
}

// staleCreate is how long a create may stay in flight before the reconciler gives up on a
// creating record whose owner it cannot check (another host).
const staleCreate = 15 * time.Minute

// staleDestroy is how long a destroy may hold its claim on a record before the reconciler
// takes it for interrupted and finishes it.
const staleDestroy = 5 * time.Minute

// Reconcile brings records and backends into agreement, as after a restart:
//   - active records are re-attached; when the backend lost the sandbox it is created again
//     from the stored spec if the spec asks for that (Recreate), else the record turns to
//     error with the reason;
//   - creating records whose creating process died are marked error (interrupted);
//   - sandboxes past their TTL are destroyed;
//   - sandboxes a backend lists (Lister) under this installation's id prefix that no live
//     record owns are removed, so a crash between "backend created" and "record updated"
//     leaks nothing. Sandboxes of other installations sharing the backend are left alone.
//
// Only backends that are not unavailable are swept. It is safe to run while other
// processes use the same store, and on several replicas at once: in-flight creates of live
// processes are left alone, and a recreate or an expiry is claimed on the record by
// compare-and-swap, so exactly one replica does it (see Manager.update).
func (m *Manager) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	prefix, err := m.idPrefix(ctx)
	if err != nil {
		return rep, err
	}
	recs, err := m.store.List(ctx, store.Filter{IncludeDestroyed: true})
	if err != nil {
		return rep, err
	}
	owned := map[string]*store.Record{}
	now := time.Now()
	for _, rec := range recs {
		owned[rec.ID] = rec
		switch rec.Status {
		case store.StatusCreating:
			if createInFlight(rec, now) {
				continue
			}
			// Expects the record as listed: if the create finished (or another replica
			// marked it) meanwhile, that write stands and there is nothing to do.
			err := m.update(ctx, rec, func(r *store.Record) {
				r.Status, r.LastError = store.StatusError, "create interrupted: the process creating it stopped"
			})
			if isStale(err) {
				continue
			}
			if err != nil {
				rep.Errors = append(rep.Errors, rec.ID+": "+err.Error())
				continue
			}
			rep.Interrupted = append(rep.Interrupted, rec.ID)
		case store.StatusError:
			// A destroy claims its record (see destroyIf); one that has held the claim
			// this long died on the way: finish it (removal is idempotent).
			if rec.LastError != destroyingMsg || now.Sub(rec.UpdatedAt) < staleDestroy {
				continue
			}
			done, err := m.destroyIf(ctx, rec.ID, func(cur *store.Record) bool {
				return cur.Status == store.StatusError && cur.LastError == destroyingMsg && now.Sub(cur.UpdatedAt) >= staleDestroy
			})
			switch {
			case err != nil && !errdefs.Is(err, errdefs.KindNotFound):
				rep.Errors = append(rep.Errors, rec.ID+": finish destroy: "+err.Error())
			case done:
				rep.Interrupted = append(rep.Interrupted, rec.ID)
			}
		case store.StatusActive, store.StatusStopped, store.StatusPaused:
			if expired(rec, now) {
				// Replicas expiring at once each remove what the record names (removal
				// is idempotent); the one whose compare-and-swap marks it reports it.
				done, err := m.destroyIf(ctx, rec.ID, func(cur *store.Record) bool { return expired(cur, now) })
				switch {
				case err != nil && !errdefs.Is(err, errdefs.KindNotFound):
					rep.Errors = append(rep.Errors, rec.ID+": expire: "+err.Error())
				case done:
					rep.Expired = append(rep.Expired, rec.ID)
				}
				continue
			}
			m.reattach(ctx, rec, &rep)
		}
	}
	set := m.backends()
	for _, name := range slices.Sorted(maps.Keys(set.backends)) {
		b := set.backends[name]
		l, ok := b.(backend.Lister)
		if !ok || m.probe(ctx, name, false).State == backend.Unavailable {
			continue
		}
		listed, err := l.List(ctx)
		if err != nil {
			rep.Errors = append(rep.Errors, name+": list: "+err.Error())
			continue
		}
		for _, sb := range listed {
			if !strings.HasPrefix(sb.ID, prefix) {
				continue // another installation's (or we cannot tell): never ours to remove
			}
			// A live record owns the sandbox listed under its id. Handles are not compared:
			// a backend may render a listed handle differently from the one it returned at
			// create time, and removing a live sandbox is the worse mistake.
			if rec, ok := owned[sb.ID]; ok && ownsLive(rec, name) {
				continue
			}
			// The records were read before the backend was listed: a create that started
			// since then wrote its record before calling the backend, so read it again
			// rather than remove a sandbox that was just made.
			if rec, err := m.store.Get(ctx, sb.ID); err == nil && ownsLive(rec, name) {
				continue
			} else if err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s/%s: check owner: %v", name, sb.ID, err))
				continue
			}
			inst, err := b.Attach(ctx, sb.Handle)
			if err == nil {
				err = inst.Destroy(ctx)
			}
			if err != nil && !errGone(err) {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s/%s: remove orphan: %v", name, sb.ID, err))
				continue
			}
			rep.Orphans = append(rep.Orphans, name+"/"+sb.ID)
		}
	}
	return rep, nil
}

// ownsLive reports whether rec claims a sandbox on backend name that must be kept.
func ownsLive(rec *store.Record, name string) bool {
	switch rec.Status {
	case store.StatusCreating, store.StatusActive, store.StatusStopped, store.StatusPaused:
		return rec.Backend == name
	}
	return false
}

// reattach checks an active record's sandbox, recreating it from the spec when it is gone
// and the spec asks for that.
func (m *Manager) reattach(ctx context.Context, rec *store.Record, rep *ReconcileReport) {
	b, ok := m.backend(rec.Backend)
	if !ok {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%s: backend %q is not available in this moat", rec.ID, rec.Backend))
		return
	}
	inst, err := b.Attach(ctx, rec.Handle)
	if err == nil {
		var st backend.Status
		st, err = inst.Status(ctx)
		if err == nil && st == backend.StatusGone {
			err = errdefs.NotFoundf("%s: sandbox is gone", rec.Backend)
		}
	}
	if err == nil {
		m.cacheInstance(rec.ID, inst, b)
		rep.Attached = append(rep.Attached, rec.ID)
		return
	}
	if !errGone(err) {
		rep.Errors = append(rep.Errors, rec.ID+": attach: "+err.Error())
		return
	}
	var spec Spec
	if jerr := json.Unmarshal(rec.Spec, &spec); jerr == nil && spec.Recreate {
		m.recreate(ctx, b, rec, spec, err, rep)
		return
	}
	m.markLost(ctx, rec, err, rep)
}

// markLost turns the record of a sandbox its backend lost to error, expecting the record
// as it was when the loss was seen: if it changed meanwhile (destroyed, recreated by
// another replica), that write stands.
func (m *Manager) markLost(ctx context.Context, rec *store.Record, lost error, rep *ReconcileReport) {
	err := m.update(ctx, rec, func(r *store.Record) {
		r.Status, r.LastError = store.StatusError, "backend lost the sandbox: "+lost.Error()
	})
	if isStale(err) {
		return
	}
	if err != nil {
		rep.Errors = append(rep.Errors, rec.ID+": "+err.Error())
		return
	}
	rep.Lost = append(rep.Lost, rec.ID)
}

// recreate creates a lost sandbox again from its stored spec. Several replicas may see the
// loss at once, so the one that recreates is the one that claims the record first: a
// compare-and-swap from the record as it was seen (active, naming the lost sandbox) to
// creating with a pending handle naming this process, exactly like a new Create. The
// others' claims fail and they leave it alone. A claimant that dies mid-recreate leaves a
// creating record of a dead process: the next Reconcile marks it interrupted and removes
// whatever the claimant managed to create as an orphan.
func (m *Manager) recreate(ctx context.Context, b backend.Backend, rec *store.Record, spec Spec, lost error, rep *ReconcileReport) {
	reason := fmt.Sprintf("recreating from the stored spec since %s: %v", time.Now().UTC().Format(time.RFC3339), lost)
	err := m.update(ctx, rec, func(r *store.Record) {
		r.Status, r.Handle, r.LastError = store.StatusCreating, pendingHandle(r.Backend), reason
	})
	if isStale(err) {
		return // another replica claimed it, or the record changed: not ours to recreate
	}
	if err != nil {
		rep.Errors = append(rep.Errors, rec.ID+": claim recreate: "+err.Error())
		return
	}
	newInst, cerr := b.Create(ctx, m.createRequest(rec.ID, spec))
	// From here the record is ours and a sandbox may exist: write even if ctx ended.
	wctx := context.WithoutCancel(ctx)
	if cerr != nil {
		msg := fmt.Sprintf("backend lost the sandbox: %v; recreate failed: %v", lost, cerr)
		err := m.update(wctx, rec, func(r *store.Record) { r.Status, r.LastError = store.StatusError, msg })
		switch {
		case err == nil:
			rep.Lost = append(rep.Lost, rec.ID)
		case !isStale(err):
			rep.Errors = append(rep.Errors, rec.ID+": "+err.Error())
		}
		return
	}
	h := newInst.Handle()
	done := fmt.Sprintf("recreated from the stored spec at %s: %v", time.Now().UTC().Format(time.RFC3339), lost)
	if err := m.update(wctx, rec, func(r *store.Record) {
		r.Status, r.Handle, r.LastError = store.StatusActive, h, done
	}); err != nil {
		// Destroyed while we recreated (or the store failed): the new sandbox must not
		// outlive its record.
		_ = newInst.Destroy(wctx)
		if !isStale(err) {
			m.recordCreateFailure(wctx, rec, nil, fmt.Errorf("recording the recreated sandbox: %w", err))
			rep.Errors = append(rep.Errors, rec.ID+": "+err.Error())
		}
		return
	}
	m.cacheInstance(rec.ID, newInst, b)
	rep.Recreated = append(rep.Recreated, rec.ID)
}

// expired reports whether rec's TTL has run out.
func expired(rec *store.Record, now time.Time) bool {
	return !rec.ExpiresAt.IsZero() && now.After(rec.ExpiresAt)
}

// createInFlight reports whether a creating record's create may still be running: its
// process is alive on this host, or it is on another host and not yet stale.
func createInFlight(rec *store.Record, now time.Time) bool {
	var ps pendingState
	if rec.Handle.Version != pendingVersion || json.Unmarshal(rec.Handle.State, &ps) != nil {
		return now.Sub(rec.UpdatedAt) < staleCreate
	}
	host, _ := os.Hostname()
	if ps.Host != host {
		return now.Sub(rec.UpdatedAt) < staleCreate
	}
	if ps.PID == os.Getpid() && ps.Boot == processStart() {
		return true // this very process is creating it
	}
	if err := syscall.Kill(ps.PID, 0); err != nil && err != syscall.EPERM {
		return false
	}
	return startTimeOf(ps.PID) == ps.Boot
}

// processStart identifies this process's incarnation (its start time in clock ticks since
// boot), so that a reused pid is not taken for the process that wrote a record.
func processStart() string { return startTimeOf(os.Getpid()) }

func startTimeOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// Field 22 (starttime); the command name (field 2) may contain spaces, so count from
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// Maintain runs the manager's upkeep until ctx ends: at once and then every interval, it
// builds again the backends whose saved settings another process changed (ReloadSettings)
// and reconciles records with the backends (Reconcile), so TTLs expire and lost sandboxes
// are noticed while a server runs. moatd runs it; a CLI command does not.
func (m *Manager) Maintain(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.ReloadSettings(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("reload settings failed", "err", err)
		}
		rep, err := m.Reconcile(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.Warn("reconcile failed", "err", err)
		case err == nil && !rep.Empty():
			m.log.Info("reconciled", "report", rep.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
