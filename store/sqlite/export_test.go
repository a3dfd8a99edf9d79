package sqlite

import "time"

// SetBusyTimeout shortens the busy timeout of stores opened afterwards; call the returned
// func to restore it.
func SetBusyTimeout(d time.Duration) (restore func()) {
	old := busyTimeout
	busyTimeout = d
	return func() { busyTimeout = old }
}
