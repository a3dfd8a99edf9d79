package bwrap

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every goroutine has
// an owner that Close (or the end of a call) cancels and waits for.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
