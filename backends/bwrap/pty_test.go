package bwrap

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/internal/ptyrun/ptytest"
	"github.com/moatsh/moat/backends/internal/rootfs"
)

func TestPTY(t *testing.T) {
	requireBwrap(t)
	for _, tc := range []struct {
		name  string
		image func(t *testing.T) string
	}{
		{"Tarball", rootfsTar},
		{"HostBind", func(*testing.T) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := backendtest.Create(t, newFactory(t, Config{})(t), &backend.CreateRequest{
				ID: "pty-" + tc.name + "-" + strconv.Itoa(os.Getpid()), Image: tc.image(t), Workdir: "/workspace"})
			root := inst.(*Instance).m.Root
			ptytest.Run(t, inst.(backend.PTYExecer), ptytest.Options{
				// bwrap shows the terminal as /dev/console: the sandbox's /dev/pts is its
				// own devpts instance, where the host's pty does not exist.
				TTY:     `/dev/console`,
				Workdir: "/workspace",
				Env:     map[string]string{"TERM": "xterm"},
				// The sleep's pid is in the exec's pid namespace: check instead that no
				// process runs inside the sandbox root any more.
				AfterCancel: func(t *testing.T, _ string) { waitNoProcessIn(t, root) },
			})
		})
	}
}

// TestPTYWithoutSetsid covers sandboxes without setsid(1): bwrap's own session gets the
// terminal as its controlling terminal.
func TestPTYWithoutSetsid(t *testing.T) {
	requireBwrap(t)
	inst := backendtest.Create(t, newFactory(t, Config{})(t), &backend.CreateRequest{
		ID: "pty-nosetsid-" + strconv.Itoa(os.Getpid()), Image: rootfsTar(t), Workdir: "/workspace"})
	if code, _, stderr := run(t, inst, "rm", "/bin/setsid"); code != 0 {
		t.Fatalf("rm /bin/setsid: %d %s", code, stderr)
	}
	if err := inst.(*Instance).lookPath("setsid", defaultPath, "/"); err == nil {
		t.Fatal("setsid still found in the sandbox PATH")
	}
	root := inst.(*Instance).m.Root
	ptytest.Run(t, inst.(backend.PTYExecer), ptytest.Options{
		TTY: `/dev/console`, Workdir: "/workspace",
		AfterCancel: func(t *testing.T, _ string) { waitNoProcessIn(t, root) },
	})
}

// TestPTYDestroyKills: Destroy ends a running terminal; afterwards there is none.
func TestPTYDestroyKills(t *testing.T) {
	requireBwrap(t)
	inst, err := newFactory(t, Config{})(t).Create(context.Background(), &backend.CreateRequest{
		ID: "pty-destroy-" + strconv.Itoa(os.Getpid()), Image: rootfsTar(t)})
	if err != nil {
		t.Fatal(err)
	}
	root := inst.(*Instance).m.Root
	ptytest.DestroyKills(t, inst, ptytest.Options{})
	waitNoProcessIn(t, root)
}

func TestWithoutNewSession(t *testing.T) {
	i := &Instance{m: meta{Root: "/r"}, fs: &rootfs.FS{Name: Name, Root: "/r"}}
	argv := i.args("/usr/bin/bwrap", "/", map[string]string{"A": "--new-session", "B": "--"},
		[]string{"sh", "--new-session"})
	got, err := withoutNewSession(argv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(argv)-1 {
		t.Fatalf("removed %d arguments, want 1", len(argv)-len(got))
	}
	// The user's values stay; only the flag among bwrap's options goes.
	if n := countOf(got, "--new-session"); n != 2 {
		t.Fatalf("%d --new-session left, want the env value and the argv one: %q", n, got)
	}
	if countOf(argv, "--new-session") != 3 {
		t.Fatalf("input argv was modified: %q", argv)
	}
	if _, err := withoutNewSession([]string{"bwrap", "--", "sh", "--new-session"}); err == nil {
		t.Fatal("a --new-session after -- was taken for bwrap's flag")
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// waitNoProcessIn waits until no process on this machine has root (the sandbox root) as
// its root directory.
func waitNoProcessIn(t *testing.T, root string) {
	t.Helper()
	var left []int
	for range 250 {
		left = left[:0]
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			r, err := os.Readlink(filepath.Join("/proc", e.Name(), "root"))
			if err != nil || r != root {
				continue
			}
			// A zombie (state Z) is dead already.
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !strings.Contains(string(b), ") Z ") {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("processes %v still run inside %s after cancel", left, root)
}
