package fake_test

import (
	"testing"

	"github.com/moatsh/moat/internal/testenv"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/fake"
)

func TestConformance(t *testing.T) {
	// One shared backend: the attach subtest attaches from a second New, as another
	// process would, and the fake's sandboxes live in its memory.
	b := fake.New()
	// Cleanups run after the suite's parallel subtests have finished.
	t.Cleanup(func() {
		if ids := b.IDs(); len(ids) != 0 {
			t.Errorf("sandboxes left behind after the suite: %v", ids)
		}
	})
	backendtest.Run(t, backendtest.Factory{
		New: func(testing.TB) backend.Backend { return b },
	})
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
