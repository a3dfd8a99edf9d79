// Package limits answers "how does a local backend run a child process under resource
// limits, and kill everything it started?": it turns backend.Limits (plus extra rlimits)
// into cgroup settings and a prlimit(1) prefix, reports which limits it could enforce and
// why not the others, and runs a child in its own process group so cancellation kills the
// whole tree.
//
// Go's os/exec cannot set rlimits on a child, so rlimits are applied by prefixing argv with
// util-linux prlimit, which sets them on itself and then execs the command. Cgroups are
// created per sandbox (not per exec) below moat's own cgroup, so limits cover all of a
// sandbox's processes together and moat never moves processes out of the cgroup it was
// placed in. On cgroup v1 the child joins the cgroups with a fixed shell wrapper before it
// execs (so there is no window in which it runs unlimited); on cgroup v2 it is started
// directly inside the cgroup with CLONE_INTO_CGROUP.
package limits

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/oomcount"
)

// Extra are rlimits beyond backend.Limits; zero means unset.
type Extra struct {
	AddressSpaceBytes int64 // RLIMIT_AS
	NoFile            int64 // RLIMIT_NOFILE
	FileSizeBytes     int64 // RLIMIT_FSIZE (largest file a process may write)
	CPUSeconds        int64 // RLIMIT_CPU (CPU time, not rate)
	NProc             int64 // RLIMIT_NPROC (per real user; ignored for root)
}

// Options configure a Group.
type Options struct {
	Limits backend.Limits
	Extra  Extra
	// NoCgroups disables cgroups (rlimits only), e.g. when the operator asks for it.
	NoCgroups bool
	// Track creates the sandbox's cgroup even when no cgroup limit is asked for, so that
	// Kill and Close reach processes that left their process group (setsid, daemons).
	// Backends whose processes cannot escape otherwise (a pid namespace) leave it unset.
	Track bool
	// CgroupRoot is where cgroup filesystems are mounted; "" means /sys/fs/cgroup.
	CgroupRoot string
}

// Applied is one limit that is enforced, and how.
type Applied struct {
	Limit string `json:"limit"` // "memory", "pids", "cpus", "disk", "nofile", ...
	How   string `json:"how"`
}

// Skipped is one requested limit that is not enforced, and why.
type Skipped struct {
	Limit  string `json:"limit"`
	Reason string `json:"reason"`
}

// Report says which limits a Group enforces.
type Report struct {
	Applied []Applied `json:"applied,omitempty"`
	Skipped []Skipped `json:"skipped,omitempty"`
}

// String renders the report for probe reasons and logs, e.g.
// "memory via cgroup v1 memory.limit_in_bytes; cpus unavailable: no writable cpu cgroup".
func (r Report) String() string {
	var parts []string
	for _, a := range r.Applied {
		parts = append(parts, a.Limit+" via "+a.How)
	}
	for _, s := range r.Skipped {
		parts = append(parts, s.Limit+" unavailable: "+s.Reason)
	}
	if len(parts) == 0 {
		return "no limits requested"
	}
	return strings.Join(parts, "; ")
}

// IsApplied reports whether limit is enforced.
func (r Report) IsApplied(limit string) bool {
	for _, a := range r.Applied {
		if a.Limit == limit {
			return true
		}
	}
	return false
}

// Group holds the limits of one sandbox: its cgroups and its rlimit prefix. Methods are
// safe for concurrent use.
type Group struct {
	id      string
	cg      *cgroup // nil when no cgroup is used
	prlimit string  // path of prlimit; "" when no rlimits are applied
	rlimits []string
	report  Report
}

// ScopedID names a sandbox's cgroup so that it is unique on the machine: id alone is not
// (two moat installations, or two test runs, may each have a sandbox "t-1"), and cgroups
// are global. scope is something unique and stable per sandbox, such as its state
// directory, so an Attach from another process finds the same cgroup.
func ScopedID(id, scope string) string {
	sum := sha256.Sum256([]byte(scope))
	suffix := "-" + hex.EncodeToString(sum[:6])
	if len(id)+len(suffix) > 128 {
		id = id[:128-len(suffix)]
	}
	return id + suffix
}

// ValidID reports whether id can name a cgroup and a state directory: a single path
// component of letters, digits, '-', '_' and '.', not "." or "..", at most 128 bytes.
func ValidID(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// New prepares the limits of sandbox id: it creates (or reuses, after a restart) the
// sandbox's cgroups and writes their limits. It never fails because a mechanism is
// missing: what cannot be enforced is listed in Report().Skipped. It fails only for an
// invalid id.
func New(id string, o Options) (*Group, error) {
	if !ValidID(id) {
		return nil, errdefs.InvalidArgumentf("limits: invalid sandbox id %q", id)
	}
	g := &Group{id: id}
	l, x := o.Limits, o.Extra

	// Cgroups first: they decide which limits still need an rlimit fallback.
	var cgRep Report
	if (l.MemoryBytes > 0 || l.PIDs > 0 || l.CPUs > 0 || o.Track) && !o.NoCgroups {
		g.cg, cgRep = newCgroup(o.CgroupRoot, id, l, o.Track)
	}
	g.report.Applied = append(g.report.Applied, cgRep.Applied...)
	cgWhy := func(limit string) string {
		if o.NoCgroups {
			return "cgroups disabled by configuration"
		}
		for _, s := range cgRep.Skipped {
			if s.Limit == limit {
				return s.Reason
			}
		}
		return "no cgroup"
	}

	// Rlimits: explicit extras, plus fallbacks for what the cgroups could not do.
	type rl struct {
		limit, flag string
		v           int64
		how, why    string // why: the cgroup failure a fallback stands in for
	}
	var want []rl
	if l.CPUs > 0 && !cgRep.IsApplied("cpus") {
		g.report.Skipped = append(g.report.Skipped, Skipped{"cpus", cgWhy("cpus")})
	}
	if l.MemoryBytes > 0 && !cgRep.IsApplied("memory") && x.AddressSpaceBytes == 0 {
		want = append(want, rl{"memory", "--as", l.MemoryBytes,
			"rlimit address space (approximate: counts virtual memory; no cgroup: " + cgWhy("memory") + ")", cgWhy("memory")})
	}
	if x.AddressSpaceBytes > 0 {
		want = append(want, rl{"address-space", "--as", x.AddressSpaceBytes, "rlimit as", ""})
	}
	if l.PIDs > 0 && !cgRep.IsApplied("pids") && x.NProc == 0 {
		if os.Geteuid() == 0 {
			g.report.Skipped = append(g.report.Skipped, Skipped{"pids", cgWhy("pids") + "; rlimit nproc is not enforced for root"})
		} else {
			want = append(want, rl{"pids", "--nproc", l.PIDs,
				"rlimit nproc (counts all processes of this user; no cgroup: " + cgWhy("pids") + ")", cgWhy("pids")})
		}
	}
	if x.NProc > 0 {
		want = append(want, rl{"nproc", "--nproc", x.NProc, "rlimit nproc", ""})
	}
	fsize := x.FileSizeBytes
	if l.DiskBytes > 0 && (fsize == 0 || l.DiskBytes < fsize) {
		want = append(want, rl{"disk", "--fsize", l.DiskBytes, "rlimit fsize (per file, not total disk use)", ""})
	} else if fsize > 0 {
		want = append(want, rl{"file-size", "--fsize", fsize, "rlimit fsize", ""})
	}
	if x.NoFile > 0 {
		want = append(want, rl{"nofile", "--nofile", x.NoFile, "rlimit nofile", ""})
	}
	if x.CPUSeconds > 0 {
		want = append(want, rl{"cpu-time", "--cpu", x.CPUSeconds, "rlimit cpu", ""})
	}
	if len(want) > 0 {
		p, err := exec.LookPath("prlimit")
		for _, w := range want {
			if err != nil {
				reason := "prlimit (util-linux) not found"
				if w.why != "" {
					reason = w.why + "; " + reason
				}
				g.report.Skipped = append(g.report.Skipped, Skipped{w.limit, reason})
				continue
			}
			g.prlimit = p
			g.rlimits = append(g.rlimits, w.flag+"="+strconv.FormatInt(w.v, 10))
			g.report.Applied = append(g.report.Applied, Applied{w.limit, w.how})
		}
	}
	return g, nil
}

// Report returns which limits are enforced.
func (g *Group) Report() Report { return g.report }

// Wrap returns argv prefixed with what applies the limits: the cgroup v1 join wrapper and
// prlimit. The result's first element is an absolute path when anything was prefixed.
// argv is passed through as separate arguments, never concatenated into a script.
func (g *Group) Wrap(argv []string) []string {
	out := make([]string, 0, len(argv)+12)
	if g.cg != nil && g.cg.version == 1 && len(g.cg.procs) > 0 {
		// The shell writes its own pid into each cgroup.procs file, then execs the rest, so
		// the user command (and everything it forks) starts inside the cgroups.
		out = append(out, "/bin/sh", "-c",
			`while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"`,
			"moat-limits")
		out = append(out, g.cg.procs...)
		out = append(out, "--")
	}
	if g.prlimit != "" {
		out = append(out, g.prlimit)
		out = append(out, g.rlimits...)
		out = append(out, "--")
	}
	return append(out, argv...)
}

// sysProcAttr adds what starting inside the group needs (CLONE_INTO_CGROUP on v2). The
// returned close func releases the cgroup fd after Start.
func (g *Group) sysProcAttr(a *syscall.SysProcAttr) (func(), error) {
	if g == nil || g.cg == nil || g.cg.version != 2 {
		return func() {}, nil
	}
	f, err := os.Open(g.cg.dirs[0])
	if err != nil {
		return nil, fmt.Errorf("limits: open cgroup: %w", err)
	}
	a.UseCgroupFD = true
	a.CgroupFD = int(f.Fd())
	return func() { f.Close() }, nil
}

// Kill sends SIGKILL to every process in the group's cgroups (the processes that left
// their process group included). Without cgroups it does nothing.
func (g *Group) Kill() {
	if g.cg != nil {
		g.cg.kill()
	}
}

// Close kills the group's processes and removes its cgroups. It is idempotent.
func (g *Group) Close() error {
	if g.cg == nil {
		return nil
	}
	return g.cg.remove()
}

// Check reports, without creating anything, which of the given limits this machine could
// enforce for a new sandbox; Probe methods use it for their reasons.
func Check(o Options) Report {
	var r Report
	l := o.Limits
	_, prErr := exec.LookPath("prlimit")
	cgOK := func(ctrl string) (string, bool) {
		if o.NoCgroups {
			return "cgroups disabled by configuration", false
		}
		d, v, err := controllerDir(o.CgroupRoot, ctrl)
		if err != nil {
			return err.Error(), false
		}
		if err := syscall.Access(d, 2 /* W_OK */); err != nil {
			return fmt.Sprintf("cgroup v%d %s directory %s not writable: %v", v, ctrl, d, err), false
		}
		return fmt.Sprintf("cgroup v%d", v), true
	}
	add := func(limit string, want bool, ctrl, fallback string, fallbackOK bool, fallbackWhy string) {
		if !want {
			return
		}
		how, ok := cgOK(ctrl)
		switch {
		case ok:
			r.Applied = append(r.Applied, Applied{limit, how})
		case fallback != "" && fallbackOK:
			r.Applied = append(r.Applied, Applied{limit, fallback + " (no cgroup: " + how + ")"})
		default:
			reason := how
			if fallback != "" {
				reason += "; " + fallbackWhy
			}
			r.Skipped = append(r.Skipped, Skipped{limit, reason})
		}
	}
	prWhy := "prlimit (util-linux) not found"
	if prErr == nil {
		prWhy = ""
	}
	add("memory", l.MemoryBytes > 0, "memory", "rlimit address space", prErr == nil, prWhy)
	nprocWhy := prWhy
	if os.Geteuid() == 0 {
		nprocWhy = "rlimit nproc is not enforced for root"
	}
	add("pids", l.PIDs > 0, "pids", "rlimit nproc", prErr == nil && os.Geteuid() != 0, nprocWhy)
	add("cpus", l.CPUs > 0, "cpu", "", false, "")
	if l.DiskBytes > 0 {
		if prErr == nil {
			r.Applied = append(r.Applied, Applied{"disk", "rlimit fsize (per file, not total disk use)"})
		} else {
			r.Skipped = append(r.Skipped, Skipped{"disk", prWhy})
		}
	}
	return r
}

// OOMKills returns the OOM killer's count of kills in the sandbox's memory cgroup, and
// whether there is one (a memory limit enforced by a cgroup).
func (g *Group) OOMKills() (uint64, bool) {
	if g == nil || g.cg == nil || g.cg.memDir == "" {
		return 0, false
	}
	return oomcount.In(g.cg.memDir)
}

// Tracks reports whether the group has a cgroup, so Kill and Close reach every process of
// the sandbox, including those that left their process group.
func (g *Group) Tracks() bool { return g.cg != nil }

// OOMReport says whether a sandbox created with o (and a memory limit) gets a memory cgroup
// here, so that Run can tell an OOM kill from a plain SIGKILL; when not, why.
func OOMReport(o Options) (bool, string) {
	o.Limits.MemoryBytes = 1 << 30
	if o.NoCgroups {
		return false, "cgroups disabled by configuration"
	}
	r := Check(o)
	for _, a := range r.Applied {
		if a.Limit == "memory" && strings.HasPrefix(a.How, "cgroup") {
			return true, ""
		}
	}
	return false, "no memory cgroup: " + r.String()
}
