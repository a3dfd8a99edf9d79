package limits

import "syscall"

// SysProcAttr adds to a what starting a child inside the group needs (CLONE_INTO_CGROUP on
// cgroup v2), for runners other than Run (the PTY runner). Call the returned func after
// the child started. A nil Group adds nothing.
func (g *Group) SysProcAttr(a *syscall.SysProcAttr) (release func(), err error) {
	return g.sysProcAttr(a)
}
