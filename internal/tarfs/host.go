package tarfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// HostDir is a Source and Dest over one directory of this host, for the local side of a
// copy (moat cp). Every path is resolved through os.Root: no name and no symlink inside the
// directory leads outside it. Paths are relative to the directory ("." is the directory).
type HostDir struct {
	root *os.Root
}

// OpenHostDir opens the directory dir; with create, it (and its parents) is made first.
func OpenHostDir(dir string, create bool) (*HostDir, error) {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, hostErr(err)
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, hostErr(err)
	}
	return &HostDir{root: r}, nil
}

// Close releases the directory.
func (h *HostDir) Close() error { return h.root.Close() }

// ListDir lists a directory without following its symlinks, sorted by name.
func (h *HostDir) ListDir(_ context.Context, p string) ([]backend.FileInfo, error) {
	f, err := h.root.Open(p)
	if err != nil {
		return nil, hostErr(err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, hostErr(err)
	}
	infos := make([]backend.FileInfo, 0, len(ents))
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // vanished since the read
		}
		infos = append(infos, backend.FileInfo{Name: e.Name(), Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime(), IsDir: fi.IsDir()})
	}
	slices.SortFunc(infos, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, nil
}

// ReadFile copies a file to w.
func (h *HostDir) ReadFile(ctx context.Context, p string, w io.Writer) error {
	rc, _, err := h.Open(ctx, p)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// Open opens a regular file with its size.
func (h *HostDir) Open(_ context.Context, p string) (io.ReadCloser, int64, error) {
	f, err := h.root.Open(p)
	if err != nil {
		return nil, 0, hostErr(err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, hostErr(err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, errdefs.InvalidArgumentf("tarfs: %s is not a regular file", p)
	}
	return f, st.Size(), nil
}

// WriteFile writes a file through a temporary file renamed into place, so a failed copy
// never leaves a half-written file; missing parents are made 0755.
func (h *HostDir) WriteFile(_ context.Context, p string, r io.Reader, mode fs.FileMode) error {
	if dir := path.Dir(p); dir != "." {
		if err := h.root.MkdirAll(dir, 0o755); err != nil {
			return hostErr(err)
		}
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(path.Dir(p), ".moat-tmp-"+hex.EncodeToString(rnd[:]))
	f, err := h.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return hostErr(err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode.Perm())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = h.root.Rename(tmp, p)
	}
	if err != nil {
		_ = h.root.Remove(tmp)
		return hostErr(err)
	}
	return nil
}

// Mkdir makes a directory and its missing parents.
func (h *HostDir) Mkdir(_ context.Context, p string, mode fs.FileMode) error {
	return hostErr(h.root.MkdirAll(p, mode.Perm()))
}

// hostErr gives a host filesystem error its kind.
func hostErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errdefs.KindOf(err) != errdefs.KindUnknown:
		return err
	case os.IsNotExist(err):
		return errdefs.Wrap(errdefs.ErrNotFound, err)
	case os.IsExist(err):
		return errdefs.Wrap(errdefs.ErrAlreadyExists, err)
	case os.IsPermission(err):
		return errdefs.Wrap(errdefs.ErrPermissionDenied, err)
	}
	// os.Root refuses names that leave it ("path escapes from parent").
	if strings.Contains(err.Error(), "escapes") {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err)
	}
	return err
}

var (
	_ Source = (*HostDir)(nil)
	_ Opener = (*HostDir)(nil)
	_ Dest   = (*HostDir)(nil)
)
