// Package storetest answers "does this store keep the store.Store contract?": one
// conformance suite that every Store implementation runs from its own tests.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t testing.TB) store.Store { return openFresh(t) })
//	}
//
// Implementations whose data outlives a Store value (files, database servers) use
// RunOptions with Options.Reopen, which adds durability (Close, then reopen) and
// multi-instance tests (two Store values on the same data, as two moat processes would).
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// Options configures RunOptions.
type Options struct {
	// Reopen, when set, enables the tests that need two Store values over the same data.
	// Each call prepares one fresh, empty location (a database file, a schema) and returns
	// a function that opens a new Store over that location every time it is called.
	Reopen func(t testing.TB) (open func(t testing.TB) store.Store)
}

// Run runs the suite. open must return a new, empty store on every call and close it in
// t.Cleanup; the suite may Close a store itself first, so that cleanup must tolerate a
// second Close (ignore its error).
func Run(t *testing.T, open func(t testing.TB) store.Store) {
	t.Helper()
	RunOptions(t, open, Options{})
}

// RunOptions is Run with options.
func RunOptions(t *testing.T, open func(t testing.TB) store.Store, o Options) {
	t.Helper()
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("CallerCannotMutate", func(t *testing.T) { testCallerCannotMutate(t, open(t)) })
	t.Run("CreateDuplicateID", func(t *testing.T) { testCreateDuplicateID(t, open(t)) })
	t.Run("UniqueName", func(t *testing.T) { testUniqueName(t, open(t)) })
	t.Run("GetMissing", func(t *testing.T) { testGetMissing(t, open(t)) })
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("Update", func(t *testing.T) { testUpdate(t, open(t)) })
	t.Run("UpdateMissing", func(t *testing.T) { testUpdateMissing(t, open(t)) })
	t.Run("UpdateOneWinner", func(t *testing.T) { testUpdateOneWinner(t, open(t)) })
	t.Run("UpdateRace", func(t *testing.T) {
		s := open(t)
		testUpdateRace(t, []store.Store{s})
	})
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("Settings", func(t *testing.T) { testSettings(t, open(t)) })
	t.Run("SettingsPrefix", func(t *testing.T) { testSettingsPrefix(t, open(t)) })
	t.Run("CreateSetting", func(t *testing.T) { testCreateSetting(t, open(t)) })
	t.Run("CreateSettingOneWinner", func(t *testing.T) {
		testCreateSettingOneWinner(t, []store.Store{open(t)})
	})
	t.Run("Canceled", func(t *testing.T) { testCanceled(t, open(t)) })
	if o.Reopen == nil {
		return
	}
	t.Run("Durable", func(t *testing.T) { testDurable(t, o.Reopen(t)) })
	t.Run("TwoInstances", func(t *testing.T) { testTwoInstances(t, o.Reopen(t)) })
}

var (
	// A fixed base instant with nanoseconds, in a non-UTC zone: stores must keep the
	// instant (to at least the millisecond) and hand it back in UTC.
	zone = time.FixedZone("IST", 5*3600+30*60)
	base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, zone)
)

// sample returns a record with every field set.
func sample(id string) *store.Record {
	return &store.Record{
		ID:        id,
		Name:      "name-" + id,
		Backend:   "docker",
		SessionID: "sess-1",
		Handle: backend.Handle{
			Backend: "docker",
			Version: 3,
			State:   json.RawMessage(`{"container_id":"c0ffee","ports":[1,2],"nested":{"ü":"✓"}}`),
		},
		Status:    store.StatusActive,
		LastError: "exec: exit status 1 \"quoted\" ünïcode",
		Spec:      json.RawMessage(`{"image":"busybox","env":{"A":"1"},"cmd":["sh","-c","echo hi"],"n":1.5}`),
		Labels:    map[string]string{"team": "infra", "with.dot": "x", `q"uote`: "", "ü": "✓"},
		CreatedAt: base,
		UpdatedAt: base.Add(1500 * time.Millisecond),
		LastUsed:  base.Add(time.Hour + 123*time.Microsecond),
		ExpiresAt: base.Add(24 * time.Hour),
	}
}

// named is a sample record with the given name ("" for none).
func named(id, name string) *store.Record {
	r := sample(id)
	r.Name = name
	return r
}

func mustCreate(t testing.TB, s store.Store, r *store.Record) {
	t.Helper()
	if err := s.Create(context.Background(), r); err != nil {
		t.Fatalf("Create(%s): %v", r.ID, err)
	}
}

func mustGet(t testing.TB, s store.Store, id string) *store.Record {
	t.Helper()
	r, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	if r == nil {
		t.Fatalf("Get(%s) returned nil record and nil error", id)
	}
	return r
}

func wantKind(t testing.TB, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: got error %v (kind %s), want kind %v", what, err, errdefs.KindOf(err), kind)
	}
}

func clone(r *store.Record) *store.Record {
	c := *r
	c.Spec = bytes.Clone(r.Spec)
	c.Handle.State = bytes.Clone(r.Handle.State)
	c.Labels = maps.Clone(r.Labels)
	return &c
}

// diff lists the fields where got differs from want. Times compare as instants with
// sub-millisecond tolerance and must be UTC; JSON compares by value.
func diff(want, got *store.Record) []string {
	var d []string
	add := func(field string, w, g any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	same := func(field string, w, g any) {
		if w != g {
			add(field, w, g)
		}
	}
	same("ID", want.ID, got.ID)
	same("Name", want.Name, got.Name)
	same("Backend", want.Backend, got.Backend)
	same("SessionID", want.SessionID, got.SessionID)
	same("Status", want.Status, got.Status)
	same("LastError", want.LastError, got.LastError)
	same("Version", want.Version, got.Version)
	if want.Handle.Backend != got.Handle.Backend || want.Handle.Version != got.Handle.Version {
		add("Handle", fmt.Sprintf("%s/v%d", want.Handle.Backend, want.Handle.Version),
			fmt.Sprintf("%s/v%d", got.Handle.Backend, got.Handle.Version))
	}
	if !jsonEqual(want.Handle.State, got.Handle.State) {
		add("Handle.State", string(want.Handle.State), string(got.Handle.State))
	}
	if !jsonEqual(want.Spec, got.Spec) {
		add("Spec", string(want.Spec), string(got.Spec))
	}
	if (len(want.Labels) != 0 || len(got.Labels) != 0) && !maps.Equal(want.Labels, got.Labels) {
		add("Labels", want.Labels, got.Labels)
	}
	for _, f := range []struct {
		name      string
		want, got time.Time
	}{
		{"CreatedAt", want.CreatedAt, got.CreatedAt},
		{"UpdatedAt", want.UpdatedAt, got.UpdatedAt},
		{"LastUsed", want.LastUsed, got.LastUsed},
		{"ExpiresAt", want.ExpiresAt, got.ExpiresAt},
	} {
		if !sameInstant(f.want, f.got) {
			add(f.name, f.want.UTC().Format(time.RFC3339Nano), f.got.UTC().Format(time.RFC3339Nano))
		} else if !f.got.IsZero() && f.got.Location() != time.UTC {
			add(f.name+".Location", time.UTC, f.got.Location())
		}
	}
	return d
}

func sameInstant(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return d > -time.Millisecond && d < time.Millisecond
}

func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

func wantEqual(t testing.TB, what string, want, got *store.Record) {
	t.Helper()
	if d := diff(want, got); len(d) > 0 {
		t.Fatalf("%s: record %s differs:\n  %s", what, want.ID, joinLines(d))
	}
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for i, l := range s {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}

func testRoundTrip(t *testing.T, s store.Store) {
	ctx := context.Background()
	full := sample("rt-full")
	full.Version = 42 // Create must ignore it and start at 1
	if err := s.Create(ctx, full); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if full.Version != 1 {
		t.Fatalf("Create set Version %d, want 1", full.Version)
	}
	wantEqual(t, "Get after Create", full, mustGet(t, s, full.ID))

	// Zero ExpiresAt ("never expires"), no name, no session, no labels, no last error.
	bare := &store.Record{
		ID:        "rt-bare",
		Backend:   "bwrap",
		Handle:    backend.Handle{Backend: "bwrap", Version: 1, State: json.RawMessage(`{"pid":7}`)},
		Status:    store.StatusCreating,
		Spec:      json.RawMessage(`{}`),
		CreatedAt: base.UTC(),
		UpdatedAt: base.UTC(),
		LastUsed:  base.UTC(),
	}
	mustCreate(t, s, bare)
	got := mustGet(t, s, bare.ID)
	wantEqual(t, "Get bare record", bare, got)
	if !got.ExpiresAt.IsZero() {
		t.Fatalf("zero ExpiresAt came back as %v", got.ExpiresAt)
	}

	// Times far from now and with exact millisecond values survive too.
	edge := named("rt-edge", "")
	edge.CreatedAt = time.Date(1999, 12, 31, 23, 59, 59, 999000000, time.UTC)
	edge.UpdatedAt = time.Date(2200, 1, 1, 0, 0, 0, 1000000, time.UTC)
	edge.ExpiresAt = time.Unix(1, 0)
	mustCreate(t, s, edge)
	wantEqual(t, "Get edge times", edge, mustGet(t, s, edge.ID))

	// Every status value round-trips.
	for i, st := range []store.Status{store.StatusCreating, store.StatusActive, store.StatusPaused,
		store.StatusStopped, store.StatusError, store.StatusDestroyed} {
		r := sample("rt-status-" + strconv.Itoa(i))
		r.Status = st
		mustCreate(t, s, r)
		if g := mustGet(t, s, r.ID); g.Status != st {
			t.Fatalf("status %q came back as %q", st, g.Status)
		}
	}
}

func testCallerCannotMutate(t *testing.T, s store.Store) {
	r := sample("iso")
	mustCreate(t, s, r)
	want := clone(r)
	// Mutating the caller's record after Create must not reach the store.
	r.Labels["team"] = "mutated"
	r.Spec[2] = 'X'
	r.Handle.State[2] = 'X'
	r.Status = store.StatusError
	got := mustGet(t, s, "iso")
	wantEqual(t, "after mutating the created record", want, got)
	// Nor may mutating what Get returned.
	got.Labels["team"] = "mutated"
	got.Spec[2] = 'X'
	got.Handle.State[2] = 'X'
	got.Name = "other"
	wantEqual(t, "after mutating a Get result", want, mustGet(t, s, "iso"))
	list, err := s.List(context.Background(), store.Filter{})
	if err != nil || len(list) != 1 {
		t.Fatalf("List: %v, %d records", err, len(list))
	}
	list[0].Labels["team"] = "mutated"
	list[0].Spec[2] = 'X'
	wantEqual(t, "after mutating a List result", want, mustGet(t, s, "iso"))
}

func testCreateDuplicateID(t *testing.T, s store.Store) {
	r := sample("dup")
	mustCreate(t, s, r)
	again := named("dup", "different-name")
	again.Backend = "other"
	wantKind(t, "Create with a taken id", s.Create(context.Background(), again), errdefs.ErrAlreadyExists)
	// The same id is taken even when the first record is destroyed.
	r.Status = store.StatusDestroyed
	if err := s.Update(context.Background(), r); err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantKind(t, "Create with the id of a destroyed record", s.Create(context.Background(), again), errdefs.ErrAlreadyExists)
	if g := mustGet(t, s, "dup"); g.Backend != "docker" || g.Name != "name-dup" {
		t.Fatalf("failed Create changed the stored record: %+v", g)
	}
}

func testUniqueName(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := named("name-a", "web")
	mustCreate(t, s, a)

	b := named("name-b", "web")
	wantKind(t, "Create with a name in use", s.Create(ctx, b), errdefs.ErrAlreadyExists)
	if _, err := s.Get(ctx, "name-b"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("record with a duplicate name was stored anyway (Get: %v)", err)
	}
	// A record in any non-destroyed status holds its name.
	for _, st := range []store.Status{store.StatusCreating, store.StatusPaused, store.StatusStopped, store.StatusError} {
		a.Status = st
		if err := s.Update(ctx, a); err != nil {
			t.Fatalf("Update to %s: %v", st, err)
		}
		wantKind(t, "Create with a name held by a "+string(st)+" record", s.Create(ctx, b), errdefs.ErrAlreadyExists)
	}

	// Names that are empty are not unique.
	for i := range 3 {
		r := named("noname-"+strconv.Itoa(i), "")
		mustCreate(t, s, r)
	}

	// Taking a used name by Update is refused too, and leaves the record as it was.
	c := named("name-c", "api")
	mustCreate(t, s, c)
	c.Name = "web"
	wantKind(t, "Update to a name in use", s.Update(ctx, c), errdefs.ErrAlreadyExists)
	if g := mustGet(t, s, "name-c"); g.Name != "api" || g.Version != 1 {
		t.Fatalf("refused Update changed the record: name %q version %d", g.Name, g.Version)
	}

	// Once destroyed, the name is free; several destroyed records may share it.
	a.Status = store.StatusDestroyed
	if err := s.Update(ctx, a); err != nil {
		t.Fatalf("Update to destroyed: %v", err)
	}
	mustCreate(t, s, b)
	d := named("name-d", "web")
	d.Status = store.StatusDestroyed
	mustCreate(t, s, d)
	// ...but reviving a destroyed record whose name was reused is refused.
	a.Status = store.StatusActive
	wantKind(t, "Update reviving a destroyed record whose name is taken", s.Update(ctx, a), errdefs.ErrAlreadyExists)
}

func testGetMissing(t *testing.T, s store.Store) {
	r, err := s.Get(context.Background(), "does-not-exist")
	wantKind(t, "Get missing", err, errdefs.ErrNotFound)
	if r != nil {
		t.Fatalf("Get missing returned a record: %+v", r)
	}
}

// listData is a set of records covering every filterable field, with colliding
// CreatedAt values so the ID tie-break matters, and IDs whose byte order differs from
// common collations.
func listData() []*store.Record {
	ids := []string{"B", "a", "a-b", "_x", "Z9", "a_c", "ab", "AA", "b.1", "b-1", "c", "C",
		"0", "9z", "é", "e", "x~", "x!", "y", "Y", "m", "n", "o", "p", "q"}
	backends := []string{"docker", "bwrap", "vercel"}
	sessions := []string{"", "s1", "s2"}
	statuses := []store.Status{store.StatusCreating, store.StatusActive, store.StatusPaused,
		store.StatusStopped, store.StatusError, store.StatusDestroyed}
	labelSets := []map[string]string{
		nil,
		{"team": "infra"},
		{"team": "infra", "env": "prod"},
		{"team": "web", "env": "prod"},
		{"env": ""},
		{"team": "infra", "env": "dev", "with.dot": "1"},
		{`we"ird`: "v'al", "ü": "✓"},
	}
	var out []*store.Record
	for i, id := range ids {
		r := named(id, "")
		if i%4 == 0 {
			r.Name = "n" + strconv.Itoa(i)
		}
		r.Backend = backends[i%len(backends)]
		r.SessionID = sessions[(i/2)%len(sessions)]
		r.Status = statuses[i%len(statuses)]
		r.Labels = maps.Clone(labelSets[i%len(labelSets)])
		// Five distinct instants, so most share their CreatedAt with others.
		r.CreatedAt = base.Add(time.Duration((i*7)%5) * time.Second)
		if i == 11 {
			r.CreatedAt = time.Time{} // sorts first
		}
		out = append(out, r)
	}
	return out
}

func sortRecords(rs []*store.Record) {
	slices.SortStableFunc(rs, func(a, b *store.Record) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
}

func ids(rs []*store.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func testList(t *testing.T, s store.Store) {
	ctx := context.Background()
	all := listData()
	// Insert in a shuffled order so insertion order cannot pass for the sort order.
	shuffled := slices.Clone(all)
	rand.New(rand.NewSource(1)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, r := range shuffled {
		mustCreate(t, s, r)
	}
	filters := []store.Filter{
		{},
		{IncludeDestroyed: true},
		{Backend: "docker"},
		{Backend: "nope"},
		{SessionID: "s1"},
		{SessionID: "s2", IncludeDestroyed: true},
		{Name: "n4"},
		{Name: "n0", IncludeDestroyed: true},
		{Status: []store.Status{store.StatusActive}},
		{Status: []store.Status{store.StatusDestroyed}},
		{Status: []store.Status{store.StatusDestroyed, store.StatusPaused}},
		{Status: []store.Status{store.StatusError}, IncludeDestroyed: true},
		{Labels: map[string]string{"team": "infra"}},
		{Labels: map[string]string{"team": "infra", "env": "prod"}},
		{Labels: map[string]string{"env": ""}},
		{Labels: map[string]string{"env": "prod"}, IncludeDestroyed: true},
		{Labels: map[string]string{"with.dot": "1"}, IncludeDestroyed: true},
		{Labels: map[string]string{`we"ird`: "v'al"}, IncludeDestroyed: true},
		{Labels: map[string]string{"ü": "✓"}, IncludeDestroyed: true},
		{Labels: map[string]string{"team": "nope"}},
		{Labels: map[string]string{"absent": ""}, IncludeDestroyed: true},
		{Backend: "bwrap", SessionID: "s1"},
		{Backend: "docker", Status: []store.Status{store.StatusCreating, store.StatusStopped}},
		{Backend: "docker", Labels: map[string]string{"team": "infra"}, IncludeDestroyed: true},
		{SessionID: "s2", Labels: map[string]string{"env": "prod"}, Status: []store.Status{store.StatusActive, store.StatusError, store.StatusDestroyed}},
		{Backend: "vercel", SessionID: "", Name: "n8", IncludeDestroyed: true},
	}
	for i, f := range filters {
		var want []*store.Record
		for _, r := range all {
			if store.Match(f, r) {
				want = append(want, r)
			}
		}
		sortRecords(want)
		got, err := s.List(ctx, f)
		if err != nil {
			t.Fatalf("filter %d %+v: List: %v", i, f, err)
		}
		if !slices.Equal(ids(want), ids(got)) {
			t.Fatalf("filter %d %+v:\n got  %q\n want %q", i, f, ids(got), ids(want))
		}
		for j := range got {
			want[j].Version = 1
			wantEqual(t, fmt.Sprintf("filter %d", i), want[j], got[j])
		}
	}
	// The suite's own filters must not be vacuous: several select something, several not all.
	if n := len(all); n < 20 {
		t.Fatalf("list data too small: %d", n)
	}
}

func testUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := sample("upd")
	mustCreate(t, s, r)

	v1 := mustGet(t, s, "upd")
	r.Status = store.StatusError
	r.LastError = "boom"
	r.Labels = map[string]string{"new": "label"}
	r.Handle = backend.Handle{Backend: "docker", Version: 4, State: json.RawMessage(`{"container_id":"beef"}`)}
	r.Spec = json.RawMessage(`{"image":"alpine"}`)
	r.SessionID = "sess-2"
	r.Name = "renamed"
	r.UpdatedAt = base.Add(time.Minute)
	r.LastUsed = base.Add(2 * time.Minute)
	r.ExpiresAt = time.Time{} // clearing expiry must stick
	if err := s.Update(ctx, r); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if r.Version != 2 {
		t.Fatalf("Update set Version %d, want 2", r.Version)
	}
	wantEqual(t, "Get after Update", r, mustGet(t, s, "upd"))

	// An update based on the stale copy is refused and changes nothing.
	v1.Status = store.StatusStopped
	v1.LastError = "stale"
	err := s.Update(ctx, v1)
	wantKind(t, "Update with a stale version", err, errdefs.ErrConflict)
	if v1.Version != 1 {
		t.Fatalf("refused Update changed the caller's Version to %d", v1.Version)
	}
	wantEqual(t, "Get after refused Update", r, mustGet(t, s, "upd"))

	// A version from the future is as wrong as one from the past.
	future := clone(r)
	future.Version = 7
	wantKind(t, "Update with a future version", s.Update(ctx, future), errdefs.ErrConflict)

	// Setting ExpiresAt again, and a second successful update, bump the version again.
	r.ExpiresAt = base.Add(48 * time.Hour)
	r.Labels = nil
	if err := s.Update(ctx, r); err != nil {
		t.Fatalf("second Update: %v", err)
	}
	if r.Version != 3 {
		t.Fatalf("second Update set Version %d, want 3", r.Version)
	}
	wantEqual(t, "Get after second Update", r, mustGet(t, s, "upd"))
}

func testUpdateMissing(t *testing.T, s store.Store) {
	r := sample("ghost")
	r.Version = 1
	wantKind(t, "Update missing", s.Update(context.Background(), r), errdefs.ErrNotFound)
	if _, err := s.Get(context.Background(), "ghost"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("Update of a missing record created it (Get: %v)", err)
	}
}

// testUpdateOneWinner: n writers holding the same version race; exactly one may win.
func testUpdateOneWinner(t *testing.T, s store.Store) {
	mustCreate(t, s, sample("winner"))
	const n = 10
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		won       []int
		conflicts int
		others    []error
	)
	for i := range n {
		wg.Go(func() {
			r := sample("winner")
			r.Version = 1
			r.LastError = "writer " + strconv.Itoa(i)
			err := s.Update(context.Background(), r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, i)
			case errdefs.Is(err, errdefs.KindConflict):
				conflicts++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("unexpected errors: %v", others)
	}
	if len(won) != 1 || conflicts != n-1 {
		t.Fatalf("%d updates won (%v) and %d conflicted; want exactly 1 and %d", len(won), won, conflicts, n-1)
	}
	g := mustGet(t, s, "winner")
	if g.Version != 2 || g.LastError != "writer "+strconv.Itoa(won[0]) {
		t.Fatalf("stored version %d last error %q; want version 2 from writer %d", g.Version, g.LastError, won[0])
	}
}

// testUpdateRace: 20 goroutines each increment a counter label once, retrying on
// Conflict. No increment may be lost. Writers are spread over the given stores.
func testUpdateRace(t *testing.T, stores []store.Store) {
	ctx := context.Background()
	r := sample("race")
	r.Labels = map[string]string{"counter": "0"}
	mustCreate(t, stores[0], r)
	const n = 20
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		conflicts int
		errs      []error
	)
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				if attempt > 1000 {
					mu.Lock()
					errs = append(errs, fmt.Errorf("writer %d: no success after 1000 attempts", i))
					mu.Unlock()
					return
				}
				cur, err := s.Get(ctx, "race")
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("writer %d: Get: %w", i, err))
					mu.Unlock()
					return
				}
				c, err := strconv.Atoi(cur.Labels["counter"])
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("writer %d: counter %q: %w", i, cur.Labels["counter"], err))
					mu.Unlock()
					return
				}
				cur.Labels["counter"] = strconv.Itoa(c + 1)
				err = s.Update(ctx, cur)
				if errdefs.Is(err, errdefs.KindConflict) {
					mu.Lock()
					conflicts++
					mu.Unlock()
					continue
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("writer %d: Update: %w", i, err))
					mu.Unlock()
				}
				return
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("racing updates failed: %v", errs)
	}
	for _, s := range stores {
		g := mustGet(t, s, "race")
		if g.Labels["counter"] != strconv.Itoa(n) || g.Version != n+1 {
			t.Fatalf("after %d racing increments: counter %q version %d; want %d and %d (conflicts retried: %d)",
				n, g.Labels["counter"], g.Version, n, n+1, conflicts)
		}
	}
	t.Logf("%d conflicts retried", conflicts)
}

func testDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := named("del", "doomed")
	mustCreate(t, s, r)
	keep := sample("keep")
	mustCreate(t, s, keep)
	if err := s.Delete(ctx, "del"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Get(ctx, "del")
	wantKind(t, "Get after Delete", err, errdefs.ErrNotFound)
	wantKind(t, "Delete again", s.Delete(ctx, "del"), errdefs.ErrNotFound)
	wantKind(t, "Update after Delete", s.Update(ctx, r), errdefs.ErrNotFound)
	list, err := s.List(ctx, store.Filter{IncludeDestroyed: true})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(ids(list), []string{"keep"}) {
		t.Fatalf("List after Delete: %q, want [keep]", ids(list))
	}
	// The id and the name are free again.
	again := named("del", "doomed")
	mustCreate(t, s, again)
	if again.Version != 1 {
		t.Fatalf("re-created record has Version %d, want 1", again.Version)
	}
	wantEqual(t, "unrelated record after Delete", keep, mustGet(t, s, "keep"))
}

func testSettings(t *testing.T, s store.Store) {
	ctx := context.Background()
	v, err := s.GetSetting(ctx, "missing")
	wantKind(t, "GetSetting missing", err, errdefs.ErrNotFound)
	if v != nil {
		t.Fatalf("GetSetting missing returned %q", v)
	}
	put := func(k string, v []byte) {
		t.Helper()
		if err := s.PutSetting(ctx, k, v); err != nil {
			t.Fatalf("PutSetting(%q): %v", k, err)
		}
	}
	get := func(k string, want []byte) {
		t.Helper()
		got, err := s.GetSetting(ctx, k)
		if err != nil {
			t.Fatalf("GetSetting(%q): %v", k, err)
		}
		if !bytes.Equal(got, want) || got == nil {
			t.Fatalf("GetSetting(%q) = %q (nil %v), want %q", k, got, got == nil, want)
		}
	}
	put("session/override", []byte("docker"))
	get("session/override", []byte("docker"))
	put("session/override", []byte("bwrap"))
	get("session/override", []byte("bwrap"))

	// Binary values: every byte, NULs, invalid UTF-8.
	bin := make([]byte, 512)
	for i := range bin {
		bin[i] = byte(i)
	}
	bin = append(bin, 0xff, 0xfe, 0x00, 0xc3, 0x28)
	put("bin", bin)
	get("bin", bin)
	// The store must have copied the value.
	bin[0] = 'X'
	got, _ := s.GetSetting(ctx, "bin")
	if len(got) == 0 || got[0] != 0 {
		t.Fatalf("PutSetting kept the caller's slice")
	}
	got[1] = 'X'
	if again, _ := s.GetSetting(ctx, "bin"); len(again) < 2 || again[1] != 1 {
		t.Fatalf("GetSetting returned the stored slice itself")
	}

	// An empty value is a value, not absence.
	put("empty", []byte{})
	get("empty", []byte{})

	// Keys may hold anything printable.
	put("ü/ключ with space", []byte("v"))
	get("ü/ключ with space", []byte("v"))

	if err := s.DeleteSetting(ctx, "session/override"); err != nil {
		t.Fatalf("DeleteSetting: %v", err)
	}
	_, err = s.GetSetting(ctx, "session/override")
	wantKind(t, "GetSetting after DeleteSetting", err, errdefs.ErrNotFound)
	if err := s.DeleteSetting(ctx, "session/override"); err != nil {
		t.Fatalf("DeleteSetting of a missing key: %v", err)
	}
	get("bin", append([]byte{0}, bin[1:]...))
}

func testSettingsPrefix(t *testing.T, s store.Store) {
	ctx := context.Background()
	kv := map[string]string{
		"a/1": "one", "a/2": "two", "a/": "slash", "ab": "ab", "b": "b",
		"x%y": "pct", "x_1": "under", "xay": "xay", `x\z`: "bs", "xaz": "xaz",
		"X%y": "upper",
	}
	for k, v := range kv {
		if err := s.PutSetting(ctx, k, []byte(v)); err != nil {
			t.Fatalf("PutSetting(%q): %v", k, err)
		}
	}
	for _, prefix := range []string{"", "a", "a/", "a/1", "b", "c", "x%", "x_", `x\`, "x", "X", "a/1/"} {
		want := map[string][]byte{}
		for k, v := range kv {
			if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
				want[k] = []byte(v)
			}
		}
		got, err := s.ListSettings(ctx, prefix)
		if err != nil {
			t.Fatalf("ListSettings(%q): %v", prefix, err)
		}
		if !maps.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("ListSettings(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func testCanceled(t *testing.T, s store.Store) {
	live := context.Background()
	existing := sample("cx-existing")
	mustCreate(t, s, existing)
	if err := s.PutSetting(live, "cx", []byte("v")); err != nil {
		t.Fatalf("PutSetting: %v", err)
	}
	ctx, cancel := context.WithCancel(live)
	cancel()

	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled ctx: got %v, want an error wrapping context.Canceled", op, err)
		}
	}
	check("Create", s.Create(ctx, sample("cx-new")))
	_, err := s.Get(ctx, "cx-existing")
	check("Get", err)
	_, err = s.List(ctx, store.Filter{})
	check("List", err)
	upd := clone(existing)
	upd.LastError = "changed"
	check("Update", s.Update(ctx, upd))
	check("Delete", s.Delete(ctx, "cx-existing"))
	_, err = s.GetSetting(ctx, "cx")
	check("GetSetting", err)
	check("PutSetting", s.PutSetting(ctx, "cx", []byte("changed")))
	check("DeleteSetting", s.DeleteSetting(ctx, "cx"))
	_, err = s.ListSettings(ctx, "")
	check("ListSettings", err)

	// Nothing happened.
	if _, err := s.Get(live, "cx-new"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("cancelled Create stored the record (Get: %v)", err)
	}
	wantEqual(t, "record after cancelled Update and Delete", existing, mustGet(t, s, "cx-existing"))
	if v, err := s.GetSetting(live, "cx"); err != nil || string(v) != "v" {
		t.Errorf("setting after cancelled Put/Delete: %q, %v", v, err)
	}
}

func testDurable(t *testing.T, open func(t testing.TB) store.Store) {
	ctx := context.Background()
	s1 := open(t)
	recs := []*store.Record{sample("dur-1"), sample("dur-2"), sample("dur-3")}
	recs[2].ExpiresAt = time.Time{}
	for _, r := range recs {
		mustCreate(t, s1, r)
	}
	recs[1].Status = store.StatusStopped
	if err := s1.Update(ctx, recs[1]); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if err := s1.Delete(ctx, "dur-3"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s1.PutSetting(ctx, "k", []byte{0, 1, 2}); err != nil {
		t.Fatalf("PutSetting: %v", err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := open(t)
	wantEqual(t, "after reopen", recs[0], mustGet(t, s2, "dur-1"))
	wantEqual(t, "after reopen", recs[1], mustGet(t, s2, "dur-2"))
	if _, err := s2.Get(ctx, "dur-3"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("deleted record is back after reopen (Get: %v)", err)
	}
	if v, err := s2.GetSetting(ctx, "k"); err != nil || !bytes.Equal(v, []byte{0, 1, 2}) {
		t.Fatalf("setting after reopen: %q, %v", v, err)
	}
	// Uniqueness and versions survive too.
	dup := sample("other")
	dup.Name = recs[0].Name
	wantKind(t, "Create with a name taken before reopen", s2.Create(ctx, dup), errdefs.ErrAlreadyExists)
	stale := clone(recs[1])
	stale.Version = 1
	wantKind(t, "stale Update after reopen", s2.Update(ctx, stale), errdefs.ErrConflict)
}

func testTwoInstances(t *testing.T, open func(t testing.TB) store.Store) {
	ctx := context.Background()
	s1, s2 := open(t), open(t)
	r := sample("two")
	mustCreate(t, s1, r)
	wantEqual(t, "other instance sees the record", r, mustGet(t, s2, "two"))
	dup := sample("two-b")
	dup.Name = r.Name
	wantKind(t, "Create in the other instance with a taken name", s2.Create(ctx, dup), errdefs.ErrAlreadyExists)
	if err := s2.PutSetting(ctx, "shared", []byte("yes")); err != nil {
		t.Fatalf("PutSetting: %v", err)
	}
	if v, err := s1.GetSetting(ctx, "shared"); err != nil || string(v) != "yes" {
		t.Fatalf("other instance's setting: %q, %v", v, err)
	}
	stale := clone(r)
	r.Status = store.StatusPaused
	if err := s2.Update(ctx, r); err != nil {
		t.Fatalf("Update in s2: %v", err)
	}
	wantKind(t, "stale Update in s1", s1.Update(ctx, stale), errdefs.ErrConflict)
	testUpdateRace(t, []store.Store{s1, s2})
	testCreateSettingOneWinner(t, []store.Store{s1, s2})
}

func testCreateSetting(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.CreateSetting(ctx, "once", []byte("first")); err != nil {
		t.Fatalf("CreateSetting: %v", err)
	}
	wantKind(t, "CreateSetting of a set key", s.CreateSetting(ctx, "once", []byte("second")), errdefs.ErrAlreadyExists)
	if v, err := s.GetSetting(ctx, "once"); err != nil || string(v) != "first" {
		t.Fatalf("after a refused CreateSetting: %q, %v; want the first value", v, err)
	}
	if err := s.PutSetting(ctx, "put", []byte("x")); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "CreateSetting of a key set by PutSetting", s.CreateSetting(ctx, "put", []byte("y")), errdefs.ErrAlreadyExists)
	if err := s.CreateSetting(ctx, "empty", nil); err != nil {
		t.Fatalf("CreateSetting of an empty value: %v", err)
	}
	if v, err := s.GetSetting(ctx, "empty"); err != nil || len(v) != 0 {
		t.Fatalf("empty value: %q, %v", v, err)
	}
	if err := s.DeleteSetting(ctx, "once"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSetting(ctx, "once", []byte("again")); err != nil {
		t.Fatalf("CreateSetting after DeleteSetting: %v", err)
	}
}

// testCreateSettingOneWinner: 10 writers spread over the stores create one key with
// their own values at once; exactly one succeeds and every store reads its value.
func testCreateSettingOneWinner(t *testing.T, stores []store.Store) {
	const n = 10
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		won    []int
		others []error
	)
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			err := s.CreateSetting(context.Background(), "claim", []byte("writer "+strconv.Itoa(i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, i)
			case !errdefs.Is(err, errdefs.KindAlreadyExists):
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if len(others) > 0 || len(won) != 1 {
		t.Fatalf("%d of %d racing CreateSetting won (%v), unexpected errors %v; want exactly one", len(won), n, won, others)
	}
	for _, s := range stores {
		if v, err := s.GetSetting(context.Background(), "claim"); err != nil || string(v) != "writer "+strconv.Itoa(won[0]) {
			t.Fatalf("stored %q, %v; want the winner's value", v, err)
		}
	}
}
