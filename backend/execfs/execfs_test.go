package execfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
)

// hostInstance runs commands on the host with os/exec. Test-only: paths are the host's, so
// tests keep everything under t.TempDir().
type hostInstance struct {
	path string // PATH for commands; lets a test force busybox applets
}

func (h *hostInstance) Handle() backend.Handle { return backend.Handle{Backend: "host-test"} }

func (h *hostInstance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	argv0, err := lookPath(req.Argv[0], h.path)
	if err != nil {
		return 0, errdefs.NotFoundf("hosttest: %s: %v", req.Argv[0], err)
	}
	cmd := exec.CommandContext(ctx, argv0, req.Argv[1:]...)
	cmd.Args[0] = req.Argv[0]
	cmd.Dir = req.Workdir
	cmd.Env = []string{"PATH=" + h.path, "LC_ALL=C"}
	for k, v := range req.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = req.Stdin, req.Stdout, req.Stderr
	err = cmd.Run()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func (h *hostInstance) Status(context.Context) (backend.Status, error) {
	return backend.StatusRunning, nil
}
func (h *hostInstance) Destroy(context.Context) error { return nil }

// environments returns the host's own tools and, when busybox is installed, busybox applets,
// so the scripts are proven on both GNU and busybox userlands.
func environments(t *testing.T) map[string]*hostInstance {
	envs := map[string]*hostInstance{"gnu": {path: "/usr/local/bin:/usr/bin:/bin"}}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Logf("busybox not installed: testing GNU tools only")
		return envs
	}
	bin := t.TempDir()
	for _, applet := range []string{"sh", "cat", "mkdir", "chmod", "find", "stat", "test", "[", "rm"} {
		if err := os.Symlink(bb, filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
	envs["busybox"] = &hostInstance{path: bin}
	return envs
}

func TestHost(t *testing.T) {
	for name, inst := range environments(t) {
		t.Run(name, func(t *testing.T) {
			testFS(t, execfs.New(inst), t.TempDir())
			testRemoveMkdir(t, execfs.New(inst), t.TempDir())
		})
	}
}

// testRemoveMkdir checks Remove and Mkdir under root. Shared with the fake-backed test.
func testRemoveMkdir(t *testing.T, f *execfs.FS, root string) {
	ctx := context.Background()
	d := root + "/new dir/sub ✓"
	if err := f.Mkdir(ctx, d, 0o700); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if err := f.Mkdir(ctx, d, 0o700); err != nil {
		t.Errorf("mkdir of an existing directory: %v", err)
	}
	infos, err := f.ListDir(ctx, root+"/new dir")
	if err != nil || len(infos) != 1 || !infos[0].IsDir || infos[0].Mode.Perm() != 0o700 {
		t.Fatalf("after mkdir: %+v %v", infos, err)
	}
	if err := f.WriteFile(ctx, d+"/f", strings.NewReader("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Mkdir(ctx, d+"/f", 0o755); !errdefs.Is(err, errdefs.KindAlreadyExists) {
		t.Errorf("mkdir over a file: %v, want already_exists", err)
	}
	if err := f.Remove(ctx, root+"/new dir", false); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("remove a directory without recursive: %v, want failed_precondition", err)
	}
	if err := f.Remove(ctx, d+"/f", false); err != nil {
		t.Errorf("remove a file: %v", err)
	}
	if err := f.Remove(ctx, d+"/f", false); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("remove twice: %v, want not_found", err)
	}
	if err := f.Remove(ctx, root+"/new dir", true); err != nil {
		t.Errorf("remove a tree: %v", err)
	}
	if _, err := f.ListDir(ctx, root+"/new dir"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("tree still there: %v", err)
	}
}

// testFS checks a FileTransferer working under root (an absolute directory the caller owns).
// It is shared with the fake-backed test.
func testFS(t *testing.T, f backend.FileTransferer, root string) {
	ctx := context.Background()
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	files := map[string]struct {
		data []byte
		mode fs.FileMode
	}{
		"a/b/c/binary":       {all, 0o600},
		"empty":              {nil, 0o644},
		"héllo wörld ✓.txt":  {[]byte("utf8\n"), 0o755},
		"new\nline":          {[]byte("nl"), 0o640},
		"sp ace/ -dash":      {[]byte("x"), 0o700},
		"a/b/c/big":          {bytes.Repeat([]byte("0123456789abcdef"), 1<<16), 0o644},
		"a/'quote\"$HOME`x`": {[]byte("q"), 0o600},
	}
	for name, want := range files {
		p := filepath.Join(root, name)
		if err := f.WriteFile(ctx, p, bytes.NewReader(want.data), want.mode); err != nil {
			t.Fatalf("WriteFile %q: %v", name, err)
		}
		var got bytes.Buffer
		if err := f.ReadFile(ctx, p, &got); err != nil {
			t.Fatalf("ReadFile %q: %v", name, err)
		}
		if !bytes.Equal(got.Bytes(), want.data) {
			t.Errorf("ReadFile %q: got %d bytes, want %d (content differs)", name, got.Len(), len(want.data))
		}
	}
	// Overwrite shrinks and changes mode.
	p := filepath.Join(root, "a/b/c/big")
	if err := f.WriteFile(ctx, p, strings.NewReader("small"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := f.ReadFile(ctx, p, &got); err != nil || got.String() != "small" {
		t.Fatalf("after overwrite: %q, %v", got.String(), err)
	}

	list, err := f.ListDir(ctx, root)
	if err != nil {
		t.Fatalf("ListDir: %v", err)
	}
	var names []string
	for _, fi := range list {
		names = append(names, fi.Name)
	}
	wantNames := []string{"a", "empty", "héllo wörld ✓.txt", "new\nline", "sp ace"}
	if strings.Join(names, "|") != strings.Join(wantNames, "|") {
		t.Errorf("ListDir names = %q, want %q", names, wantNames)
	}
	byName := map[string]backend.FileInfo{}
	for _, fi := range list {
		byName[fi.Name] = fi
	}
	if fi := byName["a"]; !fi.IsDir || !fi.Mode.IsDir() {
		t.Errorf("a: want dir, got %+v", fi)
	}
	if fi := byName["héllo wörld ✓.txt"]; fi.Mode != 0o755 || fi.Size != 5 || fi.IsDir {
		t.Errorf("utf8 file: got mode %v size %d", fi.Mode, fi.Size)
	}
	if fi := byName["empty"]; fi.Mode != 0o644 || fi.Size != 0 || fi.ModTime.IsZero() {
		t.Errorf("empty: got %+v", fi)
	}
	sub, err := f.ListDir(ctx, filepath.Join(root, "a/b/c"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sub) != 2 || sub[0].Name != "big" || sub[0].Mode != 0o600 || sub[1].Name != "binary" {
		t.Errorf("ListDir a/b/c = %+v", sub)
	}

	// Errors carry kinds.
	missing := filepath.Join(root, "nope")
	if err := f.ReadFile(ctx, missing, io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("ReadFile missing: want NotFound, got %v", err)
	}
	if err := f.ReadFile(ctx, filepath.Join(root, "a"), io.Discard); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("ReadFile dir: want InvalidArgument, got %v", err)
	}
	if _, err := f.ListDir(ctx, missing); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("ListDir missing: want NotFound, got %v", err)
	}
	if _, err := f.ListDir(ctx, filepath.Join(root, "empty")); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("ListDir file: want InvalidArgument, got %v", err)
	}
	if err := f.WriteFile(ctx, filepath.Join(root, "a"), strings.NewReader("x"), 0o644); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("WriteFile onto dir: want InvalidArgument, got %v", err)
	}
	// A parent that is a file cannot be created: an error, of no particular kind.
	if err := f.WriteFile(ctx, filepath.Join(root, "empty", "child"), strings.NewReader("x"), 0o644); err == nil {
		t.Errorf("WriteFile under a file: want error")
	}
}

func TestHostModesOnDisk(t *testing.T) {
	root := t.TempDir()
	f := execfs.New(&hostInstance{path: "/usr/bin:/bin"})
	for _, mode := range []fs.FileMode{0o600, 0o755, 0o640 | fs.ModeSetgid} {
		p := filepath.Join(root, "nested", "f")
		if err := f.WriteFile(context.Background(), p, strings.NewReader("x"), mode); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("mode on disk = %v, want %v", fi.Mode(), mode)
		}
	}
}

func TestHostSymlinkListed(t *testing.T) {
	root := t.TempDir()
	if err := os.Symlink("/nonexistent", filepath.Join(root, "dangling")); err != nil {
		t.Fatal(err)
	}
	list, err := execfs.New(&hostInstance{path: "/usr/bin:/bin"}).ListDir(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Mode&fs.ModeSymlink == 0 {
		t.Fatalf("want one symlink entry, got %+v", list)
	}
}

func TestExecErrorsPassThrough(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := execfs.New(&hostInstance{path: "/usr/bin:/bin"})
	if err := f.ReadFile(ctx, "/etc/hostname", io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled ctx: want context.Canceled, got %v", err)
	}
	f = execfs.New(&hostInstance{path: t.TempDir()}) // no sh at all
	if err := f.ReadFile(context.Background(), "/etc/hostname", io.Discard); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("no sh: want the instance's NotFound passed through, got %v", err)
	}
}

func TestParseList(t *testing.T) {
	out := []byte("3 81a4 1700000000\n/d/b b\x00" + "0 41ed 1700000001\n/d/a\nx\x00")
	got, err := execfs.ParseList(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a\nx" || !got[0].IsDir || got[0].Mode != fs.ModeDir|0o755 ||
		got[1].Name != "b b" || got[1].Size != 3 || got[1].Mode != 0o644 || got[1].ModTime.Unix() != 1700000000 {
		t.Fatalf("ParseList = %+v", got)
	}
	for _, bad := range []string{"3 81a4 1\n/d/b", "3 81a4\n/d/b\x00", "x 81a4 1\n/d/b\x00", "3 81a4 1", "1 81a4 1\n/d/\x00"} {
		if _, err := execfs.ParseList([]byte(bad)); err == nil {
			t.Errorf("ParseList(%q): want error", bad)
		}
	}
}

func TestUnixModeRoundTrip(t *testing.T) {
	for _, m := range []fs.FileMode{0o644, fs.ModeDir | 0o755, fs.ModeSymlink | 0o777, 0o4755&^0o4000 | fs.ModeSetuid,
		fs.ModeSticky | fs.ModeDir | 0o777, fs.ModeNamedPipe | 0o600, fs.ModeSocket | 0o600,
		fs.ModeDevice | fs.ModeCharDevice | 0o666, fs.ModeDevice | 0o660} {
		if got := execfs.FromUnixMode(execfs.ToUnixMode(m)); got != m {
			t.Errorf("round trip %v: got %v", m, got)
		}
	}
}

func TestHostListThroughSymlink(t *testing.T) {
	for name, inst := range environments(t) {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.Mkdir(filepath.Join(root, "real"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "real", "f"), []byte("abc"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("real", filepath.Join(root, "link")); err != nil {
				t.Fatal(err)
			}
			list, err := execfs.New(inst).ListDir(context.Background(), filepath.Join(root, "link"))
			if err != nil || len(list) != 1 || list[0].Name != "f" || list[0].Size != 3 {
				t.Fatalf("ListDir through a symlink = %+v, %v; want the target's entry f", list, err)
			}
		})
	}
}

// TestFake runs the same checks through the fake backend's sh and tools: the scripts stay
// within the shell subset the fake implements, and the fake's tools agree with busybox's.
func TestFake(t *testing.T) {
	b := fake.New()
	inst, err := b.Create(context.Background(), &backend.CreateRequest{ID: "execfs-test", Workdir: "/work"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Destroy(context.Background()) })
	testFS(t, execfs.New(inst), "/data")
	testRemoveMkdir(t, execfs.New(inst), "/rm")
	// The fake's native transferer sees what execfs wrote.
	var buf bytes.Buffer
	if err := inst.(backend.FileTransferer).ReadFile(context.Background(), "/data/héllo wörld ✓.txt", &buf); err != nil || buf.String() != "utf8\n" {
		t.Errorf("native read of an execfs-written file = %q, %v", buf.String(), err)
	}
}

// Removing a symlink removes the link, never what it points at, even recursively.
func TestHostRemoveLinkKeepsTarget(t *testing.T) {
	for name, inst := range environments(t) {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			target := filepath.Join(root, "target")
			if err := os.MkdirAll(filepath.Join(target, "keep"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(root, "link")); err != nil {
				t.Fatal(err)
			}
			if err := execfs.New(inst).Remove(context.Background(), filepath.Join(root, "link"), true); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(root, "link")); !os.IsNotExist(err) {
				t.Errorf("link still there: %v", err)
			}
			if _, err := os.Stat(filepath.Join(target, "keep")); err != nil {
				t.Errorf("the link's target lost its content: %v", err)
			}
		})
	}
}
