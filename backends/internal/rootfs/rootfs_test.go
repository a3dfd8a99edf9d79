package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
)

type ent struct {
	name, link string
	typ        byte
	body       string
	mode       int64
}

func mkTar(t *testing.T, gz bool, ents ...ent) string {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range ents {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body))}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	p := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImportGoodTar(t *testing.T) {
	for _, gz := range []bool{false, true} {
		img := mkTar(t, gz,
			ent{name: "./", typ: tar.TypeDir, mode: 0o755},
			ent{name: "./bin/", typ: tar.TypeDir, mode: 0o755},
			ent{name: "./bin/busybox", typ: tar.TypeReg, body: "ELF", mode: 0o4755},
			ent{name: "./bin/sh", typ: tar.TypeSymlink, link: "busybox"},
			ent{name: "./bin/abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
			ent{name: "./bin/hard", typ: tar.TypeLink, link: "./bin/busybox"},
			ent{name: "./dev/null", typ: tar.TypeChar},
			ent{name: "./etc/passwd", typ: tar.TypeReg, body: "root:x:0:0"},
		)
		dst := t.TempDir()
		if err := Import(context.Background(), img, dst, ImportLimits{}); err != nil {
			t.Fatalf("gz=%v: %v", gz, err)
		}
		fi, err := os.Stat(filepath.Join(dst, "bin/busybox"))
		if err != nil || fi.Mode()&fs.ModeSetuid != 0 || fi.Mode().Perm() != 0o755 {
			t.Fatalf("busybox: %v %v (setuid must be dropped)", fi, err)
		}
		if l, _ := os.Readlink(filepath.Join(dst, "bin/sh")); l != "busybox" {
			t.Fatalf("symlink = %q", l)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "bin/hard")); string(b) != "ELF" {
			t.Fatalf("hard link content %q", b)
		}
		if _, err := os.Lstat(filepath.Join(dst, "dev/null")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("device node under /dev should be skipped: %v", err)
		}
	}
}

func TestImportRejectsEscapes(t *testing.T) {
	outside := t.TempDir()
	cases := map[string][]ent{
		"dotdot":   {{name: "../../escape", typ: tar.TypeReg, body: "x"}},
		"dotdot2":  {{name: "a/../../escape", typ: tar.TypeReg, body: "x"}},
		"absolute": {{name: filepath.Join(outside, "escape"), typ: tar.TypeReg, body: "x"}},
		"symlink-traversal": {
			{name: "link", typ: tar.TypeSymlink, link: outside},
			{name: "link/escape", typ: tar.TypeReg, body: "x"},
		},
		"relative-symlink-traversal": {
			{name: "link", typ: tar.TypeSymlink, link: "../../../../../../../../" + outside},
			{name: "link/escape", typ: tar.TypeReg, body: "x"},
		},
		"hardlink-out": {{name: "h", typ: tar.TypeLink, link: "../../../../etc/passwd"}},
		"hardlink-abs": {{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}},
		"device":       {{name: "etc/disk", typ: tar.TypeBlock}},
	}
	for name, ents := range cases {
		t.Run(name, func(t *testing.T) {
			dst := t.TempDir()
			err := Import(context.Background(), mkTar(t, false, ents...), dst, ImportLimits{})
			if !errdefs.Is(err, errdefs.KindInvalidArgument) {
				t.Fatalf("want InvalidArgument, got %v", err)
			}
			if _, err := os.Lstat(filepath.Join(outside, "escape")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("file written outside the root")
			}
		})
	}
}

func TestImportBomb(t *testing.T) {
	// 64 MiB of zeros compresses to ~64 KiB; the limit stops it at 1 MiB.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: 64 << 20})
	tw.Write(make([]byte, 64<<20))
	tw.Close()
	zw.Close()
	img := filepath.Join(t.TempDir(), "bomb.tar.gz")
	os.WriteFile(img, buf.Bytes(), 0o644)
	dst := t.TempDir()
	err := Import(context.Background(), img, dst, ImportLimits{MaxBytes: 1 << 20})
	if !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "bomb")); err == nil && fi.Size() > 1<<20+1 {
		t.Fatalf("wrote %d bytes past the limit", fi.Size())
	}
	var many []ent
	for i := 0; i < 20; i++ {
		many = append(many, ent{name: "d" + strings.Repeat("x", i), typ: tar.TypeDir, mode: 0o755})
	}
	err = Import(context.Background(), mkTar(t, false, many...), t.TempDir(), ImportLimits{MaxEntries: 10})
	if !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("entry limit: want InvalidArgument, got %v", err)
	}
}

func TestImportDirAndBusybox(t *testing.T) {
	p, reason := testenv.RootfsTar()
	testenv.Require(t, "rootfs", reason)
	dst := t.TempDir()
	if err := Import(context.Background(), p, dst, ImportLimits{}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "bin/sh")); err != nil || l != "busybox" {
		t.Fatalf("bin/sh: %q %v", l, err)
	}
	// A directory image is copied the same way, symlinks kept as symlinks.
	dst2 := t.TempDir()
	if err := Import(context.Background(), dst, dst2, ImportLimits{}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dst2, "bin/sh")); err != nil || l != "busybox" {
		t.Fatalf("copied bin/sh: %q %v", l, err)
	}
}

func TestFSStaysInRoot(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	outside := t.TempDir()
	f := &FS{Name: "test", Root: root}
	if err := os.Symlink("/", filepath.Join(root, "up")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside+"/target", filepath.Join(root, "abs")); err != nil {
		t.Fatal(err)
	}
	// Writes through symlinks land inside the root.
	if err := f.WriteFile(ctx, "/up"+outside+"/x", strings.NewReader("in"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(ctx, "/abs", strings.NewReader("in"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"x", "target"} {
		if _, err := os.Lstat(filepath.Join(outside, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s written outside the root", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, outside, "target")); err != nil || string(b) != "in" {
		t.Fatalf("write through absolute symlink: %q %v", b, err)
	}
	// Reads through symlinks too.
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	var buf bytes.Buffer
	err := f.ReadFile(ctx, "/up"+outside+"/secret", &buf)
	if !errdefs.Is(err, errdefs.KindNotFound) || buf.Len() != 0 {
		t.Fatalf("read through symlink: %v %q", err, buf.String())
	}
	if err := f.ReadFile(ctx, "/up", io.Discard); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("read dir: %v", err)
	}
	list, err := f.ListDir(ctx, "/")
	if err != nil || len(list) < 2 || list[0].Name != "abs" {
		t.Fatalf("list: %+v %v", list, err)
	}
}

func TestFSBindsReadOnly(t *testing.T) {
	ctx := context.Background()
	root, host := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(host, "f"), []byte("host file"), 0o644)
	os.Symlink("usr", filepath.Join(root, "alias"))
	f := &FS{Name: "test", Root: root, Binds: map[string]string{"/usr": host}}
	for _, p := range []string{"/usr/f", "/alias/f"} {
		var buf bytes.Buffer
		if err := f.ReadFile(ctx, p, &buf); err != nil || buf.String() != "host file" {
			t.Fatalf("read %s: %q %v", p, buf.String(), err)
		}
		if err := f.WriteFile(ctx, p, strings.NewReader("x"), 0o644); !errdefs.Is(err, errdefs.KindPermissionDenied) {
			t.Fatalf("write %s: want PermissionDenied, got %v", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(host, "f")); string(b) != "host file" {
		t.Fatalf("bind modified: %q", b)
	}
}

// TestFSSpecialFiles: a sandbox can leave a fifo where the manager reads or writes. Opening
// one blocks until the other end opens, which would hang the file API regardless of ctx;
// only regular files are read or written.
func TestFSSpecialFiles(t *testing.T) {
	root := t.TempDir()
	f := &FS{Name: "test", Root: root}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		op   func(ctx context.Context) error
	}{
		{"read", func(ctx context.Context) error { return f.ReadFile(ctx, "/fifo", io.Discard) }},
		{"write", func(ctx context.Context) error { return f.WriteFile(ctx, "/fifo", strings.NewReader("x"), 0o644) }},
		{"write through symlink", func(ctx context.Context) error {
			return f.WriteFile(ctx, "/link", strings.NewReader("x"), 0o644)
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		done := make(chan error, 1)
		go func() { done <- tc.op(ctx) }()
		select {
		case err := <-done:
			if !errdefs.Is(err, errdefs.KindInvalidArgument) {
				t.Errorf("%s: want InvalidArgument, got %v", tc.name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s of a fifo hangs", tc.name)
		}
		cancel()
	}
	if fi, err := os.Lstat(filepath.Join(root, "fifo")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("fifo replaced: %v %v", fi, err)
	}
}
