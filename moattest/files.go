package moattest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/tarfs/tarfstest"
)

func testRemoveMkdir(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	if err := sb.Mkdir(ctx, "/workspace/a/b ✓", 0o700); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if err := sb.Mkdir(ctx, "a/b ✓", 0); err != nil {
		t.Errorf("mkdir of an existing directory, relative to the workdir: %v", err)
	}
	entries, err := sb.ListDir(ctx, "/workspace/a")
	if err != nil || len(entries) != 1 || !entries[0].IsDir || entries[0].Mode.Perm() != 0o700 {
		t.Errorf("after mkdir: %+v, %v", entries, err)
	}
	if err := sb.WriteFile(ctx, "/workspace/a/b ✓/f", strings.NewReader("x"), 0); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "mkdir over a file", sb.Mkdir(ctx, "/workspace/a/b ✓/f", 0), errdefs.KindAlreadyExists)
	wantKind(t, "remove a directory without recursive", sb.Remove(ctx, "/workspace/a", false), errdefs.KindFailedPrecondition)
	if err := sb.Remove(ctx, "/workspace/a/b ✓/f", false); err != nil {
		t.Errorf("remove a file: %v", err)
	}
	wantKind(t, "remove twice", sb.Remove(ctx, "/workspace/a/b ✓/f", false), errdefs.KindNotFound)
	if err := sb.Remove(ctx, "/workspace/a", true); err != nil {
		t.Errorf("remove a tree: %v", err)
	}
	_, err = sb.ListDir(ctx, "/workspace/a")
	wantKind(t, "list a removed tree", err, errdefs.KindNotFound)
	wantKind(t, "remove /", sb.Remove(ctx, "/", true), errdefs.KindInvalidArgument)
	for _, p := range []string{"/workspace/../etc", "../etc", "/bad\x00name"} {
		wantKind(t, fmt.Sprintf("remove %q", p), sb.Remove(ctx, p, true), errdefs.KindInvalidArgument)
		wantKind(t, fmt.Sprintf("mkdir %q", p), sb.Mkdir(ctx, p, 0), errdefs.KindInvalidArgument)
	}
}

// tarOf builds an archive; a regular entry's content is its Linkname.
func tarOf(t *testing.T, hdrs ...tar.Header) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		body := h.Linkname
		if h.Typeflag == tar.TypeReg {
			h.Linkname = ""
			if h.Size == 0 {
				h.Size = int64(len(body))
			}
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = io.WriteString(tw, body)
		}
	}
	if hdrs[len(hdrs)-1].Size <= int64(len(hdrs[len(hdrs)-1].Linkname)) {
		_ = tw.Close()
	}
	return &b
}

func testArchive(t *testing.T, tg Target) {
	ctx := ctxT(t)
	sb := create(t, tg, moat.Spec{})
	in := tarOf(t,
		tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeReg, Name: "./a.txt", Mode: 0o644, Linkname: "alpha"},
		tar.Header{Typeflag: tar.TypeReg, Name: "sub/b ✓.txt", Mode: 0o600, Linkname: "beta"},
		tar.Header{Typeflag: tar.TypeDir, Name: "empty/", Mode: 0o755},
	)
	res, err := sb.PutArchive(ctx, "proj", in, moat.ArchiveLimits{})
	if err != nil || res != (moat.ArchiveResult{Files: 2, Dirs: 1, Bytes: 9}) {
		t.Fatalf("put archive = %+v, %v; want 2 files, 1 dir, 9 bytes", res, err)
	}
	var b bytes.Buffer
	if err := sb.ReadFile(ctx, "/workspace/proj/sub/b ✓.txt", &b); err != nil || b.String() != "beta" {
		t.Errorf("read an unpacked file = %q, %v", b.String(), err)
	}
	// Links are not followed and not carried.
	if r, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"ln", "-s", "/", "/workspace/proj/root-link"}}); err != nil || r.ExitCode != 0 {
		t.Fatalf("ln: %+v %v", r, err)
	}
	var out bytes.Buffer
	if err := sb.GetArchive(ctx, "/workspace/proj", &out, moat.ArchiveLimits{}); err != nil {
		t.Fatalf("get archive: %v", err)
	}
	got, err := tarfstest.Contents(&out)
	if err != nil {
		t.Fatalf("archive stream: %v", err)
	}
	want := map[string]string{"a.txt": "alpha", "empty/": "", "sub/": "", "sub/b ✓.txt": "beta"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("get archive = %q, want %q", got, want)
	}
	err = sb.GetArchive(ctx, "/workspace/missing", io.Discard, moat.ArchiveLimits{})
	wantKind(t, "get archive of a missing directory", err, errdefs.KindNotFound)
	err = sb.GetArchive(ctx, "/workspace/proj/a.txt", io.Discard, moat.ArchiveLimits{})
	wantKind(t, "get archive of a file", err, errdefs.KindInvalidArgument)
	err = sb.GetArchive(ctx, "/workspace/proj", io.Discard, moat.ArchiveLimits{MaxEntries: 2})
	wantKind(t, "get archive over its entry cap", err, errdefs.KindResourceExhausted)

	// Hostile archives: refused, with nothing outside the target.
	for name, bad := range map[string]*bytes.Buffer{
		"dotdot":    tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Linkname: "x"}),
		"absolute":  tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "/escape", Linkname: "x"}),
		"symlink":   tarOf(t, tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/"}),
		"device":    tarOf(t, tar.Header{Typeflag: tar.TypeChar, Name: "dev"}),
		"garbage":   bytes.NewBufferString(strings.Repeat("not a tar ", 100)),
		"2000 deep": tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("d/", 2000) + "f", Mode: 0o644}),
	} {
		_, err := sb.PutArchive(ctx, "/workspace/x", bad, moat.ArchiveLimits{})
		wantKind(t, "put archive "+name, err, errdefs.KindInvalidArgument)
	}
	if _, err := sb.ListDir(ctx, "/escape"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("an archive escaped to /escape: %v", err)
	}
	// Tar bombs: a header that claims a terabyte, and more entries than allowed.
	bomb := tarOf(t, tar.Header{Typeflag: tar.TypeReg, Name: "huge", Size: 1 << 40})
	_, err = sb.PutArchive(ctx, "/workspace/bomb", bomb, moat.ArchiveLimits{})
	wantKind(t, "put archive of a terabyte file", err, errdefs.KindResourceExhausted)
	var many []tar.Header
	for i := range 20 {
		many = append(many, tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("f%02d", i), Linkname: "x"})
	}
	_, err = sb.PutArchive(ctx, "/workspace/many", tarOf(t, many...), moat.ArchiveLimits{MaxEntries: 10})
	wantKind(t, "put archive over its entry cap", err, errdefs.KindResourceExhausted)
}
