package tarfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/tarfs"
	"github.com/moatsh/moat/internal/tarfs/tarfstest"
)

type member struct {
	hdr  tar.Header
	body string
}

func tarOf(t *testing.T, ms ...member) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := m.hdr
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(m.body))
		}
	}
	_ = tw.Close()
	return &b
}

func reg(name, body string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, body: body}
}

func dir(name string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

// memTree is a Source and Dest in memory that records every path it is given.
type memTree struct {
	files map[string]string
	dirs  map[string]bool
	lists map[string][]backend.FileInfo // when set, what ListDir answers (a lying tree)
}

func newMemTree() *memTree { return &memTree{files: map[string]string{}, dirs: map[string]bool{}} }

func (m *memTree) WriteFile(_ context.Context, p string, r io.Reader, _ fs.FileMode) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.files[p] = string(b)
	return nil
}

func (m *memTree) Mkdir(_ context.Context, p string, _ fs.FileMode) error {
	m.dirs[p] = true
	return nil
}

func (m *memTree) ListDir(_ context.Context, p string) ([]backend.FileInfo, error) {
	if l, ok := m.lists[p]; ok {
		return l, nil
	}
	return nil, errdefs.NotFoundf("memtree: %s: no such directory", p)
}

func (m *memTree) ReadFile(_ context.Context, p string, w io.Writer) error {
	_, err := io.WriteString(w, "content of "+p)
	return err
}

func TestUnpackRefusesEscapesAndSpecialFiles(t *testing.T) {
	for name, bad := range map[string]*bytes.Buffer{
		"dotdot":    tarOf(t, reg("../escape", "x")),
		"nested":    tarOf(t, reg("a/../../escape", "x")),
		"absolute":  tarOf(t, reg("/etc/passwd", "x")),
		"backslash": tarOf(t, reg(`..\escape`, "x")),
		"notutf8":   tarOf(t, reg("bad\xff", "x")),
		"symlink":   tarOf(t, member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc"}}),
		"hardlink":  tarOf(t, member{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hl", Linkname: "a.txt"}}),
		"device":    tarOf(t, member{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev"}}),
		"fifo":      tarOf(t, member{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo"}}),
		"garbage":   bytes.NewBufferString(strings.Repeat("not a tar ", 100)),
	} {
		dst := newMemTree()
		_, err := tarfs.Unpack(context.Background(), tarfs.NewReader(bad, tarfs.Limits{}), dst, "/w")
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
		for p := range dst.files {
			if !strings.HasPrefix(p, "/w/") || strings.Contains(p, "..") {
				t.Errorf("%s: wrote %s", name, p)
			}
		}
	}
}

func TestUnpackCaps(t *testing.T) {
	var many []member
	for range 11 {
		many = append(many, reg("f"+strings.Repeat("x", len(many)), "x"))
	}
	// A header that claims a huge file: refused before any byte is read.
	huge := member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "huge", Size: 1 << 40}}
	var hb bytes.Buffer
	tw := tar.NewWriter(&hb)
	_ = tw.WriteHeader(&huge.hdr) // no body: the cap must fire on the header alone
	for name, tc := range map[string]struct {
		tar *bytes.Buffer
		lim tarfs.Limits
	}{
		"entries":   {tarOf(t, many...), tarfs.Limits{MaxEntries: 10}},
		"file":      {tarOf(t, reg("a", strings.Repeat("x", 101))), tarfs.Limits{MaxFileBytes: 100}},
		"total":     {tarOf(t, reg("a", strings.Repeat("x", 60)), reg("b", strings.Repeat("x", 60))), tarfs.Limits{MaxBytes: 100}},
		"huge":      {&hb, tarfs.Limits{}},
		"skipped":   {tarOf(t, member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l1", Linkname: "x"}}, member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l2", Linkname: "x"}}), tarfs.Limits{MaxEntries: 1}},
		"dirsalone": {tarOf(t, dir("a/"), dir("b/"), dir("c/")), tarfs.Limits{MaxEntries: 2}},
	} {
		r := tarfs.NewReader(tc.tar, tc.lim)
		r.SkipSpecial = true
		_, err := tarfs.Unpack(context.Background(), r, newMemTree(), "/w")
		if !errdefs.Is(err, errdefs.KindResourceExhausted) {
			t.Errorf("%s: %v, want resource_exhausted", name, err)
		}
	}
}

func TestUnpackWritesFilesAndEmptyDirs(t *testing.T) {
	dst := newMemTree()
	res, err := tarfs.Unpack(context.Background(), tarfs.NewReader(tarOf(t,
		dir("./"), reg("./a.txt", "alpha"), dir("sub/"), reg("sub/b.txt", "beta"),
		dir("empty/"), dir("deep/"), dir("deep/er/"), reg("ünï cödé.txt", "u"),
	), tarfs.Limits{}), dst, "/w")
	if err != nil {
		t.Fatal(err)
	}
	if res != (tarfs.Result{Files: 3, Dirs: 4, Bytes: 10}) {
		t.Errorf("result %+v", res)
	}
	want := map[string]string{"/w/a.txt": "alpha", "/w/sub/b.txt": "beta", "/w/ünï cödé.txt": "u"}
	if len(dst.files) != len(want) {
		t.Errorf("files %q", dst.files)
	}
	for k, v := range want {
		if dst.files[k] != v {
			t.Errorf("%s = %q, want %q", k, dst.files[k], v)
		}
	}
	// Only directories nothing else creates are made: sub has a file, deep has deep/er.
	if len(dst.dirs) != 2 || !dst.dirs["/w/empty"] || !dst.dirs["/w/deep/er"] {
		t.Errorf("mkdirs %v", dst.dirs)
	}
}

// A listing entry that is not a plain name must not become an archive entry (a compromised
// agent or a hostile provider lists whatever it likes).
func TestPackRejectsListedNamesThatAreNotNames(t *testing.T) {
	for _, name := range []string{"../outside.txt", "..", ".", "", "a/b", "/abs", "nul\x00", `a\b`} {
		src := newMemTree()
		src.lists = map[string][]backend.FileInfo{"/src": {{Name: "ok.txt", Mode: 0o644}, {Name: name, Mode: 0o644}}}
		var out bytes.Buffer
		_, err := tarfs.Pack(context.Background(), &out, src, "/src", tarfs.Limits{})
		if err == nil {
			t.Errorf("entry %q: packed", name)
		}
		tr := tar.NewReader(&out)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if _, err := tarfs.CleanName(h.Name); err != nil || h.Name != "ok.txt" {
				t.Errorf("entry %q: archive holds %q", name, h.Name)
			}
		}
	}
}

// Symlinks are never followed (a link to "." would recurse forever) and never packed.
func TestPackSkipsLinks(t *testing.T) {
	src := newMemTree()
	src.lists = map[string][]backend.FileInfo{
		"/src":     {{Name: "f", Mode: 0o644}, {Name: "loop", IsDir: true, Mode: fs.ModeSymlink | 0o777}, {Name: "sub", IsDir: true, Mode: fs.ModeDir | 0o755}},
		"/src/sub": {{Name: "g", Mode: 0o600}},
	}
	var out bytes.Buffer
	res, err := tarfs.Pack(context.Background(), &out, src, "/src", tarfs.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res != (tarfs.Result{Files: 2, Dirs: 1, Bytes: int64(len("content of /src/f") + len("content of /src/sub/g"))}) {
		t.Errorf("result %+v", res)
	}
	got := newMemTree()
	if _, err := tarfs.Unpack(context.Background(), tarfs.NewReader(&out, tarfs.Limits{}), got, "."); err != nil {
		t.Fatal(err)
	}
	if len(got.files) != 2 || got.files["f"] != "content of /src/f" || got.files["sub/g"] != "content of /src/sub/g" {
		t.Errorf("unpacked %q", got.files)
	}
}

func TestPackCaps(t *testing.T) {
	src := newMemTree()
	src.lists = map[string][]backend.FileInfo{"/src": {{Name: "a", Mode: 0o644}, {Name: "b", Mode: 0o644}}}
	_, err := tarfs.Pack(context.Background(), io.Discard, src, "/src", tarfs.Limits{MaxEntries: 1})
	if !errdefs.Is(err, errdefs.KindResourceExhausted) {
		t.Errorf("entries: %v", err)
	}
	_, err = tarfs.Pack(context.Background(), io.Discard, src, "/src", tarfs.Limits{MaxBytes: 20})
	if !errdefs.Is(err, errdefs.KindResourceExhausted) {
		t.Errorf("bytes: %v", err)
	}
	if _, err := tarfs.Pack(context.Background(), io.Discard, src, "/missing", tarfs.Limits{}); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("missing root: %v", err)
	}
}

// Copy passes on exactly what Reader accepts; special files are skipped when asked.
func TestCopyFilters(t *testing.T) {
	in := tarOf(t, dir("./"), reg("./a", "alpha"),
		member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc/passwd"}}, dir("d/"))
	r := tarfs.NewReader(in, tarfs.Limits{})
	r.SkipSpecial = true
	var out bytes.Buffer
	w := tarfs.NewWriter(&out, tarfs.Limits{})
	res, err := tarfs.Copy(w, r)
	if err != nil || w.Close() != nil {
		t.Fatal(err)
	}
	if res != (tarfs.Result{Files: 1, Dirs: 1, Bytes: 5}) {
		t.Errorf("result %+v", res)
	}
	got, _ := tarfstest.Contents(&out)
	if names := tarfstest.Names(got); names != "a,d/" {
		t.Errorf("names %q", names)
	}
}

// The stream's own error (a body over its limit) survives, so a front end can answer it.
func TestStreamErrorIsKept(t *testing.T) {
	cause := errdefs.Newf(errdefs.ErrResourceExhausted, "body too large")
	full := tarOf(t, reg("a", strings.Repeat("x", 4096)))
	r := tarfs.NewReader(io.MultiReader(bytes.NewReader(full.Bytes()[:1024]), errReader{cause}), tarfs.Limits{})
	_, err := tarfs.Unpack(context.Background(), r, newMemTree(), "/w")
	if !errors.Is(err, cause) || !errdefs.Is(err, errdefs.KindResourceExhausted) {
		t.Errorf("err = %v, want the stream's", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestHostDirRoundTripStaysInside(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	src := filepath.Join(base, "src")
	must(t, os.MkdirAll(filepath.Join(src, "sub", "empty"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o600))
	must(t, os.WriteFile(filepath.Join(src, "sub", "b.txt"), []byte("beta"), 0o644))
	must(t, os.WriteFile(filepath.Join(base, "secret"), []byte("secret"), 0o644))
	must(t, os.Symlink("../secret", filepath.Join(src, "link")))
	h, err := tarfs.OpenHostDir(src, false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var out bytes.Buffer
	if _, err := tarfs.Pack(ctx, &out, h, ".", tarfs.Limits{}); err != nil {
		t.Fatal(err)
	}
	dstDir := filepath.Join(base, "dst", "x")
	d, err := tarfs.OpenHostDir(dstDir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	res, err := tarfs.Unpack(ctx, tarfs.NewReader(&out, tarfs.Limits{}), d, ".")
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 2 || res.Dirs != 2 {
		t.Errorf("result %+v", res)
	}
	if b, _ := os.ReadFile(filepath.Join(dstDir, "sub", "b.txt")); string(b) != "beta" {
		t.Errorf("b.txt = %q", b)
	}
	if st, err := os.Stat(filepath.Join(dstDir, "a.txt")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("a.txt: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dstDir, "sub", "empty")); err != nil || !st.IsDir() {
		t.Errorf("empty dir: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dstDir, "link")); !os.IsNotExist(err) {
		t.Errorf("the link was copied: %v", err)
	}
	// A symlink already in the destination does not lead a write outside it.
	must(t, os.Symlink(base, filepath.Join(dstDir, "out")))
	_, err = tarfs.Unpack(ctx, tarfs.NewReader(tarOf(t, reg("out/pwned", "x")), tarfs.Limits{}), d, ".")
	if err == nil {
		t.Errorf("write through a symlink out of the destination succeeded")
	}
	if _, err := os.Stat(filepath.Join(base, "pwned")); !os.IsNotExist(err) {
		t.Errorf("pwned exists outside the destination")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestNameLengthAndDepth(t *testing.T) {
	for name, n := range map[string]string{
		"2000 deep":         strings.Repeat("a/", 2000) + "f",
		"257 deep":          strings.Repeat("a/", 256) + "f",
		"256-byte element":  strings.Repeat("e", 256),
		"5000 bytes in all": strings.Repeat("abcd/", 1000),
		"100000-byte name":  strings.Repeat("n", 100000),
	} {
		if _, err := tarfs.CleanName(n); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
	}
	if _, err := tarfs.CleanName(strings.Repeat("a/", 255) + "f"); err != nil {
		t.Errorf("256 deep: %v", err)
	}
	// Under a base directory the joined path counts.
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	_ = tw.WriteHeader(&tar.Header{Name: strings.Repeat("a/", 250) + "f", Typeflag: tar.TypeReg, Mode: 0o644})
	_ = tw.Close()
	r := tarfs.NewReader(&b, tarfs.Limits{})
	r.Base = "/" + strings.Repeat("d/", 10) + "x"
	if _, err := r.Next(); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("251 deep under an 11-deep base: %v, want invalid_argument", err)
	}
}
