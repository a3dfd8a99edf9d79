// Package oomcount answers "how many processes has the kernel's OOM killer killed in this
// memory cgroup?", so that an exec whose process died of SIGKILL can be told apart as an
// OOM kill: the counter went up while it ran. It reads cgroup v2 memory.events and cgroup
// v1 memory.oom_control (oom_kill, Linux ≥ 4.13), and imports nothing of moat, so the
// in-sandbox agent can use it too.
package oomcount

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Root is where cgroup filesystems are mounted.
const Root = "/sys/fs/cgroup"

// In returns the oom_kill counter of the memory cgroup directory dir (v2 or v1), and
// whether dir has one.
func In(dir string) (uint64, bool) {
	for _, f := range []string{"memory.events", "memory.oom_control"} {
		if n, ok := field(filepath.Join(dir, f), "oom_kill"); ok {
			return n, true
		}
	}
	return 0, false
}

// Own returns the counter of the calling process's memory cgroup: the one /proc/self/cgroup
// names, or, inside a container whose cgroup is mounted at the root of /sys/fs/cgroup,
// that root's.
func Own() (uint64, bool) {
	for _, dir := range ownDirs() {
		if n, ok := In(dir); ok {
			return n, true
		}
	}
	return 0, false
}

// OOMKilled reports whether a command that exited with code after the counter read before
// was OOM-killed: it died of SIGKILL (128+9, as shells report it too) and the counter grew.
// An OOM kill of another command of the same sandbox at the same moment is counted as
// this one's too: the kernel says which cgroup, not which command.
func OOMKilled(code int, before uint64, beforeOK bool, after uint64, afterOK bool) bool {
	return code == 128+9 && beforeOK && afterOK && after > before
}

func ownDirs() []string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		p := filepath.Clean("/" + parts[2])
		switch {
		case parts[1] == "":
			dirs = append(dirs, filepath.Join(Root, p), filepath.Join(Root, "unified", p))
		case hasController(parts[1], "memory"):
			dirs = append([]string{filepath.Join(Root, "memory", p), filepath.Join(Root, "memory")}, dirs...)
		}
	}
	return append(dirs, Root)
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

// field reads "key value" lines of path and returns key's value.
func field(path, key string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
