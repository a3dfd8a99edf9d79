// Package rootfs answers "how does a local backend touch the files of a sandbox whose root
// directory lives on the host, without a symlink or a tarball reaching outside it?": a
// backend.FileTransferer over a host directory that resolves every path inside that root
// (openat2 RESOLVE_IN_ROOT semantics via filepath-securejoin's pathrs-lite, so a symlink
// to "/" means the sandbox's root), and a bounded, escape-proof import of a rootfs image
// (directory, .tar or .tar.gz) into such a root.
package rootfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// FS is the files of one sandbox root on the host.
type FS struct {
	// Name prefixes error messages ("bwrap", "host").
	Name string
	// Root is the host directory that is "/" for the sandbox's file paths.
	Root string
	// Binds are sandbox path prefixes ("/usr") served read-only from a host directory
	// ("/usr") instead of Root, as a backend bind-mounts them. Writes there are
	// PermissionDenied.
	Binds map[string]string
}

var _ backend.FileTransferer = (*FS)(nil)

// openRoot opens dir as an O_PATH handle for in-root lookups.
func openRoot(dir string) (*os.File, error) {
	return os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// rel turns an absolute sandbox path into a root-relative one.
func rel(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// bindFor returns the host directory and the path within it when p is under a bind.
func (f *FS) bindFor(p string) (dir, rest string, ok bool) {
	clean := path.Clean("/" + p)
	best := ""
	for prefix := range f.Binds {
		pc := path.Clean("/" + prefix)
		if (clean == pc || strings.HasPrefix(clean, pc+"/")) && len(pc) > len(best) {
			best = pc
		}
	}
	if best == "" {
		return "", "", false
	}
	return f.Binds[best], strings.TrimPrefix(clean, best), true
}

// target picks the root and relative path serving sandbox path p. Paths reached through a
// symlink in Root that lands in a bind are served by the bind too (what the sandbox sees).
func (f *FS) target(p string) (root, relPath string, bound bool) {
	if dir, rest, ok := f.bindFor(p); ok {
		return dir, rel(rest), true
	}
	if len(f.Binds) > 0 {
		// Resolve symlinks inside Root (e.g. /bin -> usr/bin) before checking binds.
		if full, err := securejoinRel(f.Root, p); err == nil {
			if dir, rest, ok := f.bindFor(full); ok {
				return dir, rel(rest), true
			}
		}
	}
	return f.Root, rel(p), false
}

func (f *FS) errf(kind error, format string, args ...any) error {
	return errdefs.Newf(kind, f.Name+": "+format, args...)
}

// wrapErr maps filesystem errors to errdefs kinds.
func (f *FS) wrapErr(op, p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return f.errf(errdefs.ErrNotFound, "%s %s: no such file or directory", op, p)
	case errors.Is(err, syscall.ENOTDIR):
		return f.errf(errdefs.ErrNotFound, "%s %s: a parent is not a directory", op, p)
	case errors.Is(err, syscall.EISDIR):
		return f.errf(errdefs.ErrInvalidArgument, "%s %s: is a directory", op, p)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return f.errf(errdefs.ErrPermissionDenied, "%s %s: %v", op, p, unwrapPathErr(err))
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return f.errf(errdefs.ErrResourceExhausted, "%s %s: %v", op, p, unwrapPathErr(err))
	}
	return fmt.Errorf("%s: %s %s: %w", f.Name, op, p, unwrapPathErr(err))
}

// unwrapPathErr drops the host path from *PathError messages: callers know sandbox paths.
func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// WriteFile creates or replaces the file at p (resolved inside the root) with r's bytes
// and mode's permission bits, creating parents 0755.
func (f *FS) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	if _, _, bound := f.target(p); bound {
		return f.errf(errdefs.ErrPermissionDenied, "write %s: read-only host directory", p)
	}
	return f.writeFile(ctx, p, r, mode, 0)
}

func (f *FS) writeFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode, depth int) error {
	rp := rel(p)
	if rp == "" {
		return f.errf(errdefs.ErrInvalidArgument, "write %s: is a directory", p)
	}
	root, err := openRoot(f.Root)
	if err != nil {
		return f.wrapErr("write", p, err)
	}
	defer root.Close()
	dir, err := pathrs.MkdirAllHandle(root, path.Dir("/"+rp), 0o755)
	if err != nil {
		return f.wrapErr("write", p, err)
	}
	defer dir.Close()
	base := path.Base(rp)
	// What is there now decides: a symlink is followed inside the root (as the sandbox
	// would), a directory or anything else that is not a regular file is refused.
	var st unix.Stat_t
	err = unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		if depth >= 8 {
			return f.wrapErr("write", p, unix.ELOOP)
		}
		full, jerr := securejoinRel(f.Root, p)
		if jerr != nil {
			return f.wrapErr("write", p, jerr)
		}
		if _, _, bound := f.target(full); bound {
			return f.errf(errdefs.ErrPermissionDenied, "write %s: read-only host directory", p)
		}
		return f.writeFile(ctx, full, r, mode, depth+1)
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return f.errf(errdefs.ErrInvalidArgument, "write %s: is a directory", p)
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return f.errf(errdefs.ErrInvalidArgument, "write %s: not a regular file", p)
	case err != nil && !errors.Is(err, unix.ENOENT):
		return f.wrapErr("write", p, err)
	}
	// The content goes to a temporary file in the same directory, renamed over base only
	// once all of it is there: an upload that fails or is cut off (ctx, a size cap) leaves
	// the old file as it was and no partial file behind.
	var tmpName string
	var fd int
	for try := 0; ; try++ {
		tmpName = ".moat-write-" + randSuffix()
		fd, err = unix.Openat(int(dir.Fd()), tmpName,
			unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if !errors.Is(err, unix.EEXIST) || try > 8 {
			break
		}
	}
	if err != nil {
		return f.wrapErr("write", p, err)
	}
	file := os.NewFile(uintptr(fd), tmpName)
	committed := false
	defer func() {
		if !committed {
			_ = file.Close()
			_ = unix.Unlinkat(int(dir.Fd()), tmpName, 0)
		}
	}()
	// Fchmod sets the exact bits, whatever the umask.
	if err := file.Chmod(mode.Perm()); err != nil {
		return f.wrapErr("write", p, err)
	}
	if _, err := io.Copy(file, ctxReader{ctx, r}); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%s: write %s: %w", f.Name, p, cerr)
		}
		var pe *fs.PathError
		if errors.As(err, &pe) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
			return f.wrapErr("write", p, err)
		}
		return fmt.Errorf("%s: write %s: %w", f.Name, p, err) // the reader's error, kind kept
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: write %s: %w", f.Name, p, err)
	}
	if err := file.Close(); err != nil {
		return f.wrapErr("write", p, err)
	}
	if err := unix.Renameat(int(dir.Fd()), tmpName, int(dir.Fd()), base); err != nil {
		return f.wrapErr("write", p, err)
	}
	committed = true
	return nil
}

// randSuffix names a temporary file.
func randSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// open resolves p inside its root and reopens it with flags.
func (f *FS) open(op, p string, flags int) (*os.File, os.FileInfo, error) {
	rootDir, rp, bound := f.target(p)
	if bound && rp == "" {
		// A file bind (/etc/passwd): the operator's host file, links followed as bwrap
		// follows a bind's source; opened by name in its directory.
		if real, err := filepath.EvalSymlinks(rootDir); err == nil {
			if fi, err := os.Stat(real); err == nil && !fi.IsDir() {
				rootDir, rp = filepath.Dir(real), filepath.Base(real)
			}
		}
	}
	root, err := openRoot(rootDir)
	if err != nil {
		return nil, nil, f.wrapErr(op, p, err)
	}
	defer root.Close()
	h, err := pathrs.OpenatInRoot(root, "/"+rp)
	if err != nil {
		return nil, nil, f.wrapErr(op, p, err)
	}
	defer h.Close()
	fi, err := h.Stat()
	if err != nil {
		return nil, nil, f.wrapErr(op, p, err)
	}
	if op == "read" && fi.IsDir() {
		return nil, nil, f.errf(errdefs.ErrInvalidArgument, "read %s: is a directory", p)
	}
	// Opening a fifo (or a device) would wait for a writer or act on the host: only
	// regular files are read.
	if op == "read" && !fi.Mode().IsRegular() {
		return nil, nil, f.errf(errdefs.ErrInvalidArgument, "read %s: not a regular file", p)
	}
	if op == "list" && !fi.IsDir() {
		return nil, nil, f.errf(errdefs.ErrInvalidArgument, "list %s: not a directory", p)
	}
	file, err := pathrs.Reopen(h, flags|unix.O_CLOEXEC)
	if err != nil {
		return nil, nil, f.wrapErr(op, p, err)
	}
	return file, fi, nil
}

// ReadFile copies the file at p to w.
func (f *FS) ReadFile(ctx context.Context, p string, w io.Writer) error {
	file, _, err := f.open("read", p, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := io.Copy(w, ctxReader{ctx, file}); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%s: read %s: %w", f.Name, p, cerr)
		}
		return fmt.Errorf("%s: read %s: %w", f.Name, p, unwrapPathErr(err))
	}
	return nil
}

// ListDir lists the directory at p, sorted by name. Entries are not followed: a symlink
// is listed as a symlink.
func (f *FS) ListDir(ctx context.Context, p string) ([]backend.FileInfo, error) {
	file, _, err := f.open("list", p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	ents, err := file.ReadDir(-1)
	if err != nil {
		return nil, f.wrapErr("list", p, err)
	}
	out := make([]backend.FileInfo, 0, len(ents))
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, backend.FileInfo{Name: e.Name(), Size: fi.Size(), Mode: fi.Mode(),
			ModTime: fi.ModTime(), IsDir: fi.IsDir()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// MkdirAll creates directory p (and parents) inside the root.
func (f *FS) MkdirAll(p string, mode fs.FileMode) error {
	root, err := openRoot(f.Root)
	if err != nil {
		return f.wrapErr("mkdir", p, err)
	}
	defer root.Close()
	h, err := pathrs.MkdirAllHandle(root, "/"+rel(p), mode)
	if err != nil {
		return f.wrapErr("mkdir", p, err)
	}
	return h.Close()
}

// HostPath returns the host path that sandbox path p resolves to, symlinks followed
// inside the root (or inside a bind). It is for lookups such as "does this executable
// exist"; it is not race-free, so never write through it.
func (f *FS) HostPath(p string) (string, error) {
	r, err := f.resolve(p)
	if err != nil {
		return "", err
	}
	return f.hostOf(r), nil
}

// hostOf maps a sandbox path whose parents hold no symlinks to the host path serving it:
// under a bind, or under Root.
func (f *FS) hostOf(p string) string {
	if dir, rest, ok := f.bindFor(p); ok {
		return path.Join(dir, rest)
	}
	return path.Join(f.Root, p)
}

// resolve follows the symlinks of sandbox path p one component at a time as the sandbox
// sees them: a link in a bind (/usr/bin/awk -> /etc/alternatives/awk) may lead into Root
// or another bind, and ".." and absolute targets stop at the sandbox's "/". A missing
// component ends the walk (the rest is appended as is).
func (f *FS) resolve(p string) (string, error) {
	todo := strings.Split(path.Clean("/"+p), "/")
	cur := "/"
	hops := 0
	for len(todo) > 0 {
		e := todo[0]
		todo = todo[1:]
		switch e {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, e)
		hp := f.hostOf(next)
		fi, err := os.Lstat(hp)
		if err != nil {
			return path.Join(append([]string{next}, todo...)...), nil
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", syscall.ELOOP
		}
		t, err := os.Readlink(hp)
		if err != nil {
			return "", err
		}
		if path.IsAbs(t) {
			cur = "/"
		}
		todo = append(strings.Split(t, "/"), todo...)
	}
	return cur, nil
}

// securejoinRel resolves p's symlinks inside root and returns the sandbox-absolute result.
func securejoinRel(root, p string) (string, error) {
	full, err := securejoin.SecureJoin(root, p)
	if err != nil {
		return "", err
	}
	r := strings.TrimPrefix(full, path.Clean(root))
	return path.Clean("/" + r), nil
}
