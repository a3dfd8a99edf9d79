package agentd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killTree SIGKILLs a process, its process group and every descendant, including ones
// that left the group with setsid. It stops the tree first (repeating until no new
// descendant appears) so nothing forks away while it is collected.
func killTree(root int) {
	seen := map[int]bool{}
	for range 10 {
		grew := false
		for _, pid := range descendants(root) {
			if !seen[pid] {
				seen[pid] = true
				grew = true
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
		if !grew {
			break
		}
	}
	_ = syscall.Kill(-root, syscall.SIGKILL)
	for pid := range seen {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// descendants returns root and every process below it, from /proc/<pid>/task/*/children.
func descendants(root int) []int {
	out := []int{root}
	for k := 0; k < len(out) && k < 100000; k++ {
		tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(out[k]), "task", "*", "children"))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					out = append(out, pid)
				}
			}
		}
	}
	return out
}
