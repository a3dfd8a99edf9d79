package moattest_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"

	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/moattest"
)

func TestLocal(t *testing.T) {
	moattest.Run(t, func(t *testing.T) moattest.Target { return moattest.Local(t) })
}

func TestOverHTTP(t *testing.T) {
	moattest.Run(t, func(t *testing.T) moattest.Target {
		return moattest.OverHTTP(t, httpapi.Options{Tokens: []string{"suite-token"}})
	})
}

// TestSessionTeardownPartialFailure: a sandbox the backend fails to destroy is reported
// with its kind, in-process and over HTTP alike, and the others are destroyed.
func TestSessionTeardownPartialFailure(t *testing.T) {
	for _, remote := range []bool{false, true} {
		env := moattest.NewManager(t)
		tg := env.Target()
		if remote {
			tg = moattest.Serve(t, tg, httpapi.Options{})
		}
		ctx := context.Background()
		for range 3 {
			if _, err := tg.API.Create(ctx, moat.Spec{SessionID: "p"}); err != nil {
				t.Fatal(err)
			}
		}
		var n atomic.Int32
		env.Fake.SetFault(fake.OpDestroy, func(context.Context) error {
			if n.Add(1) == 1 {
				return errdefs.Unavailablef("fake: destroy: injected")
			}
			return nil
		})
		td, err := tg.API.DestroySessionSandboxes(ctx, "p")
		if !errdefs.Is(err, errdefs.KindUnavailable) || len(td.Destroyed) != 2 || len(td.Failed) != 1 ||
			td.Failed[0].Kind != errdefs.KindUnavailable || !strings.Contains(err.Error(), td.Failed[0].ID) {
			t.Errorf("remote=%v: teardown = %+v, %v", remote, td, err)
		}
		if td, err := tg.API.DestroySessionSandboxes(ctx, "p"); err != nil || len(td.Destroyed) != 1 {
			t.Errorf("remote=%v: second teardown = %+v, %v", remote, td, err)
		}
	}
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
