package moat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
)

func ptr[T any](v T) *T { return &v }

// TestSessionSurvivesRestart is issue 18's done-when: a session set with an image and a
// memory limit gives every new sandbox of that session that image and limit after the
// manager (moatd) restarts on the same sqlite file.
func TestSessionSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	db := "sqlite:" + filepath.Join(t.TempDir(), "moat.db")
	fb := fake.New()
	open := func() *moat.Manager {
		m, err := moat.Open(ctx, moat.Config{Home: t.TempDir(), Store: db, Sandbox: moat.SandboxConfig{Backend: "fake"}},
			moat.WithoutRegistered(), moat.WithBackend("fake", fb))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open()
	if _, err := m.PatchSession(ctx, "s1", moat.SessionPatch{Image: ptr("session-image:1"),
		Limits: &moat.LimitsPatch{MemoryBytes: ptr(int64(256 << 20))}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m = open()
	defer m.Close()
	for range 2 {
		sb, err := m.Create(ctx, moat.Spec{SessionID: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		info, err := sb.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Spec.Image != "session-image:1" || info.Spec.Limits.MemoryBytes != 256<<20 || info.SessionID != "s1" {
			t.Errorf("sandbox of session s1 after restart: spec %+v", info.Spec)
		}
		// The record in the store says so too (what the reconciler recreates from).
		rec, err := m.Store().Get(ctx, sb.ID())
		if err != nil {
			t.Fatal(err)
		}
		var spec moat.Spec
		if err := json.Unmarshal(rec.Spec, &spec); err != nil || spec.Image != "session-image:1" || spec.Limits.MemoryBytes != 256<<20 {
			t.Errorf("stored spec %s, %v", rec.Spec, err)
		}
	}
}

func sessionManager(t *testing.T, st store.Store, cfg moat.Config) (*moat.Manager, *fake.Backend) {
	fb := fake.New()
	hb := fake.New(fake.WithDescriptor(backend.Descriptor{Name: "restricted", Isolation: backend.IsolationNone}))
	if cfg.Sandbox.Backend == "" {
		cfg.Sandbox.Backend = "fake"
	}
	return newManager(t, st, cfg, map[string]backend.Backend{"fake": fb, "restricted": hb}), fb
}

func TestSessionPrecedence(t *testing.T) {
	ctx := context.Background()
	m, _ := sessionManager(t, memstore.New(), moat.Config{Sandbox: moat.SandboxConfig{
		Image: "config-image", Env: map[string]string{"A": "config", "B": "config"},
		Limits: moat.Limits{CPUs: 0.25, PIDs: 100},
	}})
	if _, err := m.PutSession(ctx, moat.Session{ID: "s", Image: "session-image",
		Limits: moat.Limits{MemoryBytes: 64 << 20, CPUs: 1},
		Env:    map[string]string{"B": "session", "C": "session"}, Labels: map[string]string{"team": "s", "x": "s"}}); err != nil {
		t.Fatal(err)
	}
	// Session over config.
	sb, err := m.Create(ctx, moat.Spec{SessionID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := sb.Info(ctx)
	if got.Spec.Image != "session-image" || got.Spec.Limits != (moat.Limits{MemoryBytes: 64 << 20, CPUs: 1, PIDs: 100}) ||
		fmt.Sprint(got.Spec.Env) != "map[A:config B:session C:session]" || got.Labels["team"] != "s" {
		t.Errorf("session over config: %+v labels %v", got.Spec, got.Labels)
	}
	// Spec over session.
	sb, err = m.Create(ctx, moat.Spec{SessionID: "s", Image: "spec-image", Limits: moat.Limits{CPUs: 0.5},
		Env: map[string]string{"C": "spec"}, Labels: map[string]string{"team": "spec"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = sb.Info(ctx)
	if got.Spec.Image != "spec-image" || got.Spec.Limits.CPUs != 0.5 || got.Spec.Limits.MemoryBytes != 64<<20 ||
		got.Spec.Env["C"] != "spec" || got.Labels["team"] != "spec" || got.Labels["x"] != "s" {
		t.Errorf("spec over session: %+v labels %v", got.Spec, got.Labels)
	}
	// The session's backend routes; the spec's wins.
	if _, err := m.PatchSession(ctx, "s", moat.SessionPatch{Backend: ptr("restricted")}); err != nil {
		t.Fatal(err)
	}
	// restricted is isolation none: the router refuses it without allow_unisolated, as it
	// would refuse the same backend named in the spec.
	if _, err = m.Create(ctx, moat.Spec{SessionID: "s"}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Errorf("session backend of isolation none without allow_unisolated: %v", err)
	}
	if sb, err = m.Create(ctx, moat.Spec{SessionID: "s", Backend: "fake"}); err != nil || sb.Backend() != "fake" {
		t.Errorf("spec backend over session backend: %v, %v", sb, err)
	}
}

func TestSessionModeHost(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	m, _ := sessionManager(t, st, moat.Config{})
	_, err := m.PutSession(ctx, moat.Session{ID: "h", Mode: moat.SessionHost})
	if !errdefs.Is(err, errdefs.KindPermissionDenied) || !strings.Contains(err.Error(), "allow_unisolated") {
		t.Fatalf("mode host without the opt-in: %v", err)
	}
	on, _ := sessionManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{AllowUnisolated: true}})
	if _, err := on.PutSession(ctx, moat.Session{ID: "h", Mode: moat.SessionHost, Backend: "fake"}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("mode host on an isolating backend: %v", err)
	}
	s, err := on.PutSession(ctx, moat.Session{ID: "h", Mode: moat.SessionHost})
	if err != nil || s.Mode != moat.SessionHost {
		t.Fatalf("mode host with the opt-in: %+v %v", s, err)
	}
	sb, err := on.Create(ctx, moat.Spec{SessionID: "h"})
	if err != nil || sb.Backend() != "restricted" {
		t.Fatalf("sandbox of a host-mode session: %v %v", sb, err)
	}
	// The opt-in is checked again at create time: a config that turned it off refuses.
	if _, err := m.Create(ctx, moat.Spec{SessionID: "h"}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Errorf("create in a host-mode session after the opt-in was removed: %v", err)
	}
	// Isolated is the default and what an empty mode reads as.
	s, err = m.PutSession(ctx, moat.Session{ID: "i"})
	if err != nil || s.Mode != moat.SessionIsolated {
		t.Errorf("default mode: %+v %v", s, err)
	}
}

func TestSessionBadInput(t *testing.T) {
	ctx := context.Background()
	m, _ := sessionManager(t, memstore.New(), moat.Config{})
	long := strings.Repeat("x", moat.MaxSessionIDBytes+1)
	if _, err := m.PutSession(ctx, moat.Session{ID: strings.Repeat("é", moat.MaxSessionIDBytes/2)}); err != nil {
		t.Errorf("id of exactly %d bytes: %v", moat.MaxSessionIDBytes, err)
	}
	for _, tc := range []struct {
		what string
		s    moat.Session
		kind errdefs.Kind
	}{
		{"empty id", moat.Session{}, errdefs.KindInvalidArgument},
		{"control character", moat.Session{ID: "a\nb"}, errdefs.KindInvalidArgument},
		{"escape", moat.Session{ID: "a\x1b[31m"}, errdefs.KindInvalidArgument},
		{"DEL", moat.Session{ID: "a\x7f"}, errdefs.KindInvalidArgument},
		{"not UTF-8", moat.Session{ID: "a\xff"}, errdefs.KindInvalidArgument},
		{"too long", moat.Session{ID: long}, errdefs.KindInvalidArgument},
		{"dot dot", moat.Session{ID: ".."}, errdefs.KindInvalidArgument},
		{"unknown backend", moat.Session{ID: "s", Backend: "nope"}, errdefs.KindNotFound},
		{"bad mode", moat.Session{ID: "s", Mode: "sometimes"}, errdefs.KindInvalidArgument},
		{"negative memory", moat.Session{ID: "s", Limits: moat.Limits{MemoryBytes: -1}}, errdefs.KindInvalidArgument},
		{"tiny memory", moat.Session{ID: "s", Limits: moat.Limits{MemoryBytes: 1}}, errdefs.KindInvalidArgument},
		{"negative cpus", moat.Session{ID: "s", Limits: moat.Limits{CPUs: -1}}, errdefs.KindInvalidArgument},
		{"negative pids", moat.Session{ID: "s", Limits: moat.Limits{PIDs: -1}}, errdefs.KindInvalidArgument},
		{"bad network", moat.Session{ID: "s", Network: "bridge"}, errdefs.KindInvalidArgument},
		{"network host without allow_outbound", moat.Session{ID: "s", Network: moat.NetworkHost}, errdefs.KindPermissionDenied},
		{"bad env key", moat.Session{ID: "s", Env: map[string]string{"1A": "x"}}, errdefs.KindInvalidArgument},
		{"bad label key", moat.Session{ID: "s", Labels: map[string]string{"": "x"}}, errdefs.KindInvalidArgument},
		{"image with control characters", moat.Session{ID: "s", Image: "a\nb"}, errdefs.KindInvalidArgument},
	} {
		if _, err := m.PutSession(ctx, tc.s); errdefs.KindOf(err) != tc.kind {
			t.Errorf("%s: %v, want %s", tc.what, err, tc.kind)
		}
		if err := m.SetSessionBackend(ctx, tc.s.ID, "fake"); tc.s.ID != "s" && !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: set backend: %v", tc.what, err)
		}
	}
	if _, err := m.Create(ctx, moat.Spec{SessionID: "a\x00b"}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("create with a bad session id: %v", err)
	}
	if _, err := m.Create(ctx, moat.Spec{SessionID: long}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("create with a too long session id: %v", err)
	}
	// An image the backend cannot use: the backend's own error, with its kind.
	if _, err := m.PutSession(ctx, moat.Session{ID: "img", Image: fake.SnapshotImagePrefix + "nope"}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Create(ctx, moat.Spec{SessionID: "img"})
	if !errdefs.Is(err, errdefs.KindNotFound) || !strings.Contains(err.Error(), "fake: create: image") {
		t.Errorf("create with the session's unusable image: %v", err)
	}
}

// TestSessionLegacyBackendKey: an override saved by an older moat under
// "session/<id>/backend" is the session's backend, and writing the record takes it over.
func TestSessionLegacyBackendKey(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	if err := st.PutSetting(ctx, "session/old one/backend", []byte("fake")); err != nil {
		t.Fatal(err)
	}
	m, _ := sessionManager(t, st, moat.Config{Sandbox: moat.SandboxConfig{Backend: "restricted"}})
	if b, err := m.SessionBackend(ctx, "old one"); err != nil || b != "fake" {
		t.Fatalf("legacy override = %q, %v", b, err)
	}
	list, err := m.Sessions(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "old one" || list[0].Backend != "fake" {
		t.Fatalf("sessions = %+v, %v", list, err)
	}
	sb, err := m.Create(ctx, moat.Spec{SessionID: "old one"})
	if err != nil || sb.Backend() != "fake" {
		t.Fatalf("create in legacy session: %v %v", sb, err)
	}
	s, err := m.PatchSession(ctx, "old one", moat.SessionPatch{Image: ptr("img")})
	if err != nil || s.Backend != "fake" || s.Image != "img" {
		t.Fatalf("patch of a legacy session = %+v, %v", s, err)
	}
	if _, err := st.GetSetting(ctx, "session/old one/backend"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("legacy key after the record was written: %v", err)
	}
	if err := m.DeleteSession(ctx, "old one"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Session(ctx, "old one"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if err := m.DeleteSession(ctx, "old one"); err != nil {
		t.Errorf("delete twice: %v", err)
	}
}

func TestSessionPatchMergesConcurrently(t *testing.T) {
	ctx := context.Background()
	m, _ := sessionManager(t, memstore.New(), moat.Config{})
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := moat.SessionPatch{Env: map[string]*string{fmt.Sprintf("K%d", i): ptr("v")}}
			if i == 0 {
				p.Image = ptr("img")
			}
			if _, err := m.PatchSession(ctx, "c", p); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, err := m.Session(ctx, "c")
	if err != nil || len(s.Env) != n || s.Image != "img" {
		t.Fatalf("after %d concurrent patches: %+v, %v", n, s, err)
	}
	// Null removes a key, zero clears a field, an absent field stays.
	s, err = m.PatchSession(ctx, "c", moat.SessionPatch{Env: map[string]*string{"K0": nil}, Image: ptr("")})
	if err != nil || len(s.Env) != n-1 || s.Image != "" {
		t.Fatalf("patch with removals: %+v, %v", s, err)
	}
	// ClearSessionBackend keeps the rest.
	if err := m.SetSessionBackend(ctx, "c", "fake"); err != nil {
		t.Fatal(err)
	}
	if err := m.ClearSessionBackend(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	s, err = m.Session(ctx, "c")
	if err != nil || s.Backend != "" || len(s.Env) != n-1 {
		t.Fatalf("after clearing the backend: %+v, %v", s, err)
	}
	if _, err := m.SessionBackend(ctx, "c"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("cleared backend: %v", err)
	}
}

// TestDestroySessionSandboxes: exactly the session's sandboxes go, and a failure is
// reported for its sandbox while the others are destroyed.
func TestDestroySessionSandboxes(t *testing.T) {
	ctx := context.Background()
	m, fb := sessionManager(t, memstore.New(), moat.Config{})
	for range 3 {
		if _, err := m.Create(ctx, moat.Spec{SessionID: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	other, err := m.Create(ctx, moat.Spec{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	none, err := m.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	fb.SetFault(fake.OpDestroy, func(context.Context) error {
		if calls.Add(1) == 1 {
			return errdefs.Unavailablef("fake: destroy: injected")
		}
		return nil
	})
	td, err := m.DestroySessionSandboxes(ctx, "a")
	if !errdefs.Is(err, errdefs.KindUnavailable) || len(td.Failed) != 1 || len(td.Destroyed) != 2 ||
		td.Failed[0].Kind != errdefs.KindUnavailable || !strings.Contains(err.Error(), td.Failed[0].ID) {
		t.Fatalf("teardown with one failure = %+v, %v", td, err)
	}
	td, err = m.DestroySessionSandboxes(ctx, "a")
	if err != nil || len(td.Destroyed) != 1 || td.Destroyed[0] == "" {
		t.Fatalf("second teardown = %+v, %v", td, err)
	}
	left, _ := m.List(ctx, moat.ListFilter{})
	if len(left) != 2 {
		t.Fatalf("left %+v, want %s and %s", left, other.ID(), none.ID())
	}
	for _, in := range left {
		if in.ID != other.ID() && in.ID != none.ID() {
			t.Errorf("sandbox %s left", in.ID)
		}
	}
	td, err = m.DestroySessionSandboxes(ctx, "a")
	if err != nil || len(td.Destroyed) != 0 {
		t.Errorf("teardown of an empty session = %+v, %v", td, err)
	}
	if _, err := m.DestroySessionSandboxes(ctx, "bad\x00"); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("bad id: %v", err)
	}
}
