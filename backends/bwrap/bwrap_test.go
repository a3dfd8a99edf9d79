package bwrap

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/backends/internal/limits"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
)

// requireBwrap skips (or fails under MOAT_TEST_REQUIRE) when bwrap cannot run here.
func requireBwrap(t *testing.T) {
	t.Helper()
	b, _ := New(backend.Config{StateDir: t.TempDir()})
	h := b.(backend.Prober).Probe(context.Background())
	reason := ""
	if h.State == backend.Unavailable {
		reason = h.Reason
	}
	testenv.Require(t, "bwrap", reason)
}

func rootfsTar(t *testing.T) string {
	t.Helper()
	p, reason := testenv.RootfsTar()
	testenv.Require(t, "rootfs", reason)
	return p
}

func newFactory(t *testing.T, conf Config) func(testing.TB) backend.Backend {
	dir := t.TempDir()
	return func(tb testing.TB) backend.Backend {
		b, err := New(backend.Config{StateDir: dir, Decode: func(v any) error {
			*(v.(*Config)) = conf
			return nil
		}})
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
}

func TestConformance(t *testing.T) {
	requireBwrap(t)
	oom, why := limits.OOMReport(limits.Options{})
	var skip map[string]string
	if !oom {
		skip = map[string]string{"Exec/OOMKill": why}
	}
	t.Run("Tarball", func(t *testing.T) {
		backendtest.Run(t, backendtest.Factory{New: newFactory(t, Config{}), Image: rootfsTar(t), OOMKills: oom, Skip: skip})
	})
	t.Run("HostBind", func(t *testing.T) {
		backendtest.Run(t, backendtest.Factory{New: newFactory(t, Config{}), OOMKills: oom, Skip: skip})
	})
}

func run(t *testing.T, inst backend.Instance, argv ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Workdir: "/workspace", Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	return code, out.String(), errb.String()
}

func busybox(t *testing.T, req func(*backend.CreateRequest)) backend.Instance {
	t.Helper()
	requireBwrap(t)
	r := backendtest.CreateRequest(t, rootfsTar(t))
	if req != nil {
		req(r)
	}
	return backendtest.Create(t, newFactory(t, Config{})(t), r)
}

func TestNetworkNone(t *testing.T) {
	inst := busybox(t, nil)
	code, out, _ := run(t, inst, "cat", "/proc/net/dev")
	if code != 0 {
		t.Fatalf("cat /proc/net/dev: %d", code)
	}
	var ifaces []string
	for _, line := range strings.Split(out, "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			ifaces = append(ifaces, name)
		}
	}
	if len(ifaces) != 1 || ifaces[0] != "lo" {
		t.Fatalf("interfaces inside = %q, want only lo", ifaces)
	}
}

func TestPIDNamespace(t *testing.T) {
	inst := busybox(t, nil)
	_, out, _ := run(t, inst, "sh", "-c", "ls /proc | grep -c '^[0-9]*$'; echo $$")
	f := strings.Fields(out)
	n, _ := strconv.Atoi(f[0])
	if n == 0 || n > 6 {
		t.Fatalf("%d pids visible inside (want a handful): %q", n, out)
	}
	if pid, _ := strconv.Atoi(f[1]); pid > 10 {
		t.Fatalf("shell pid inside is %d: no pid namespace?", pid)
	}
}

func TestSecretsNotVisible(t *testing.T) {
	t.Setenv("MOAT_TEST_SECRET", "s3cret-value")
	inst := busybox(t, nil)
	_, out, _ := run(t, inst, "env")
	if strings.Contains(out, "s3cret") || strings.Contains(out, "MOAT_TEST_SECRET") {
		t.Fatalf("env inside: %q", out)
	}
	if !strings.Contains(out, "PATH=") {
		t.Fatalf("env inside lacks PATH: %q", out)
	}
}

func TestPersistenceAcrossExecs(t *testing.T) {
	inst := busybox(t, nil)
	run(t, inst, "sh", "-c", "echo one > /root/f; mkdir -p /opt/x")
	if _, out, _ := run(t, inst, "cat", "/root/f"); out != "one\n" {
		t.Fatalf("second exec reads %q", out)
	}
}

func TestLimitsEnforced(t *testing.T) {
	inst := busybox(t, func(r *backend.CreateRequest) {
		r.Limits = backend.Limits{MemoryBytes: 64 << 20, PIDs: 16, DiskBytes: 1 << 20}
	})
	rep := inst.(*Instance).LimitsReport()
	reason := ""
	if !rep.IsApplied("memory") || !rep.IsApplied("pids") || !rep.IsApplied("disk") {
		reason = "limits not enforceable here: " + rep.String()
	}
	testenv.Require(t, "limits", reason)
	code, out, _ := run(t, inst, "sh", "-c", "head -c 209715200 /dev/zero | tail | wc -c")
	if code == 0 && strings.TrimSpace(out) == "209715200" {
		t.Fatal("200 MiB allocation succeeded under a 64 MiB limit")
	}
	code, _, _ = run(t, inst, "sh", "-c", "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait")
	if code == 0 {
		t.Fatal("40 children under pids=16 succeeded")
	}
	run(t, inst, "sh", "-c", "head -c 5242880 /dev/zero > /workspace/big")
	st, err := os.Stat(filepath.Join(inst.(*Instance).m.Root, "workspace", "big"))
	if err != nil || st.Size() > 1<<20 {
		t.Fatalf("file size limit: %v %v", st, err)
	}
}

func TestMissingBinaryMessage(t *testing.T) {
	inst := busybox(t, nil)
	// Exists as a file but cannot be executed: lookPath passes, bwrap's execvp fails.
	run(t, inst, "sh", "-c", "printf '#!/no/such/interpreter\\n' > /workspace/s; chmod +x /workspace/s")
	var out bytes.Buffer
	_, err := inst.Exec(context.Background(), &backend.ExecRequest{Argv: []string{"/workspace/s"},
		Workdir: "/workspace", Stdout: &out, Stderr: &out})
	if !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("want NotFound, got %v (%q)", err, out.String())
	}
	for _, argv0 := range []string{"no-such-tool", "/bin/no-such-tool", "./nope"} {
		_, err := inst.Exec(context.Background(), &backend.ExecRequest{Argv: []string{argv0},
			Workdir: "/workspace", Stdout: &out, Stderr: &out})
		if !errdefs.Is(err, errdefs.KindNotFound) {
			t.Fatalf("%s: want NotFound, got %v", argv0, err)
		}
	}
}

func writeTar(t *testing.T, hdrs ...*tar.Header) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write(make([]byte, h.Size))
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "img.tar")
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

func TestBadImagesRejected(t *testing.T) {
	requireBwrap(t)
	outside := t.TempDir()
	b := newFactory(t, Config{MaxImageBytes: 1 << 20})(t)
	for name, img := range map[string]string{
		"dotdot":   writeTar(t, &tar.Header{Name: "../../../" + outside + "/escape", Typeflag: tar.TypeReg, Size: 1}),
		"absolute": writeTar(t, &tar.Header{Name: outside + "/escape", Typeflag: tar.TypeReg, Size: 1}),
		"symlink": writeTar(t, &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: outside},
			&tar.Header{Name: "l/escape", Typeflag: tar.TypeReg, Size: 1}),
		"bomb": writeTar(t, &tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 2 << 20}),
	} {
		req := backendtest.CreateRequest(t, img)
		_, err := b.Create(context.Background(), req)
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: want InvalidArgument, got %v", name, err)
		}
		if _, err := os.Lstat(filepath.Join(outside, "escape")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: wrote outside the root", name)
		}
		if l, _ := b.(backend.Lister).List(context.Background()); len(l) != 0 {
			t.Errorf("%s: failed create left %+v behind", name, l)
		}
	}
	if _, err := b.Create(context.Background(), backendtest.CreateRequest(t, "relative/path")); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("relative image: %v", err)
	}
}

func TestHostBindReadOnly(t *testing.T) {
	requireBwrap(t)
	inst := backendtest.Create(t, newFactory(t, Config{})(t), backendtest.CreateRequest(t, ""))
	code, _, _ := run(t, inst, "sh", "-c", "echo x > /usr/moat-bwrap-test")
	if code == 0 {
		t.Fatal("writing /usr in the host-bind image succeeded")
	}
	if _, err := os.Stat("/usr/moat-bwrap-test"); err == nil {
		t.Fatal("host /usr was written")
	}
	ft := inst.(backend.FileTransferer)
	if err := ft.WriteFile(context.Background(), "/etc/passwd", strings.NewReader("x"), 0o644); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Fatalf("file API write to the bound /etc/passwd: %v", err)
	}
	// Only a curated, non-secret part of the host's /etc is visible.
	if _, err := os.Stat("/etc/shadow"); err == nil {
		if code, out, _ := run(t, inst, "cat", "/etc/shadow"); code == 0 {
			t.Fatalf("the host's /etc/shadow is readable inside the sandbox: %q", out)
		}
	}
	if code, out, _ := run(t, inst, "cat", "/etc/passwd"); code != 0 || !strings.Contains(out, "root:") {
		t.Fatalf("/etc/passwd should be bound from the host: %d %q", code, out)
	}
	if code, _, _ := run(t, inst, "sh", "-c", "echo ok > /etc/moat-own && cat /etc/moat-own"); code != 0 {
		t.Fatal("the sandbox's own /etc should be writable")
	}
	if _, err := os.Stat("/etc/moat-own"); err == nil {
		t.Fatal("a write to the sandbox's /etc reached the host")
	}
}

func TestCancelKillsNamespace(t *testing.T) {
	inst := busybox(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	_, err := inst.Exec(ctx, &backend.ExecRequest{Argv: []string{"sh", "-c", "setsid sh -c 'sleep 3; echo survived > /workspace/m' & sleep 30"},
		Workdir: "/workspace", Stdout: &out, Stderr: &out})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	time.Sleep(4 * time.Second)
	if code, _, _ := run(t, inst, "test", "-e", "/workspace/m"); code == 0 {
		t.Fatal("a setsid'd child survived cancellation")
	}
	// No stray processes of this sandbox remain on the host.
	root := inst.(*Instance).m.Root
	if out, _ := exec.Command("pgrep", "-f", root).Output(); len(out) > 0 {
		t.Fatalf("bwrap processes left: %s", out)
	}
}

// TestNoCapabilities: uid 0 inside must not hold capabilities in the sandbox's user
// namespace. With them (bwrap keeps them by default for --uid 0 when moat runs as root),
// the sandbox could remount the read-only host binds read-write and, uid 0 being mapped
// to the host's root, change the host's /usr.
func TestNoCapabilities(t *testing.T) {
	requireBwrap(t)
	inst := backendtest.Create(t, newFactory(t, Config{})(t), backendtest.CreateRequest(t, ""))
	code, out, _ := run(t, inst, "grep", "^CapEff:", "/proc/self/status")
	if code != 0 {
		t.Fatalf("grep CapEff: %d", code)
	}
	if f := strings.Fields(out); len(f) != 2 || strings.Trim(f[1], "0") != "" {
		t.Fatalf("effective capabilities inside: %q, want none", out)
	}
	if _, err := os.Stat("/usr/bin/mount"); err != nil {
		return
	}
	// Remounting only changes the sandbox's own mount namespace; nothing is written.
	if code, out, errOut := run(t, inst, "mount", "-o", "remount,rw,bind", "/usr"); code == 0 {
		t.Fatalf("the sandbox remounted the host's /usr read-write: %q %q", out, errOut)
	}
}

// TestHostBindResults: in the host-bind image, a program reached through a symlink chain
// that crosses binds (/usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk) runs, and
// the file API reads a file bind (/etc/passwd) as the sandbox sees it.
func TestHostBindResults(t *testing.T) {
	requireBwrap(t)
	inst := backendtest.Create(t, newFactory(t, Config{})(t), backendtest.CreateRequest(t, ""))
	if fi, err := os.Lstat("/usr/bin/awk"); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if target, _ := os.Readlink("/usr/bin/awk"); strings.HasPrefix(target, "/etc/") {
			code, out, err := runErr(inst, "/usr/bin/awk", "BEGIN { print 6*7 }")
			if err != nil || code != 0 || strings.TrimSpace(out) != "42" {
				t.Errorf("/usr/bin/awk (-> %s) in the sandbox: %d %q %v; want 42", target, code, out, err)
			}
			code, out, err = runErr(inst, "awk", "BEGIN { print 6*7 }")
			if err != nil || code != 0 || strings.TrimSpace(out) != "42" {
				t.Errorf("awk by PATH in the sandbox: %d %q %v; want 42", code, out, err)
			}
		}
	} else {
		t.Logf("the host's /usr/bin/awk is not a symlink: the alternatives check proves nothing here")
	}
	ft := inst.(backend.FileTransferer)
	var buf strings.Builder
	if err := ft.ReadFile(context.Background(), "/etc/passwd", &buf); err != nil || !strings.Contains(buf.String(), "root:") {
		t.Errorf("file API read of the bound /etc/passwd: %v, %q", err, buf.String())
	}
	if _, err := os.Stat("/etc/os-release"); err == nil {
		buf.Reset()
		if err := ft.ReadFile(context.Background(), "/etc/os-release", &buf); err != nil || buf.Len() == 0 {
			t.Errorf("file API read of the bound /etc/os-release: %v, %d bytes", err, buf.Len())
		}
	}
	if err := ft.ReadFile(context.Background(), "/etc/passwd/x", io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("file API read below a file bind: %v; want not_found", err)
	}
}

func runErr(inst backend.Instance, argv ...string) (int, string, error) {
	var out, errb strings.Builder
	code, err := inst.Exec(context.Background(), &backend.ExecRequest{Argv: argv, Workdir: "/", Stdout: &out, Stderr: &errb,
		Env: map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}})
	return code, out.String() + errb.String(), err
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
