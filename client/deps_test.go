package client_test

import (
	"strings"
	"testing"

	"github.com/moatsh/moat/internal/testenv"
)

// TestDependencies keeps the Go client light: a program that talks to moatd must not
// compile the manager, the router, the stores or any backend (and their SDKs).
func TestDependencies(t *testing.T) {
	deps := testenv.Deps(t, "./client")
	if deps[len(deps)-1] != "github.com/moatsh/moat/client" {
		t.Fatalf("go list -deps ./client ends with %s", deps[len(deps)-1])
	}
	for _, d := range deps {
		if d == "github.com/moatsh/moat" {
			t.Errorf("client depends on the manager package")
		}
		for _, f := range []string{"github.com/moatsh/moat/backend", "github.com/moatsh/moat/router",
			"github.com/moatsh/moat/store", "github.com/moatsh/moat/settings", "github.com/moatsh/moat/backends",
			"github.com/docker/", "modernc.org/", "github.com/jackc/"} {
			if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("client depends on %s", d)
			}
		}
	}
}
