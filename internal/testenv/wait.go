package testenv

import (
	"testing"
	"time"
)

// Returned waits up to d for the error a call sends on done and returns it, failing t
// when none comes in time: what names the call that hangs.
func Returned(t testing.TB, done <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
		return nil
	}
}
