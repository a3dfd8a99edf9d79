package dockersuite_test

import (
	"context"
	"testing"
	"time"

	"github.com/moatsh/moat/client/local"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	_ "github.com/moatsh/moat/backends/docker"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/moattest"
	"github.com/moatsh/moat/store/memstore"
)

// dockerTarget is a Manager on the real Docker backend with the busybox test image; it
// skips (or, under MOAT_TEST_REQUIRE, fails) when Docker is not usable here.
func dockerTarget(t *testing.T) moattest.Target {
	f, ok := backend.Lookup("docker")
	if !ok {
		t.Fatal("docker backend not registered")
	}
	b, err := f(backend.Config{Decode: func(any) error { return nil }, StateDir: t.TempDir(),
		Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h := b.(backend.Prober).Probe(ctx); h.State == backend.Unavailable {
		testenv.Require(t, "docker", h.Reason)
	}
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{Backend: "docker"}}, moat.WithoutRegistered(), moat.WithBackend("docker", b))
	if err != nil {
		t.Fatal(err)
	}
	return moattest.Target{
		API: local.New(m), Manager: m, Backend: "docker",
		Spec:     moat.Spec{Image: testenv.DockerImage()},
		Block:    []string{"sh", "-c", "echo started; exec sleep 600"},
		Terminal: true, // docker implements backend.PTYExecer
	}
}

func TestDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("docker suite in -short mode")
	}
	t.Run("Local", func(t *testing.T) { moattest.Run(t, dockerTarget) })
	t.Run("OverHTTP", func(t *testing.T) {
		moattest.Run(t, func(t *testing.T) moattest.Target {
			return moattest.Serve(t, dockerTarget(t), httpapi.Options{})
		})
	})
}
