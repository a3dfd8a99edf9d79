package cli

import (
	"archive/tar"
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

// archiveHandle is a sandbox whose archives hold whatever the test wants, as a compromised
// or hostile server could send.
type archiveHandle struct {
	client.Handle
	entries []tar.Header
}

func (h archiveHandle) ListDir(context.Context, string) ([]moat.FileInfo, error) {
	return nil, nil // every source is a directory
}

func (h archiveHandle) GetArchive(_ context.Context, _ string, w io.Writer, _ moat.ArchiveLimits) error {
	tw := tar.NewWriter(w)
	for _, hdr := range h.entries {
		body := "content of " + hdr.Name
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			_, _ = io.WriteString(tw, body)
		}
	}
	return tw.Close()
}

// An archive entry that would land outside the destination is refused, and nothing is
// written outside it.
func TestDownloadRefusesEntriesOutsideTheDestination(t *testing.T) {
	for _, bad := range []tar.Header{
		{Typeflag: tar.TypeReg, Name: "../outside.txt", Mode: 0o644},
		{Typeflag: tar.TypeReg, Name: "a/../../outside.txt", Mode: 0o644},
		{Typeflag: tar.TypeReg, Name: "/abs", Mode: 0o644},
		{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc"},
		{Typeflag: tar.TypeLink, Name: "hard", Linkname: "/etc/passwd"},
	} {
		root := t.TempDir()
		dst := filepath.Join(root, "a", "b")
		h := archiveHandle{entries: []tar.Header{{Typeflag: tar.TypeReg, Name: "ok.txt", Mode: 0o644}, bad}}
		err := download(context.Background(), h, "/src", dst)
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("entry %q: err = %v, want invalid_argument", bad.Name, err)
		}
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(p, dst+string(filepath.Separator)) {
				t.Errorf("entry %q: cp wrote %s outside its destination", bad.Name, p)
			}
			return nil
		})
	}
}

// A symlink already in the destination does not lead a download outside it.
func TestDownloadDoesNotWriteThroughLinks(t *testing.T) {
	root := t.TempDir()
	dst := filepath.Join(root, "out")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(dst, "up")); err != nil {
		t.Fatal(err)
	}
	h := archiveHandle{entries: []tar.Header{{Typeflag: tar.TypeReg, Name: "up/pwned", Mode: 0o644}}}
	if err := download(context.Background(), h, "/out", root); err == nil { // into root/out
		t.Errorf("download through a symlink succeeded")
	}
	if _, err := os.Lstat(filepath.Join(root, "pwned")); !os.IsNotExist(err) {
		t.Errorf("the download wrote through a symlink out of its destination: %v", err)
	}
}
