package httpapi_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/bwrap"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/store/memstore"
)

// hostPathEnv is a manager whose backends declare host path fields, served over HTTP.
type hostPathEnv struct {
	m      *moat.Manager
	fake   *fake.Backend
	remote *client.Client
}

func newHostPathEnv(t *testing.T, allowed []string, cfg moat.Config, opts ...moat.Option) *hostPathEnv {
	t.Helper()
	fb := fake.New(fake.WithDescriptor(backend.Descriptor{Name: "fake", Isolation: backend.IsolationContainer,
		HostPaths: []string{"image", "options.mounts.source", "options.kernel"}}))
	cfg.Storage, cfg.Home = memstore.New(), t.TempDir()
	cfg.Security.AllowedHostPaths = allowed
	if cfg.Sandbox.Backend == "" {
		cfg.Sandbox.Backend = "fake"
	}
	m, err := moat.Open(context.Background(), cfg,
		append([]moat.Option{moat.WithoutRegistered(), moat.WithBackend("fake", fb)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	c := serve(t, m, httpapi.Options{})
	return &hostPathEnv{m: m, fake: fb, remote: c}
}

// records counts every record, destroyed and failed ones included.
func (e *hostPathEnv) records(t *testing.T) int {
	t.Helper()
	all, err := e.m.List(context.Background(), moat.ListFilter{IncludeDestroyed: true})
	if err != nil {
		t.Fatal(err)
	}
	return len(all)
}

// TestHostPathsFromTheAPI: every field a backend declares a host path is permission_denied
// from an API caller (nothing recorded, nothing created), allowed under an operator-listed
// root (after resolving ".." and symlinks), and always allowed in-process.
func TestHostPathsFromTheAPI(t *testing.T) {
	ctx := context.Background()
	allowed := t.TempDir()
	outside := t.TempDir()
	inside := filepath.Join(allowed, "img")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	escape := filepath.Join(allowed, "escape")
	if err := os.Symlink(outside, escape); err != nil {
		t.Fatal(err)
	}
	fields := map[string]func(p string) moat.Spec{
		"image":  func(p string) moat.Spec { return moat.Spec{Image: p} },
		"kernel": func(p string) moat.Spec { return moat.Spec{Options: json.RawMessage(`{"kernel":` + quote(p) + `}`)} },
		"mounts": func(p string) moat.Spec {
			return moat.Spec{Options: json.RawMessage(`{"mounts":[{"target":"/a"},{"source":` + quote(p) + `}]}`)}
		},
	}
	for name, spec := range fields {
		t.Run(name, func(t *testing.T) {
			e := newHostPathEnv(t, []string{allowed}, moat.Config{})
			for _, p := range []string{outside, "/", filepath.Join(allowed, "..", filepath.Base(outside)), escape,
				filepath.Join(escape, "sub"), filepath.Join(outside, "does-not-exist")} {
				if name == "mounts" && p == "/" {
					continue
				}
				_, err := e.remote.Create(ctx, spec(p))
				if !errdefs.Is(err, errdefs.KindPermissionDenied) {
					t.Errorf("create over HTTP with %s %q: %v; want permission_denied", name, p, err)
				}
			}
			if n := e.records(t); n != 0 {
				t.Errorf("refused creates left %d records", n)
			}
			if ids := e.fake.IDs(); len(ids) != 0 {
				t.Errorf("refused creates left sandboxes %v", ids)
			}
			// Under the allowed root the check passes (the fake refuses options of its own).
			_, err := e.remote.Create(ctx, spec(inside))
			if errdefs.Is(err, errdefs.KindPermissionDenied) || (name == "image" && err != nil) {
				t.Errorf("create over HTTP with %s under the allowed root: %v", name, err)
			}
			// In-process the operator names any host path.
			sb, err := e.m.Create(ctx, spec(outside))
			if errdefs.Is(err, errdefs.KindPermissionDenied) || (name == "image" && err != nil) {
				t.Errorf("in-process create with %s %q: %v", name, outside, err)
			}
			if sb != nil {
				_ = sb.Destroy(ctx)
			}
		})
	}
	t.Run("NoRoots", func(t *testing.T) {
		e := newHostPathEnv(t, nil, moat.Config{})
		if _, err := e.remote.Create(ctx, moat.Spec{Image: inside}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
			t.Fatalf("create over HTTP without allowed roots: %v; want permission_denied", err)
		}
	})
	t.Run("Canonical", func(t *testing.T) {
		// The backend gets the resolved path the check saw, not the caller's spelling.
		link := filepath.Join(allowed, "link")
		if err := os.Symlink(inside, link); err != nil {
			t.Fatal(err)
		}
		e := newHostPathEnv(t, []string{allowed}, moat.Config{})
		sb, err := e.remote.Create(ctx, moat.Spec{Image: link})
		if err != nil {
			t.Fatal(err)
		}
		info, err := sb.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := filepath.EvalSymlinks(inside); info.Spec.Image != want {
			t.Fatalf("recorded image %q; want the resolved %q", info.Spec.Image, want)
		}
	})
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestBwrapImageFromTheAPI: the real bwrap backend's image (a host directory or tarball)
// is refused from the API, and works under an allowed root.
func TestBwrapImageFromTheAPI(t *testing.T) {
	ctx := context.Background()
	secret := t.TempDir()
	if err := os.WriteFile(filepath.Join(secret, "moat.toml"), []byte("tokens = [\"x\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	allowed := t.TempDir()
	cfg := moat.Config{Sandbox: moat.SandboxConfig{Backend: "bwrap"}}
	e := newHostPathEnv(t, []string{allowed}, cfg, moat.WithFactory("bwrap", bwrap.New))
	for _, img := range []string{secret, "/", filepath.Join(allowed, "..", filepath.Base(secret))} {
		if _, err := e.remote.Create(ctx, moat.Spec{Backend: "bwrap", Image: img}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
			t.Errorf("bwrap image %q over HTTP: %v; want permission_denied", img, err)
		}
	}
	if n := e.records(t); n != 0 {
		t.Errorf("refused creates left %d records", n)
	}
	tarball, reason := testenv.RootfsTar()
	if tarball == "" {
		t.Skip(reason)
	}
	if !bwrapUsable(ctx, e.m) {
		t.Skip("bwrap unavailable here")
	}
	img := filepath.Join(allowed, "rootfs.tar")
	if err := os.Symlink(tarball, img); err != nil {
		t.Fatal(err)
	}
	// The symlink leads outside the allowed root: refused.
	if _, err := e.remote.Create(ctx, moat.Spec{Backend: "bwrap", Image: img}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Fatalf("bwrap image through a symlink out of the root: %v; want permission_denied", err)
	}
	data, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(img)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sb, err := e.remote.Create(ctx, moat.Spec{Backend: "bwrap", Image: img})
	if err != nil {
		t.Fatalf("bwrap image under the allowed root: %v", err)
	}
	_ = sb.Destroy(ctx)
}

func bwrapUsable(ctx context.Context, m *moat.Manager) bool {
	for _, b := range m.Backends(ctx).Backends {
		if b.Name == "bwrap" {
			return b.Health.State != backend.Unavailable
		}
	}
	return false
}

// A session's image reaches every later create of the session, the operator's in-process
// creates too, so a host path in it is judged when an API caller writes it.
func TestSessionImageHostPathFromTheAPI(t *testing.T) {
	ctx := context.Background()
	allowed, outside := t.TempDir(), t.TempDir()
	e := newHostPathEnv(t, []string{allowed}, moat.Config{})
	if _, err := e.remote.PutSession(ctx, moat.Session{ID: "s", Image: outside}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Fatalf("PUT session with a host path outside the roots: %v; want permission_denied", err)
	}
	if _, err := e.m.Session(ctx, "s"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("a refused session was stored: %v", err)
	}
	if _, err := e.remote.PutSession(ctx, moat.Session{ID: "s", Image: allowed}); err != nil {
		t.Errorf("PUT session with a host path under an allowed root: %v", err)
	}
	if _, err := e.m.PutSession(ctx, moat.Session{ID: "op", Image: outside}); err != nil {
		t.Errorf("the operator in-process: %v", err)
	}
}
