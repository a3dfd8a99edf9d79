//go:build !linux

package agentd

// awaitExit has nothing to wait on without pidfds; Wait blocks a thread.
func awaitExit(int) {}
