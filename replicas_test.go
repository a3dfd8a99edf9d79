package moat_test

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
	_ "github.com/moatsh/moat/store/postgres"
	_ "github.com/moatsh/moat/store/sqlite"
	"github.com/moatsh/moat/store/storetest"
)

// providerBackend is the one "provider" several replicas share: the fake, counting the
// creates of every moat id and catching a create for an id that already has a live
// sandbox there (a double create: one of the two leaks).
type providerBackend struct {
	*fake.Backend
	mu       sync.Mutex
	creates  map[string]int
	vanished map[string]int
	doubles  []string
}

func (p *providerBackend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := p.Backend.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	live := 0
	for _, id := range p.Backend.IDs() {
		if id == req.ID {
			live++
		}
	}
	p.mu.Lock()
	p.creates[req.ID]++
	if live > 1 {
		p.doubles = append(p.doubles, req.ID)
	}
	p.mu.Unlock()
	return inst, nil
}

// vanish makes one random live sandbox disappear behind moat's back.
func (p *providerBackend) vanish(r *mrand.Rand) {
	ids := p.Backend.IDs()
	if len(ids) == 0 {
		return
	}
	id := ids[r.IntN(len(ids))]
	p.mu.Lock() // counted before, so a recreate seen by Create is always covered
	p.vanished[id]++
	p.mu.Unlock()
	if !p.Backend.Vanish(id) {
		p.mu.Lock()
		p.vanished[id]--
		p.mu.Unlock()
	}
}

// TestReplicasRace stands three Managers (three moatd replicas) on one store and one
// provider, and races creates, destroys (two replicas destroying one sandbox at once),
// execs, sandboxes vanishing and every replica's reconcile loop. Afterwards: no id was
// ever created twice while live, no more creates than the losses justify, every sandbox
// the test kept has an active record and a live sandbox, every one it destroyed is
// destroyed, and the provider holds nothing no live record owns.
func TestReplicasRace(t *testing.T) {
	t.Run("memstore", func(t *testing.T) {
		st := memstore.New()
		t.Cleanup(func() { st.Close() })
		replicaRace(t, func(t *testing.T) store.Store { return st })
	})
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "moat.db")
		replicaRace(t, func(t *testing.T) store.Store { return openStore(t, "sqlite:"+path) })
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := storetest.PostgresSchema(t)
		replicaRace(t, func(t *testing.T) store.Store { return openStore(t, dsn) })
	})
}

func openStore(t *testing.T, url string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func replicaRace(t *testing.T, open func(t *testing.T) store.Store) {
	const (
		replicas = 3
		perRep   = 10 // creates per replica
		vanishes = 60
	)
	ctx := context.Background()
	pb := &providerBackend{
		Backend:  fake.New(fake.WithDescriptor(backend.Descriptor{Name: "fake", Isolation: backend.IsolationContainer})),
		creates:  map[string]int{},
		vanished: map[string]int{},
	}
	ms := make([]*moat.Manager, replicas)
	for i := range ms {
		m, err := moat.Open(ctx, moat.Config{Storage: open(t), Sandbox: moat.SandboxConfig{Backend: "fake"}},
			moat.WithoutRegistered(), moat.WithBackend("fake", pb))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms[i] = m
	}

	// Every replica reconciles in a loop while the work runs.
	stop := make(chan struct{})
	var loops sync.WaitGroup
	var reconciles, reconcileErrs atomic.Int64
	var totals struct {
		sync.Mutex
		recreated, lost, interrupted, orphans int
		errs                                  []string
	}
	for _, m := range ms {
		loops.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rep, err := m.Reconcile(ctx)
				reconciles.Add(1)
				if err != nil {
					reconcileErrs.Add(1)
					t.Errorf("reconcile: %v", err)
				}
				totals.Lock()
				totals.recreated += len(rep.Recreated)
				totals.lost += len(rep.Lost)
				totals.interrupted += len(rep.Interrupted)
				totals.orphans += len(rep.Orphans)
				totals.errs = append(totals.errs, rep.Errors...)
				totals.Unlock()
			}
		})
	}
	// Sandboxes vanish behind moat's back, while the work runs and after.
	var vanisher sync.WaitGroup
	vanisher.Go(func() {
		r := mrand.New(mrand.NewPCG(1, 2))
		for range vanishes {
			time.Sleep(time.Duration(1+r.IntN(4)) * time.Millisecond)
			pb.vanish(r)
		}
	})

	// The work: every replica creates; a third of the sandboxes are destroyed by two
	// replicas at once; the rest run commands through a replica that did not create them.
	var (
		work      sync.WaitGroup
		mu        sync.Mutex
		kept      []string
		destroyed []string
		ids       []string
	)
	for i := range replicas * perRep {
		m := ms[i%replicas]
		work.Go(func() {
			sb, err := m.Create(ctx, moat.Spec{Recreate: true})
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			mu.Lock()
			ids = append(ids, sb.ID())
			mu.Unlock()
			if i%3 == 0 {
				var both sync.WaitGroup
				for _, d := range []*moat.Manager{ms[(i+1)%replicas], ms[(i+2)%replicas]} {
					both.Go(func() {
						if err := d.Destroy(ctx, sb.ID()); err != nil {
							t.Errorf("destroy %s: %v", sb.ID(), err)
						}
					})
				}
				both.Wait()
				mu.Lock()
				destroyed = append(destroyed, sb.ID())
				mu.Unlock()
				return
			}
			mu.Lock()
			kept = append(kept, sb.ID())
			mu.Unlock()
			other, err := ms[(i+1)%replicas].Get(ctx, sb.ID())
			if err != nil {
				t.Errorf("get %s from another replica: %v", sb.ID(), err)
				return
			}
			for range 3 {
				// A vanished or recreating sandbox may refuse; what matters is the records.
				other.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
			}
		})
	}
	work.Wait()
	vanisher.Wait()
	close(stop)
	loops.Wait()

	// Settle: each replica reconciles until nothing is left to do (lost sandboxes
	// recreated); then nothing may change any more.
	for round := 0; ; round++ {
		changed := false
		for _, m := range ms {
			rep, err := m.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Recreated)+len(rep.Orphans)+len(rep.Lost)+len(rep.Interrupted) > 0 {
				changed = true
			}
			totals.errs = append(totals.errs, rep.Errors...)
			totals.recreated += len(rep.Recreated)
			totals.orphans += len(rep.Orphans)
		}
		if !changed {
			break
		}
		if round > 5 {
			t.Fatal("reconcile keeps changing things")
		}
	}

	prefixes := map[string]bool{}
	for _, id := range ids {
		prefixes[id[:len("sb-")+6]] = true
	}
	if len(prefixes) != 1 {
		t.Errorf("replicas used %d installation prefixes, want 1: %v", len(prefixes), prefixes)
	}

	// 0 double creates: never two live sandboxes for one id, and no more creates of an
	// id than its first plus one per time it vanished.
	pb.mu.Lock()
	doubles := len(pb.doubles)
	excess, creates, vanished := 0, 0, 0
	for id, n := range pb.creates {
		creates += n
		vanished += pb.vanished[id]
		if n > 1+pb.vanished[id] {
			excess += n - 1 - pb.vanished[id]
			t.Errorf("%s created %d times, vanished %d times", id, n, pb.vanished[id])
		}
	}
	pb.mu.Unlock()
	if doubles > 0 {
		t.Errorf("%d creates of an id that had a live sandbox: %v", doubles, pb.doubles)
	}

	// 0 lost records: what the test kept is active, what it destroyed is destroyed.
	st := ms[0].Store()
	lostRecs := 0
	for _, id := range kept {
		rec, err := st.Get(ctx, id)
		if err != nil || rec.Status != store.StatusActive {
			lostRecs++
			if err == nil {
				err = fmt.Errorf("status %s: %s", rec.Status, rec.LastError)
			}
			t.Errorf("kept sandbox %s: %v", id, err)
		}
	}
	for _, id := range destroyed {
		if rec, err := st.Get(ctx, id); err != nil || rec.Status != store.StatusDestroyed {
			lostRecs++
			t.Errorf("destroyed sandbox %s: %v %v", id, rec, err)
		}
	}

	// 0 leaked sandboxes: the provider holds exactly the kept sandboxes, once each, and
	// each record names the live one.
	live := pb.Backend.IDs()
	slices.Sort(kept)
	leaked := 0
	for _, id := range live {
		if _, found := slices.BinarySearch(kept, id); !found {
			leaked++
		}
	}
	if dupes := len(live) - len(slices.Compact(slices.Clone(live))); dupes > 0 {
		leaked += dupes
	}
	if leaked > 0 || len(live) != len(kept) {
		t.Errorf("provider holds %v; want exactly the kept %v", live, kept)
	}
	for _, id := range kept {
		sb, err := ms[2].Get(ctx, id)
		if err == nil {
			_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}})
		}
		if err != nil {
			t.Errorf("kept sandbox %s does not run: %v", id, err)
		}
	}
	for _, e := range totals.errs {
		if !strings.Contains(e, "context canceled") {
			t.Errorf("reconcile error: %s", e)
		}
	}
	t.Logf("%d replicas: %d creates (%d ids, %d vanishes), %d reconciles (%d recreated, %d lost, %d interrupted, %d orphans removed); "+
		"double creates %d, excess creates %d, lost records %d, leaked sandboxes %d",
		replicas, creates, len(pb.creates), vanished, reconciles.Load(), totals.recreated, totals.lost,
		totals.interrupted, totals.orphans, doubles, excess, lostRecs, leaked)
}

// Two replicas see one sandbox lost at once: the first claims the record, and while its
// recreate is under way the second finds the claim and leaves the sandbox alone.
func TestRecreateIsClaimedByOneReplica(t *testing.T) {
	ctx := context.Background()
	a, st, fb := fakeManager(t)
	b := newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{Backend: "fake"}}, map[string]backend.Backend{"fake": fb})
	sb, err := a.Create(ctx, moat.Spec{Recreate: true})
	if err != nil {
		t.Fatal(err)
	}
	fb.Vanish(sb.ID())
	var other moat.ReconcileReport
	fb.SetFault(fake.OpCreate, func(context.Context) error {
		fb.SetFault(fake.OpCreate, nil)
		var err error
		if other, err = b.Reconcile(ctx); err != nil {
			t.Errorf("second replica: %v", err)
		}
		return nil
	})
	rep, err := a.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recreated) != 1 || len(other.Recreated)+len(other.Lost)+len(other.Errors) != 0 {
		t.Fatalf("first replica %+v, second %+v; want one recreate and the second doing nothing", rep, other)
	}
	if got := fb.Calls(fake.OpCreate); got != 2 || len(fb.IDs()) != 1 {
		t.Fatalf("%d creates, live %v; want the first and one recreate", got, fb.IDs())
	}
}

// A status change decided on a stale record does not overwrite a concurrent destroy: the
// pause reaches the caller as NotFound, and the record stays destroyed.
func TestTransitionDoesNotOverwriteConcurrentDestroy(t *testing.T) {
	ctx := context.Background()
	a, st, fb := fakeManager(t)
	b := newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{Backend: "fake"}}, map[string]backend.Backend{"fake": fb})
	sb, err := a.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	fb.SetFaultAfter(fake.OpPause, func(context.Context) error {
		fb.SetFaultAfter(fake.OpPause, nil)
		if err := b.Destroy(ctx, sb.ID()); err != nil {
			t.Errorf("concurrent destroy: %v", err)
		}
		return nil
	})
	if err := sb.Pause(ctx); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("pause racing a destroy: %v; want NotFound", err)
	}
	if rec, _ := st.Get(ctx, sb.ID()); rec.Status != store.StatusDestroyed {
		t.Fatalf("record after the race: %s %q; want destroyed", rec.Status, rec.LastError)
	}
	if len(fb.IDs()) != 0 {
		t.Fatalf("left %v", fb.IDs())
	}
}

// A destroy that races a create in flight wins: the create finds its record taken and
// removes the sandbox it made.
func TestDestroyDuringCreateLeavesNothing(t *testing.T) {
	ctx := context.Background()
	a, st, fb := fakeManager(t)
	b := newManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{Backend: "fake"}}, map[string]backend.Backend{"fake": fb})
	var id string
	fb.SetFaultAfter(fake.OpCreate, func(context.Context) error {
		fb.SetFaultAfter(fake.OpCreate, nil)
		recs, err := st.List(ctx, store.Filter{})
		if err != nil || len(recs) != 1 {
			t.Errorf("records during create: %v %v", recs, err)
			return nil
		}
		id = recs[0].ID
		if err := b.Destroy(ctx, id); err != nil {
			t.Errorf("destroy during create: %v", err)
		}
		return nil
	})
	if _, err := a.Create(ctx, moat.Spec{}); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("create destroyed meanwhile: %v; want NotFound", err)
	}
	if rec, _ := st.Get(ctx, id); rec.Status != store.StatusDestroyed {
		t.Fatalf("record: %s %q; want destroyed", rec.Status, rec.LastError)
	}
	if len(fb.IDs()) != 0 {
		t.Fatalf("left %v", fb.IDs())
	}
}
