package agent

import "time"

// SetKillWait shortens killWait for a test and returns the function restoring it.
func SetKillWait(d time.Duration) func() {
	old := killWait
	killWait = d
	return func() { killWait = old }
}
