package daytona_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/daytona"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
)

// TestAttachKeepsCreationEndpoint: a sandbox created on API A keeps talking to A when its
// handle is attached by a backend configured for API B (as after api_url changed, or in
// another process): exec, files, status and destroy reach A, and B sees none of them.
func TestAttachKeepsCreationEndpoint(t *testing.T) {
	_, urlA := fakeServer(t, providertest.HostRunner(t))
	fakeB, urlB := fakeServer(t, providertest.HostRunner(t)) // the same token
	inst := newSandbox(t, client(t, urlA, testToken))
	h := providertest.RoundTrip(t, inst.Handle())
	if got := providertest.HandleAPIURL(t, h); got != urlA {
		t.Errorf("handle api_url = %q; want %q", got, urlA)
	}
	if strings.Contains(string(h.State), testToken) {
		t.Fatalf("handle state %s holds the token", h.State)
	}

	b := client(t, urlB, testToken)
	beforeB := fakeB.Requests()
	attached, err := b.Attach(testCtx(t), h)
	if err != nil {
		t.Fatalf("Attach through a backend configured for another API: %v", err)
	}
	if code, out, _, err := run(testCtx(t), attached, "echo", "on-a"); err != nil || code != 0 || out != "on-a\n" {
		t.Fatalf("exec = %d %q %v", code, out, err)
	}
	ft := attached.(backend.FileTransferer)
	p := filepath.Join(t.TempDir(), "f")
	if err := ft.WriteFile(testCtx(t), p, strings.NewReader("data"), 0o644); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	var buf bytes.Buffer
	if err := ft.ReadFile(testCtx(t), p, &buf); err != nil || buf.String() != "data" {
		t.Fatalf("ReadFile = %q, %v", buf.String(), err)
	}
	if st, err := attached.Status(testCtx(t)); err != nil || st != backend.StatusRunning {
		t.Fatalf("Status = %q, %v", st, err)
	}
	if u, err := attached.(backend.PortExposer).ExposePort(testCtx(t), 8080); err != nil || u == "" {
		t.Fatalf("ExposePort = %q, %v", u, err)
	}
	if got := providertest.HandleAPIURL(t, attached.Handle()); got != urlA {
		t.Errorf("attached handle api_url = %q; want A's", got)
	}
	again, err := b.Attach(testCtx(t), providertest.RoundTrip(t, attached.Handle()))
	if err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	if err := again.(backend.Stopper).Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := again.(backend.Stopper).Start(testCtx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := again.Destroy(testCtx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if st, err := inst.Status(testCtx(t)); err != nil || st != backend.StatusGone {
		t.Errorf("Status on A after Destroy = %q, %v; want gone", st, err)
	}
	if n := fakeB.Requests() - beforeB; n != 0 {
		t.Errorf("B received %d requests for a sandbox of A; want none", n)
	}
	if ids := fakeB.SandboxIDs(); len(ids) != 0 {
		t.Errorf("B has sandboxes %v", ids)
	}
}

// TestListedHandleKeepsEndpoint: List's handles name the API they were listed from.
func TestListedHandleKeepsEndpoint(t *testing.T) {
	_, urlA := fakeServer(t, providertest.HostRunner(t))
	fakeB, urlB := fakeServer(t, providertest.HostRunner(t))
	a := client(t, urlA, testToken)
	newSandbox(t, a)
	got, err := a.List(testCtx(t))
	if err != nil || len(got) != 1 {
		t.Fatalf("List = %+v, %v", got, err)
	}
	if u := providertest.HandleAPIURL(t, got[0].Handle); u != urlA {
		t.Errorf("listed handle api_url = %q; want A's", u)
	}
	beforeB := fakeB.Requests()
	inst, err := client(t, urlB, testToken).Attach(testCtx(t), providertest.RoundTrip(t, got[0].Handle))
	if err != nil {
		t.Fatalf("Attach(listed on A) through B: %v", err)
	}
	if code, _, _, err := run(testCtx(t), inst, "true"); err != nil || code != 0 {
		t.Fatalf("exec = %d %v", code, err)
	}
	if n := fakeB.Requests() - beforeB; n != 0 {
		t.Errorf("B received %d requests; want none", n)
	}
}

// TestOldHandleUsesConfiguredEndpoint: a handle written before the endpoint was recorded
// (no api_url) attaches through the configured API.
func TestOldHandleUsesConfiguredEndpoint(t *testing.T) {
	_, urlA := fakeServer(t, providertest.HostRunner(t))
	fakeB, urlB := fakeServer(t, providertest.HostRunner(t))
	inst := newSandbox(t, client(t, urlA, testToken))
	var st map[string]any
	if err := json.Unmarshal(inst.Handle().State, &st); err != nil {
		t.Fatal(err)
	}
	delete(st, "api_url")
	raw, _ := json.Marshal(st)
	old := backend.Handle{Backend: daytona.Name, Version: 1, State: raw}

	attached, err := client(t, urlA, testToken).Attach(testCtx(t), providertest.RoundTrip(t, old))
	if err != nil {
		t.Fatalf("Attach(old handle) on its API: %v", err)
	}
	if code, out, _, err := run(testCtx(t), attached, "echo", "old"); err != nil || code != 0 || out != "old\n" {
		t.Fatalf("exec = %d %q %v", code, out, err)
	}
	if got := providertest.HandleAPIURL(t, attached.Handle()); got != urlA {
		t.Errorf("re-written handle api_url = %q; want the configured one", got)
	}
	beforeB := fakeB.Requests()
	if _, err := client(t, urlB, testToken).Attach(testCtx(t), old); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach(old handle) on another API = %v; want NotFound", err)
	}
	if fakeB.Requests() == beforeB {
		t.Error("the old handle did not go to the configured API")
	}
}

// TestBadHandleEndpoint: an api_url that is not an http(s) URL is a malformed handle.
func TestBadHandleEndpoint(t *testing.T) {
	fake, apiURL := fakeServer(t, providertest.HostRunner(t))
	b := client(t, apiURL, testToken)
	before := fake.Requests()
	for _, u := range []string{"ftp://x/api", "not a url", "http://"} {
		raw, _ := json.Marshal(map[string]string{"id": "sb-1", "api_url": u})
		_, err := b.Attach(context.Background(), backend.Handle{Backend: daytona.Name, Version: 1, State: raw})
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("api_url %q: %v; want InvalidArgument", u, err)
		}
	}
	if n := fake.Requests() - before; n != 0 {
		t.Errorf("%d requests for malformed handles; want none", n)
	}
}
