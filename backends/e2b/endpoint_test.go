package e2b_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/e2b"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
)

// handleEndpoint returns the api_url and sandbox_url a handle records.
func handleEndpoint(t *testing.T, h backend.Handle) (apiURL, sandboxURL string) {
	t.Helper()
	var st struct {
		APIURL     string `json:"api_url"`
		SandboxURL string `json:"sandbox_url"`
	}
	if err := json.Unmarshal(h.State, &st); err != nil {
		t.Fatal(err)
	}
	return st.APIURL, st.SandboxURL
}

// TestAttachKeepsCreationEndpoint: a sandbox created on API A (control plane and envd)
// keeps talking to A when its handle is attached by a backend configured for B (as after
// api_url/sandbox_url changed, or in another process): exec, files, status, pause/resume
// and destroy reach A, and B sees none of them.
func TestAttachKeepsCreationEndpoint(t *testing.T) {
	// Files travel through commands, so WriteFile's chmod sees the file it wrote.
	a := newHarness(t, providertest.ExecFiles(providertest.HostRunner(t)), "", e2bfake.Options{})
	b := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{}) // the same token
	inst := a.create(t)
	id := sandboxID(t, inst)
	h := providertest.RoundTrip(t, inst.Handle())
	if api, sbx := handleEndpoint(t, h); api != a.srv.URL || sbx != a.srv.URL {
		t.Errorf("handle endpoint = %q, %q; want A's %q", api, sbx, a.srv.URL)
	}
	if strings.Contains(string(h.State), testToken) {
		t.Fatalf("handle state %s holds the key", h.State)
	}

	beforeB := b.fake.TotalRequests()
	ctx := testCtx(t)
	attached, err := b.b.Attach(ctx, h)
	if err != nil {
		t.Fatalf("Attach through a backend configured for another API: %v", err)
	}
	if code, out, _, err := run(ctx, attached, nil, "echo", "on-a"); err != nil || code != 0 || out != "on-a\n" {
		t.Fatalf("exec = %d %q %v", code, out, err)
	}
	ft := attached.(backend.FileTransferer)
	p := filepath.Join(t.TempDir(), "f")
	if err := ft.WriteFile(ctx, p, strings.NewReader("data"), 0o644); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	var buf bytes.Buffer
	if err := ft.ReadFile(ctx, p, &buf); err != nil || buf.String() != "data" {
		t.Fatalf("ReadFile = %q, %v", buf.String(), err)
	}
	if st, err := attached.Status(ctx); err != nil || st != backend.StatusRunning {
		t.Fatalf("Status = %q, %v", st, err)
	}
	pz := attached.(backend.Pauser)
	if err := pz.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := pz.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if api, sbx := handleEndpoint(t, attached.Handle()); api != a.srv.URL || sbx != a.srv.URL {
		t.Errorf("attached handle endpoint = %q, %q; want A's", api, sbx)
	}
	again, err := b.b.Attach(ctx, providertest.RoundTrip(t, attached.Handle()))
	if err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	if err := again.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	for _, s := range a.fake.Sandboxes() {
		if s == id {
			t.Errorf("A still has sandbox %s after Destroy", id)
		}
	}
	if n := b.fake.TotalRequests() - beforeB; n != 0 {
		t.Errorf("B received %d requests for a sandbox of A; want none", n)
	}
}

// TestListedHandleKeepsEndpoint: List's handles name the endpoint they were listed from.
func TestListedHandleKeepsEndpoint(t *testing.T) {
	a := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	b := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	a.create(t)
	got, err := a.b.List(testCtx(t))
	if err != nil || len(got) != 1 {
		t.Fatalf("List = %+v, %v", got, err)
	}
	if api, sbx := handleEndpoint(t, got[0].Handle); api != a.srv.URL || sbx != a.srv.URL {
		t.Errorf("listed handle endpoint = %q, %q; want A's", api, sbx)
	}
	beforeB := b.fake.TotalRequests()
	inst, err := b.b.Attach(testCtx(t), providertest.RoundTrip(t, got[0].Handle))
	if err != nil {
		t.Fatalf("Attach(listed on A) through B: %v", err)
	}
	if code, _, _, err := run(testCtx(t), inst, nil, "true"); err != nil || code != 0 {
		t.Fatalf("exec = %d %v", code, err)
	}
	if n := b.fake.TotalRequests() - beforeB; n != 0 {
		t.Errorf("B received %d requests; want none", n)
	}
}

// TestOldHandleUsesConfiguredEndpoint: a handle written before the endpoint was recorded
// (no api_url, no sandbox_url) attaches through the configured endpoint.
func TestOldHandleUsesConfiguredEndpoint(t *testing.T) {
	a := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	b := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	inst := a.create(t)
	var st map[string]any
	if err := json.Unmarshal(inst.Handle().State, &st); err != nil {
		t.Fatal(err)
	}
	delete(st, "api_url")
	delete(st, "sandbox_url")
	raw, _ := json.Marshal(st)
	old := backend.Handle{Backend: e2b.Name, Version: 1, State: raw}

	attached, err := newClient(t, a.srv.URL, testToken).Attach(testCtx(t), providertest.RoundTrip(t, old))
	if err != nil {
		t.Fatalf("Attach(old handle) on its API: %v", err)
	}
	if code, out, _, err := run(testCtx(t), attached, nil, "echo", "old"); err != nil || code != 0 || out != "old\n" {
		t.Fatalf("exec = %d %q %v", code, out, err)
	}
	if api, sbx := handleEndpoint(t, attached.Handle()); api != a.srv.URL || sbx != a.srv.URL {
		t.Errorf("re-written handle endpoint = %q, %q; want the configured one", api, sbx)
	}
	beforeB := b.fake.TotalRequests()
	if _, err := b.b.Attach(testCtx(t), old); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("Attach(old handle) on another API = %v; want NotFound", err)
	}
	if b.fake.TotalRequests() == beforeB {
		t.Error("the old handle did not go to the configured API")
	}
}

// TestBadHandleEndpoint: an endpoint that is not an http(s) URL is a malformed handle.
func TestBadHandleEndpoint(t *testing.T) {
	h := newHarness(t, providertest.HostRunner(t), "", e2bfake.Options{})
	before := h.fake.TotalRequests()
	for _, st := range []map[string]string{
		{"api_url": "ftp://x"},
		{"api_url": "not a url"},
		{"api_url": h.srv.URL, "sandbox_url": "http://"},
	} {
		st["sandbox_id"] = "sb-1"
		raw, _ := json.Marshal(st)
		_, err := h.b.Attach(context.Background(), backend.Handle{Backend: e2b.Name, Version: 1, State: raw})
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("state %s: %v; want InvalidArgument", raw, err)
		}
	}
	if n := h.fake.TotalRequests() - before; n != 0 {
		t.Errorf("%d requests for malformed handles; want none", n)
	}
}
