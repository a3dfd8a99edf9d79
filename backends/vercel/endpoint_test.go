package vercel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatsh/moat/backends/internal/providertest"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// TestAttachKeepsCreationEndpoint: a sandbox created on API A keeps talking to A when its
// handle is attached by a backend configured for API B (as after api_url changed, or in
// another process): exec, files, status and destroy reach A, and B sees none of them.
func TestAttachKeepsCreationEndpoint(t *testing.T) {
	a, b := newEnv(t), newEnv(t) // two fake APIs, the same token
	inst := a.create(t)
	h := providertest.RoundTrip(t, inst.Handle())
	if got, want := providertest.HandleAPIURL(t, h), a.ts.URL+"/api"; got != want {
		t.Errorf("handle api_url = %q; want %q", got, want)
	}
	if strings.Contains(string(h.State), testToken) {
		t.Fatalf("handle state %s holds the token", h.State)
	}

	beforeB := b.srv.Requests()
	attached, err := b.b.Attach(tctx(t), h)
	if err != nil {
		t.Fatalf("Attach through a backend configured for another API: %v", err)
	}
	if code, out, _, err := run(tctx(t), attached, nil, "echo", "on-a"); err != nil || code != 0 || out != "on-a\n" {
		t.Fatalf("exec = %d %q %v", code, out, err)
	}
	ft := attached.(backend.FileTransferer)
	if err := ft.WriteFile(tctx(t), "/w/f", strings.NewReader("data"), 0o644); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	var buf bytes.Buffer
	if err := ft.ReadFile(tctx(t), "/w/f", &buf); err != nil || buf.String() != "data" {
		t.Fatalf("ReadFile = %q, %v", buf.String(), err)
	}
	if st, err := attached.Status(tctx(t)); err != nil || st != backend.StatusRunning {
		t.Fatalf("Status = %q, %v", st, err)
	}
	if got := providertest.HandleAPIURL(t, attached.Handle()); got != a.ts.URL+"/api" {
		t.Errorf("attached handle api_url = %q; want A's", got)
	}
	// Attaching the attached instance's handle again (another restart) still finds A.
	again, err := b.b.Attach(tctx(t), providertest.RoundTrip(t, attached.Handle()))
	if err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	if err := again.Destroy(tctx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if names := a.srv.SandboxNames(); len(names) != 0 {
		t.Errorf("A still has %v after Destroy", names)
	}
	if n := b.srv.Requests() - beforeB; n != 0 {
		t.Errorf("B received %d requests for a sandbox of A; want none", n)
	}
}

// TestListedHandleKeepsEndpoint: List's handles name the API they were listed from.
func TestListedHandleKeepsEndpoint(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	a.create(t)
	got, err := a.b.List(tctx(t))
	if err != nil || len(got) != 1 {
		t.Fatalf("List = %+v, %v", got, err)
	}
	if u := providertest.HandleAPIURL(t, got[0].Handle); u != a.ts.URL+"/api" {
		t.Errorf("listed handle api_url = %q; want A's", u)
	}
	beforeB := b.srv.Requests()
	inst, err := b.b.Attach(tctx(t), providertest.RoundTrip(t, got[0].Handle))
	if err != nil {
		t.Fatalf("Attach(listed on A) through B: %v", err)
	}
	if code, _, _, err := run(tctx(t), inst, nil, "true"); err != nil || code != 0 {
		t.Fatalf("exec = %d %v", code, err)
	}
	if n := b.srv.Requests() - beforeB; n != 0 {
		t.Errorf("B received %d requests; want none", n)
	}
}

// TestOldHandleUsesConfiguredEndpoint: a handle written before the endpoint was recorded
// (no api_url) attaches through the configured API.
func TestOldHandleUsesConfiguredEndpoint(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	inst := a.create(t)
	var st map[string]any
	if err := json.Unmarshal(inst.Handle().State, &st); err != nil {
		t.Fatal(err)
	}
	delete(st, "api_url")
	raw, _ := json.Marshal(st)
	old := backend.Handle{Backend: "vercel", Version: 1, State: raw}

	// Configured for A (a fresh backend, as after a restart): found there.
	fresh := newBackend(t, a.ts.URL+"/api", testToken)
	attached, err := fresh.Attach(tctx(t), providertest.RoundTrip(t, old))
	if err != nil {
		t.Fatalf("Attach(old handle) on its API: %v", err)
	}
	if code, out, _, err := run(tctx(t), attached, nil, "echo", "old"); err != nil || code != 0 || out != "old\n" {
		t.Fatalf("exec = %d %q %v", code, out, err)
	}
	if got := providertest.HandleAPIURL(t, attached.Handle()); got != a.ts.URL+"/api" {
		t.Errorf("re-written handle api_url = %q; want the configured one", got)
	}
	// Configured for B: the old handle can only mean B, where there is no such sandbox.
	beforeB := b.srv.Requests()
	if _, err := b.b.Attach(tctx(t), old); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach(old handle) on another API = %v; want NotFound", err)
	}
	if b.srv.Requests() == beforeB {
		t.Error("the old handle did not go to the configured API")
	}
}

// TestBadHandleEndpoint: an api_url that is not an http(s) URL is a malformed handle.
func TestBadHandleEndpoint(t *testing.T) {
	e := newEnv(t)
	before := e.srv.Requests()
	for _, u := range []string{"ftp://x/api", "not a url", "http://"} {
		raw, _ := json.Marshal(map[string]string{"name": "moat-x", "session_id": "se_1", "api_url": u})
		_, err := e.b.Attach(context.Background(), backend.Handle{Backend: "vercel", Version: 1, State: raw})
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("api_url %q: %v; want InvalidArgument", u, err)
		}
	}
	if n := e.srv.Requests() - before; n != 0 {
		t.Errorf("%d requests for malformed handles; want none", n)
	}
}
