package moattest

import (
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
)

func ptr[T any](v T) *T { return &v }

// sessionImage is an image the target's backend can use, to tell the session's from the
// backend's default.
func sessionImage(tg Target) string {
	if tg.Spec.Image != "" {
		return tg.Spec.Image
	}
	return "moattest:session"
}

// testSessionRecord: a session's settings are stored, listed, patched without losing
// fields, and every sandbox of the session starts from them; the /backend sub-resource is
// the record's backend.
func testSessionRecord(t *testing.T, tg Target) {
	ctx := ctxT(t)
	const id = "agent 2/é?%"
	img := sessionImage(tg)
	put, err := tg.API.PutSession(ctx, moat.Session{ID: id, Backend: tg.Backend, Image: img,
		Limits: moat.Limits{MemoryBytes: 64 << 20},
		Env:    map[string]string{"SESSION_VAR": "from-session"}, Labels: map[string]string{"moattest": "session"}})
	if err != nil {
		t.Fatal(err)
	}
	if put.ID != id || put.Mode != moat.SessionIsolated || put.UpdatedAt.IsZero() {
		t.Errorf("put = %+v", put)
	}
	got, err := tg.API.Session(ctx, id)
	if err != nil || got.Image != img || got.Limits.MemoryBytes != 64<<20 || got.Env["SESSION_VAR"] != "from-session" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if m, err := tg.Manager.Session(ctx, id); err != nil || m.Image != img {
		t.Errorf("manager's session %q = %+v, %v", id, m, err)
	}
	// A patch changes what it names and keeps the rest.
	p, err := tg.API.PatchSession(ctx, id, moat.SessionPatch{Limits: &moat.LimitsPatch{PIDs: ptr(int64(200))},
		Labels: map[string]*string{"extra": ptr("yes")}})
	if err != nil || p.Image != img || p.Limits.MemoryBytes != 64<<20 || p.Limits.PIDs != 200 ||
		p.Labels["moattest"] != "session" || p.Labels["extra"] != "yes" {
		t.Fatalf("patch = %+v, %v", p, err)
	}
	list, err := tg.API.Sessions(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Errorf("sessions = %+v, %v", list, err)
	}
	if b, err := tg.API.SessionBackend(ctx, id); err != nil || b != tg.Backend {
		t.Errorf("session backend = %q, %v", b, err)
	}

	sb := create(t, tg, moat.Spec{SessionID: id, Image: ""})
	info, err := sb.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Backend() != tg.Backend || info.Spec.Image != img || info.Spec.Limits.MemoryBytes != 64<<20 ||
		info.Spec.Limits.PIDs != 200 || info.Labels["moattest"] != "session" || info.SessionID != id {
		t.Errorf("sandbox of the session: backend %s spec %+v labels %v", sb.Backend(), info.Spec, info.Labels)
	}
	res, err := sb.Exec(ctx, moat.ExecRequest{Shell: "echo $SESSION_VAR"})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "from-session" {
		t.Errorf("session env in the sandbox: %q, %v", res.Stdout, err)
	}
	// The spec wins over the session.
	sb2 := create(t, tg, moat.Spec{SessionID: id, Limits: moat.Limits{MemoryBytes: 32 << 20}, Env: map[string]string{"SESSION_VAR": "spec"}})
	if info, err := sb2.Info(ctx); err != nil || info.Spec.Limits.MemoryBytes != 32<<20 || info.Spec.Env["SESSION_VAR"] != "spec" {
		t.Errorf("spec over session: %+v, %v", info.Spec, err)
	}

	// Clearing the backend keeps the other settings; deleting removes the session.
	if err := tg.API.ClearSessionBackend(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := tg.API.Session(ctx, id); err != nil || got.Backend != "" || got.Image != img {
		t.Errorf("after clearing the backend: %+v, %v", got, err)
	}
	if err := tg.API.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = tg.API.Session(ctx, id)
	wantKind(t, "session after delete", err, errdefs.KindNotFound)
	if err := tg.API.DeleteSession(ctx, id); err != nil {
		t.Errorf("delete twice: %v", err)
	}
}

// testSessionBadInput: every bad session is refused with a 4xx kind, the same in-process
// and over HTTP.
func testSessionBadInput(t *testing.T, tg Target) {
	ctx := ctxT(t)
	for _, tc := range []struct {
		what string
		s    moat.Session
		kind errdefs.Kind
	}{
		{"control character in the id", moat.Session{ID: "bad\nid"}, errdefs.KindInvalidArgument},
		{"id over the length", moat.Session{ID: strings.Repeat("s", moat.MaxSessionIDBytes+1)}, errdefs.KindInvalidArgument},
		{"mode host without allow_unisolated", moat.Session{ID: "s", Mode: moat.SessionHost}, errdefs.KindPermissionDenied},
		{"unknown mode", moat.Session{ID: "s", Mode: "half"}, errdefs.KindInvalidArgument},
		{"unknown backend", moat.Session{ID: "s", Backend: "no-such-backend"}, errdefs.KindNotFound},
		{"negative memory", moat.Session{ID: "s", Limits: moat.Limits{MemoryBytes: -1}}, errdefs.KindInvalidArgument},
		{"negative cpus", moat.Session{ID: "s", Limits: moat.Limits{CPUs: -2}}, errdefs.KindInvalidArgument},
		{"bad env name", moat.Session{ID: "s", Env: map[string]string{"A=B": "x"}}, errdefs.KindInvalidArgument},
	} {
		_, err := tg.API.PutSession(ctx, tc.s)
		wantKind(t, "put: "+tc.what, err, tc.kind)
	}
	_, err := tg.API.PatchSession(ctx, "s", moat.SessionPatch{Mode: ptr(moat.SessionHost)})
	wantKind(t, "patch to mode host", err, errdefs.KindPermissionDenied)
	_, err = tg.API.PatchSession(ctx, "s", moat.SessionPatch{Limits: &moat.LimitsPatch{PIDs: ptr(int64(-1))}})
	wantKind(t, "patch to negative pids", err, errdefs.KindInvalidArgument)
	_, err = tg.API.Session(ctx, "s")
	wantKind(t, "refused writes stored nothing", err, errdefs.KindNotFound)
	_, err = tg.API.Create(ctx, withBase(tg, moat.Spec{SessionID: "bad\x01id"}))
	wantKind(t, "create with a bad session id", err, errdefs.KindInvalidArgument)

	if tg.UnusableImage != "" {
		if _, err := tg.API.PutSession(ctx, moat.Session{ID: "img", Backend: tg.Backend, Image: tg.UnusableImage}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tg.API.DeleteSession(ctxT(t), "img") })
		sb, err := tg.API.Create(ctx, moat.Spec{SessionID: "img"})
		if err == nil {
			_ = sb.Destroy(ctx)
			t.Fatalf("create with the session's unusable image %q succeeded", tg.UnusableImage)
		}
		if k := errdefs.KindOf(err); k == errdefs.KindUnknown || !strings.Contains(err.Error(), tg.Backend+":") {
			t.Errorf("unusable image: %v (kind %s); want the backend's error with its kind", err, k)
		}
		// The failed create leaves an error record; it is the session's, and tearing the
		// session down removes it.
		if _, err := tg.API.DestroySessionSandboxes(ctx, "img"); err != nil {
			t.Errorf("teardown after the failed create: %v", err)
		}
	}
}

// testSessionTeardown: destroying a session's sandboxes destroys exactly those, and says
// which.
func testSessionTeardown(t *testing.T, tg Target) {
	ctx := ctxT(t)
	a1 := create(t, tg, moat.Spec{SessionID: "teardown-a", Backend: tg.Backend})
	a2 := create(t, tg, moat.Spec{SessionID: "teardown-a", Backend: tg.Backend})
	b := create(t, tg, moat.Spec{SessionID: "teardown-b", Backend: tg.Backend})
	loose := create(t, tg, moat.Spec{})
	td, err := tg.API.DestroySessionSandboxes(ctx, "teardown-a")
	if err != nil || len(td.Destroyed) != 2 || len(td.Failed) != 0 || td.Session != "teardown-a" {
		t.Fatalf("teardown = %+v, %v", td, err)
	}
	want := map[string]bool{a1.ID(): true, a2.ID(): true}
	for _, id := range td.Destroyed {
		if !want[id] {
			t.Errorf("destroyed %s, not a sandbox of the session", id)
		}
	}
	for _, h := range []string{a1.ID(), a2.ID()} {
		_, err := tg.API.Get(ctx, h)
		wantKind(t, "a destroyed session sandbox", err, errdefs.KindNotFound)
	}
	for _, h := range []string{b.ID(), loose.ID()} {
		if _, err := tg.API.Get(ctx, h); err != nil {
			t.Errorf("sandbox %s of another session: %v", h, err)
		}
	}
	td, err = tg.API.DestroySessionSandboxes(ctx, "teardown-a")
	if err != nil || len(td.Destroyed) != 0 {
		t.Errorf("second teardown = %+v, %v", td, err)
	}
	_, err = tg.API.DestroySessionSandboxes(ctx, "bad\nid")
	wantKind(t, "teardown of a bad session id", err, errdefs.KindInvalidArgument)
}
