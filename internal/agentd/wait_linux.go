package agentd

import (
	"os"
	"syscall"
	"unsafe"
)

// sysPidfdOpen is pidfd_open(2); new syscalls share one number on every architecture.
const sysPidfdOpen = 434

const pPidfd = 3 // idtype P_PIDFD for waitid(2)

// awaitExit blocks until the process pid (our unreaped child) has exited, parked on the
// runtime's poller instead of an OS thread, so that a thousand running commands do not
// cost the agent a thousand threads: each would count against the sandbox's pids limit,
// and a Go program that cannot make a thread dies. Where pidfds are unavailable (old
// kernels, gVisor) it returns at once and the caller's Wait blocks a thread as usual.
func awaitExit(pid int) {
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		return
	}
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		_ = syscall.Close(int(fd))
		return
	}
	f := os.NewFile(fd, "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// A pidfd polls readable once the process exits. The callback checks for real (the
	// poller may wake spuriously) without reaping: Wait does that.
	_ = rc.Read(func(fd uintptr) bool {
		var info [128]byte
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPidfd, fd, uintptr(unsafe.Pointer(&info[0])),
			syscall.WEXITED|syscall.WNOHANG|syscall.WNOWAIT, 0, 0)
		if errno != 0 {
			return true // cannot tell: let Wait block
		}
		// siginfo_t.si_pid (offset 16 on every Linux ABI moat builds for) stays 0 while
		// the child runs.
		return *(*int32)(unsafe.Pointer(&info[16])) != 0
	})
}
