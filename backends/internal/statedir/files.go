package statedir

import (
	"context"
	"io"
	"io/fs"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/rootfs"
)

// Files is backend.FileTransferer for an instance of a local backend, which embeds it:
// the sandbox's files are served from the host side of its root (rootfs.FS: symlinks
// resolve inside the root, paths under read-only host binds are PermissionDenied). A write
// to a sandbox that is gone is NotFound rather than recreating its root.
type Files struct {
	sb *Sandbox
	fs *rootfs.FS
}

// Files returns the file transfer of the sandbox, whose root fs serves.
func (s *Sandbox) Files(fs *rootfs.FS) Files { return Files{sb: s, fs: fs} }

// WriteFile implements backend.FileTransferer.
func (f Files) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	if err := f.sb.Gone(); err != nil {
		return err
	}
	return f.fs.WriteFile(ctx, p, r, mode)
}

// ReadFile implements backend.FileTransferer.
func (f Files) ReadFile(ctx context.Context, p string, w io.Writer) error {
	return f.fs.ReadFile(ctx, p, w)
}

// ListDir implements backend.FileTransferer.
func (f Files) ListDir(ctx context.Context, p string) ([]backend.FileInfo, error) {
	return f.fs.ListDir(ctx, p)
}

var _ backend.FileTransferer = Files{}
