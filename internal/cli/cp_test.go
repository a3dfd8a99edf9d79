package cli

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
)

// listingHandle is a sandbox whose directory listings say whatever the test wants, as a
// compromised agent or a hostile provider could.
type listingHandle struct {
	client.Handle
	dirs map[string][]moat.FileInfo
}

func (h listingHandle) ListDir(_ context.Context, p string) ([]moat.FileInfo, error) {
	if ents, ok := h.dirs[p]; ok {
		return ents, nil
	}
	return nil, errdefs.NotFoundf("test: %s is not a directory", p)
}

func (h listingHandle) ReadFile(_ context.Context, p string, w io.Writer) error {
	_, err := io.WriteString(w, "content of "+p)
	return err
}

// A listing entry that is not a plain name must not make cp write outside the destination.
func TestDownloadRejectsEntriesThatAreNotNames(t *testing.T) {
	for _, name := range []string{"../outside.txt", "..", ".", "", "a/b", "/abs", "nul\x00"} {
		root := t.TempDir()
		dst := filepath.Join(root, "a", "b")
		h := listingHandle{dirs: map[string][]moat.FileInfo{
			"/src": {{Name: "ok.txt", Mode: 0o644}, {Name: name, Mode: 0o644}},
		}}
		err := download(context.Background(), h, "/src", dst)
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("entry %q: err = %v, want invalid_argument", name, err)
		}
		var written []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				written = append(written, strings.TrimPrefix(p, root))
			}
			return nil
		})
		for _, w := range written {
			if !strings.HasPrefix(w, "/a/b/") {
				t.Errorf("entry %q: cp wrote %s outside its destination", name, w)
			}
		}
	}
}

// A symbolic link to a directory is not followed (a link to "." would recurse forever).
func TestDownloadDoesNotFollowLinkedDirectories(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "out")
	h := listingHandle{dirs: map[string][]moat.FileInfo{
		"/src": {{Name: "f", Mode: 0o644}, {Name: "loop", IsDir: true, Mode: fs.ModeSymlink | 0o777}},
	}}
	if err := download(context.Background(), h, "/src", dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "content of /src/f" {
		t.Fatalf("f: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "loop")); !os.IsNotExist(err) {
		t.Fatalf("loop was copied: %v", err)
	}
}
