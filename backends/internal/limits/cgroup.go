package limits

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moatsh/moat/backend"
)

const defaultCgroupRoot = "/sys/fs/cgroup"

// cgroup is one sandbox's cgroup directories (one per v1 controller, or one on v2).
type cgroup struct {
	version int
	dirs    []string // created directories
	procs   []string // their cgroup.procs files (v1 join wrapper)
	memDir  string   // the directory with the memory limit, "" without one
}

// ownCgroups parses /proc/self/cgroup into controller → path ("" key for the v2 line).
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			m[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			m[c] = parts[2]
		}
	}
	return m, sc.Err()
}

func isV2(root string) bool {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return err == nil
}

// controllerDir returns moat's own cgroup directory for ctrl and the cgroup version.
// Sandbox cgroups are created below it, so moat never moves processes out of the cgroup
// (and the limits) it was itself placed in.
func controllerDir(root, ctrl string) (string, int, error) {
	if root == "" {
		root = defaultCgroupRoot
	}
	own, err := ownCgroups()
	if err != nil {
		return "", 0, fmt.Errorf("read own cgroup: %v", err)
	}
	if isV2(root) {
		p, ok := own[""]
		if !ok {
			return "", 0, errors.New("no cgroup v2 entry in /proc/self/cgroup")
		}
		d := filepath.Join(root, filepath.Clean("/"+p))
		ctrls, err := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
		if err != nil {
			return "", 0, fmt.Errorf("cgroup v2: %v", err)
		}
		if !contains(strings.Fields(string(ctrls)), ctrl) {
			return "", 0, fmt.Errorf("cgroup v2 controller %s not delegated to %s", ctrl, d)
		}
		return d, 2, nil
	}
	mount := filepath.Join(root, ctrl)
	if _, err := os.Stat(filepath.Join(mount, "cgroup.procs")); err != nil {
		return "", 0, fmt.Errorf("cgroup v1 %s controller not mounted at %s", ctrl, mount)
	}
	p, ok := own[ctrl]
	if !ok {
		p = "/"
	}
	return filepath.Join(mount, filepath.Clean("/"+p)), 1, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeFile(path, value string) error {
	// O_WRONLY without O_CREATE: cgroup files always exist; a missing one is an error.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// newCgroup creates the cgroups of sandbox id for the limits l asks for; with track, at
// least one cgroup (on v1 the pids controller's, without a limit) even when l asks for none.
func newCgroup(root, id string, l backend.Limits, track bool) (*cgroup, Report) {
	if root == "" {
		root = defaultCgroupRoot
	}
	if isV2(root) {
		return newCgroupV2(root, id, l, track)
	}
	cg := &cgroup{version: 1}
	var rep Report
	type setting struct {
		limit, ctrl string
		want        bool
		files       [][2]string
		how         string
	}
	const period = 100000
	settings := []setting{
		{"memory", "memory", l.MemoryBytes > 0, [][2]string{
			{"memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10)},
			// Same value for memory+swap, so the limit cannot be dodged by swapping; this
			// file is absent when swap accounting is off, which is fine.
			{"memory.memsw.limit_in_bytes?", strconv.FormatInt(l.MemoryBytes, 10)},
		}, "cgroup v1 memory.limit_in_bytes"},
		{"pids", "pids", l.PIDs > 0, [][2]string{
			{"pids.max", strconv.FormatInt(l.PIDs, 10)},
		}, "cgroup v1 pids.max"},
		{"cpus", "cpu", l.CPUs > 0, [][2]string{
			{"cpu.cfs_period_us", strconv.Itoa(period)},
			{"cpu.cfs_quota_us", strconv.FormatInt(int64(l.CPUs*period), 10)},
		}, "cgroup v1 cpu.cfs_quota_us"},
		// Tracking only: a cgroup that holds every process, with nothing to enforce.
		{"", "pids", track, nil, ""},
	}
	for _, s := range settings {
		if !s.want || (s.limit == "" && len(cg.dirs) > 0) {
			continue
		}
		skip := func(reason string) {
			if s.limit != "" {
				rep.Skipped = append(rep.Skipped, Skipped{s.limit, reason})
			}
		}
		base, _, err := controllerDir(root, s.ctrl)
		if err != nil {
			skip(err.Error())
			continue
		}
		dir := filepath.Join(base, "moat", id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			skip(fmt.Sprintf("cgroup v1 %s: %v", s.ctrl, err))
			continue
		}
		var werr error
		for _, f := range s.files {
			name, optional := strings.CutSuffix(f[0], "?")
			if err := writeFile(filepath.Join(dir, name), f[1]); err != nil {
				if optional && errors.Is(err, os.ErrNotExist) {
					continue
				}
				werr = fmt.Errorf("cgroup v1 %s: write %s: %v", s.ctrl, name, err)
				break
			}
		}
		if werr != nil {
			rmdirRetry(dir)
			skip(werr.Error())
			continue
		}
		cg.dirs = append(cg.dirs, dir)
		cg.procs = append(cg.procs, filepath.Join(dir, "cgroup.procs"))
		if s.limit == "memory" {
			cg.memDir = dir
		}
		if s.limit != "" {
			rep.Applied = append(rep.Applied, Applied{s.limit, s.how})
		}
	}
	if len(cg.dirs) == 0 {
		return nil, rep
	}
	return cg, rep
}

// newCgroupV2 creates <own>/moat/<id> with the controllers l needs. moat's own cgroup
// holds moat itself, so enabling controllers for children there fails (EBUSY) unless the
// service manager delegated a subtree; that reason is reported, not hidden.
func newCgroupV2(root, id string, l backend.Limits, track bool) (*cgroup, Report) {
	var rep Report
	skipAll := func(reason string) (*cgroup, Report) {
		if l.MemoryBytes > 0 {
			rep.Skipped = append(rep.Skipped, Skipped{"memory", reason})
		}
		if l.PIDs > 0 {
			rep.Skipped = append(rep.Skipped, Skipped{"pids", reason})
		}
		if l.CPUs > 0 {
			rep.Skipped = append(rep.Skipped, Skipped{"cpus", reason})
		}
		if track {
			// No limits, but still a cgroup that holds every process (no controller needed).
			if own, err := ownCgroups(); err == nil {
				dir := filepath.Join(root, filepath.Clean("/"+own[""]), "moat", id)
				if os.MkdirAll(dir, 0o755) == nil {
					return &cgroup{version: 2, dirs: []string{dir}}, rep
				}
			}
		}
		return nil, rep
	}
	own, err := ownCgroups()
	if err != nil {
		return skipAll("cgroup v2: " + err.Error())
	}
	base := filepath.Join(root, filepath.Clean("/"+own[""]))
	moat := filepath.Join(base, "moat")
	if err := os.MkdirAll(moat, 0o755); err != nil {
		return skipAll("cgroup v2: " + err.Error())
	}
	type setting struct {
		limit, ctrl, file, value string
		want                     bool
	}
	settings := []setting{
		{"memory", "memory", "memory.max", strconv.FormatInt(l.MemoryBytes, 10), l.MemoryBytes > 0},
		{"pids", "pids", "pids.max", strconv.FormatInt(l.PIDs, 10), l.PIDs > 0},
		{"cpus", "cpu", "cpu.max", fmt.Sprintf("%d 100000", int64(l.CPUs*100000)), l.CPUs > 0},
	}
	for _, s := range settings {
		if !s.want {
			continue
		}
		for _, d := range []string{base, moat} {
			if err := writeFile(filepath.Join(d, "cgroup.subtree_control"), "+"+s.ctrl); err != nil {
				return skipAll(fmt.Sprintf("cgroup v2: enable %s in %s: %v", s.ctrl, d, err))
			}
		}
	}
	dir := filepath.Join(moat, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return skipAll("cgroup v2: " + err.Error())
	}
	cg := &cgroup{version: 2, dirs: []string{dir}}
	for _, s := range settings {
		if !s.want {
			continue
		}
		if err := writeFile(filepath.Join(dir, s.file), s.value); err != nil {
			rep.Skipped = append(rep.Skipped, Skipped{s.limit, fmt.Sprintf("cgroup v2: write %s: %v", s.file, err)})
			continue
		}
		if s.limit == "memory" {
			_ = writeFile(filepath.Join(dir, "memory.swap.max"), "0") // absent without swap
			cg.memDir = dir
		}
		rep.Applied = append(rep.Applied, Applied{s.limit, "cgroup v2 " + s.file})
	}
	return cg, rep
}

// pids lists the processes in the cgroup's directories.
func (c *cgroup) pids() []int {
	var out []int
	for _, d := range c.dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				out = append(out, pid)
			}
		}
	}
	return out
}

// kill SIGKILLs every process in the cgroups until they are empty (bounded: a process
// forking as fast as it is killed is stopped by repetition; pids.max bounds it anyway).
func (c *cgroup) kill() {
	if c.version == 2 {
		_ = writeFile(filepath.Join(c.dirs[0], "cgroup.kill"), "1") // kernel ≥ 5.14
	}
	for i := 0; i < 100; i++ {
		pids := c.pids()
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *cgroup) remove() error {
	c.kill()
	var errs []error
	for _, d := range c.dirs {
		if err := rmdirRetry(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes a cgroup directory; the kernel answers EBUSY for a moment after the
// last process died.
func rmdirRetry(d string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = syscall.Rmdir(d)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("limits: remove cgroup %s: %w", d, err)
}
