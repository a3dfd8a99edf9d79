package tarfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/tarfs"
)

// fuzzLimits are small so that the fuzzer reaches every cap.
var fuzzLimits = tarfs.Limits{MaxBytes: 4096, MaxEntries: 16, MaxFileBytes: 1024}

// fuzzTar builds a seed archive from (type, name, body) triples.
func fuzzTar(members ...[3]string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range members {
		h := &tar.Header{Typeflag: m[0][0], Name: m[1], Mode: 0o644, Linkname: "target"}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(m[2]))
		}
		_ = tw.WriteHeader(h)
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(m[2]))
		}
	}
	_ = tw.Close()
	return b.Bytes()
}

func addTarSeeds(f *testing.F) {
	reg, dir := string(rune(tar.TypeReg)), string(rune(tar.TypeDir))
	for _, seed := range [][]byte{
		fuzzTar([3]string{dir, "a/", ""}, [3]string{reg, "a/b.txt", "hello"}, [3]string{reg, "c", ""}),
		fuzzTar([3]string{reg, "../escape", "x"}),
		fuzzTar([3]string{reg, "/etc/passwd", "x"}),
		fuzzTar([3]string{reg, "a/../../x", "x"}),
		fuzzTar([3]string{reg, `..\x`, "x"}),
		fuzzTar([3]string{string(rune(tar.TypeSymlink)), "l", ""}, [3]string{reg, "l/x", "through the link"}),
		fuzzTar([3]string{string(rune(tar.TypeLink)), "h", ""}),
		fuzzTar([3]string{string(rune(tar.TypeChar)), "dev", ""}),
		fuzzTar([3]string{reg, "big", strings.Repeat("x", 2000)}),
		fuzzTar([3]string{reg, "a", "1"}, [3]string{reg, "a/b", "2"}),
		fuzzTar([3]string{dir, "./", ""}, [3]string{reg, "./x", "y"}),
		[]byte("not a tar at all"),
		{},
	} {
		f.Add(seed)
	}
}

// FuzzReader reads arbitrary bytes as an archive and checks what Reader yields: only clean
// relative names, sizes within the caps, content exactly as long as announced, and every
// error an InvalidArgument or ResourceExhausted. What Copy re-encodes reads back as the
// same entries.
func FuzzReader(f *testing.F) {
	addTarSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var reencoded bytes.Buffer
		w := tarfs.NewWriter(&reencoded, fuzzLimits)
		r := tarfs.NewReader(bytes.NewReader(data), fuzzLimits)
		var names []string
		var total int64
		var rerr error
		for {
			e, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rerr = err
				break
			}
			checkEntryName(t, e.Name)
			if len(names)+1 > fuzzLimits.MaxEntries {
				t.Fatalf("more than %d entries returned", fuzzLimits.MaxEntries)
			}
			names = append(names, e.Name)
			if e.IsDir {
				if e.Size != 0 {
					t.Fatalf("directory %q with size %d", e.Name, e.Size)
				}
				if err := w.WriteDir(e); err != nil {
					t.Fatalf("Writer refused directory %+v that Reader accepted: %v", e, err)
				}
				continue
			}
			if e.Size < 0 || e.Size > fuzzLimits.MaxFileBytes {
				t.Fatalf("entry %q size %d outside [0, %d]", e.Name, e.Size, fuzzLimits.MaxFileBytes)
			}
			if total += e.Size; total > fuzzLimits.MaxBytes {
				t.Fatalf("content %d over the %d cap", total, fuzzLimits.MaxBytes)
			}
			body, err := io.ReadAll(r)
			if err != nil {
				rerr = err
				break
			}
			if int64(len(body)) != e.Size {
				t.Fatalf("entry %q: read %d bytes, header said %d", e.Name, len(body), e.Size)
			}
			if err := w.WriteFile(e, bytes.NewReader(body)); err != nil {
				t.Fatalf("Writer refused file %+v that Reader accepted: %v", e, err)
			}
		}
		if rerr != nil {
			if k := errdefs.KindOf(rerr); k != errdefs.KindInvalidArgument && k != errdefs.KindResourceExhausted {
				t.Fatalf("error of kind %v: %v", k, rerr)
			}
			return
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// What was accepted, re-encoded, is accepted again and unchanged.
		r2 := tarfs.NewReader(&reencoded, fuzzLimits)
		for i := 0; ; i++ {
			e, err := r2.Next()
			if errors.Is(err, io.EOF) {
				if i != len(names) {
					t.Fatalf("re-encoded archive has %d entries, want %d", i, len(names))
				}
				break
			}
			if err != nil {
				t.Fatalf("re-encoded archive refused: %v", err)
			}
			if i >= len(names) || e.Name != names[i] {
				t.Fatalf("re-encoded entry %d = %q, want %v", i, e.Name, names)
			}
		}
	})
}

func checkEntryName(t *testing.T, name string) {
	t.Helper()
	if name == "" || name == "." || strings.HasPrefix(name, "/") || path.Clean(name) != name ||
		strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		t.Fatalf("Reader returned an unsafe entry name %q", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			t.Fatalf("Reader returned a name with '..': %q", name)
		}
	}
}

// FuzzUnpackHostDir unpacks arbitrary bytes into a real directory through HostDir and
// checks that nothing outside it was created or changed, and that the result stays within
// the caps.
func FuzzUnpackHostDir(f *testing.F) {
	addTarSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		box := t.TempDir()
		target := filepath.Join(box, "target")
		sentinel := filepath.Join(box, "outside")
		if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A link inside the target pointing out of it: os.Root must not follow it.
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(box, filepath.Join(target, "l")); err != nil {
			t.Fatal(err)
		}
		h, err := tarfs.OpenHostDir(target, false)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		res, _ := tarfs.Unpack(context.Background(), tarfs.NewReader(bytes.NewReader(data), fuzzLimits), h, ".")
		if res.Files+res.Dirs > fuzzLimits.MaxEntries || res.Bytes > fuzzLimits.MaxBytes || res.Files < 0 || res.Bytes < 0 {
			t.Fatalf("result %+v is over the caps %+v", res, fuzzLimits)
		}
		err = filepath.WalkDir(box, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p == box || p == sentinel || p == target || strings.HasPrefix(p, target+string(filepath.Separator)) {
				return nil
			}
			t.Errorf("archive wrote outside its directory: %s", p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "untouched" {
			t.Fatalf("file outside the target changed: %q %v", b, err)
		}
	})
}

// FuzzCleanName checks CleanName alone: an accepted name is relative, clean, and joined to
// a root it stays under that root.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"a/b", "./a", "a/../b", "..", "/abs", "a//b/", `a\b`, "a\x00b", "\xff", ".", "./", "...", "a/./b/.", strings.Repeat("x/", 3000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, err := tarfs.CleanName(name)
		if err != nil {
			if !errdefs.Is(err, errdefs.KindInvalidArgument) {
				t.Fatalf("CleanName(%q) error of kind %v: %v", name, errdefs.KindOf(err), err)
			}
			return
		}
		if c == "" {
			return // the root itself
		}
		checkEntryName(t, c)
		if j := path.Join("/root", c); !strings.HasPrefix(j, "/root/") {
			t.Fatalf("CleanName(%q) = %q joins to %q, outside /root", name, c, j)
		}
		if c2, err := tarfs.CleanName(c); err != nil || c2 != c {
			t.Fatalf("CleanName is not idempotent: %q -> %q -> %q, %v", name, c, c2, err)
		}
	})
}
