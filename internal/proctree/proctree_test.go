package proctree

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTree starts a shell with a child in its group and one that left it with setsid,
// and returns the shell once both children are running.
func startTree(t *testing.T) *exec.Cmd {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("proctree reads /proc/<pid>/task/*/children, which only Linux has")
	}
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & setsid sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range Descendants(cmd.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); len(Descendants(cmd.Process.Pid)) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("tree never grew: %v", Descendants(cmd.Process.Pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd
}

func alive(pid int) bool {
	// A zombie still answers signal 0 until its parent reaps it.
	return syscall.Kill(pid, 0) == nil && !zombie(pid)
}

func TestKillTree(t *testing.T) {
	cmd := startTree(t)
	pids := Descendants(cmd.Process.Pid)
	Kill(cmd.Process.Pid, nil)
	_ = cmd.Wait()
	for deadline := time.Now().Add(10 * time.Second); ; {
		left := slices.DeleteFunc(slices.Clone(pids), func(pid int) bool { return !alive(pid) })
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still alive after Kill: %v of %v", left, pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKillRefusedRoot(t *testing.T) {
	cmd := startTree(t)
	asked := 0
	Kill(cmd.Process.Pid, func(int) bool { asked++; return false })
	if asked != 1 {
		t.Errorf("may was asked %d times, want once (for the root)", asked)
	}
	for _, pid := range Descendants(cmd.Process.Pid) {
		if !alive(pid) {
			t.Errorf("pid %d was signalled although the root was refused", pid)
		}
	}
}

// zombie reports whether pid has exited but not been reaped (state Z in /proc/pid/stat).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}
