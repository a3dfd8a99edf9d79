// Package proctree answers "how is a whole process tree killed, children that forked or
// left the group with setsid included?": Kill stops the tree, then SIGKILLs its process
// group and every process found below the root in /proc. Standard library only, so
// moat-agent may use it.
package proctree

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Kill SIGKILLs root, its process group and every descendant, including ones that left
// the group with setsid. It stops the tree first (repeating until no new descendant
// appears) so nothing forks away while it is collected.
//
// may, when not nil, reports whether a pid may be signalled (that it still is the process
// the caller means, say); a root it refuses is left alone entirely, a descendant it
// refuses is skipped. Errors (a process already gone) are ignored.
func Kill(root int, may func(pid int) bool) {
	if may != nil && !may(root) {
		return
	}
	seen := map[int]bool{}
	for range 10 {
		grew := false
		for _, pid := range Descendants(root) {
			if !seen[pid] && (may == nil || may(pid)) {
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

// Descendants returns root and every process below it, from /proc/<pid>/task/*/children
// (just root where /proc has no such files).
func Descendants(root int) []int {
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
