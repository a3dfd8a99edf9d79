package agentd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"

	"github.com/moatsh/moat/agent/wire"
)

// pathError turns a filesystem error on p into a wire error for op ("read", "write").
func pathError(op, p string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return &startError{wire.KindNotFound, fmt.Sprintf("%s %s: no such file or directory", op, p)}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return &startError{wire.KindPermissionDenied, fmt.Sprintf("%s %s: %v", op, p, errors.Unwrap(err))}
	case errors.Is(err, syscall.ELOOP):
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("%s %s: too many levels of symlinks", op, p)}
	case errors.Is(err, syscall.EISDIR):
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("%s %s: is a directory", op, p)}
	}
	return &startError{wire.KindUnavailable, fmt.Sprintf("%s %s: %v", op, p, err)}
}

func checkAbs(op, p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p {
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("%s %q: path must be absolute and clean", op, p)}
	}
	return nil
}

// readFile streams the regular file at p (symlinks followed) as DATA frames.
func readFile(w *wire.Writer, p string) error {
	if err := checkAbs("read", p); err != nil {
		return err
	}
	// O_NONBLOCK: opening a FIFO must not hang the agent; the type check below rejects it.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return pathError("read", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return pathError("read", p, err)
	}
	if fi.IsDir() {
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("read %s: is a directory", p)}
	}
	if !fi.Mode().IsRegular() {
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("read %s: not a regular file", p)}
	}
	buf := make([]byte, wire.ChunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if werr := w.Write(wire.Data, buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return pathError("read", p, err)
		}
	}
}

// writeFile receives DATA frames up to DATA_END into a temporary file next to p and renames
// it over p, so readers never see a partial file and a symlink at p is replaced, not
// written through. Missing parents are created 0755; existing ones keep their mode.
func writeFile(r *wire.Reader, p string, mode uint32) error {
	if err := checkAbs("write", p); err != nil {
		return err
	}
	if p == "/" {
		return &startError{wire.KindInvalidArgument, "write /: is a directory"}
	}
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("write %s: is a directory", p)}
	}
	dir := path.Dir(p)
	if err := mkdirs(p, dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".moat-write-*")
	if err != nil {
		return pathError("write", p, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	for {
		t, payload, err := r.Next()
		if err != nil {
			return err // the client is gone: nobody to tell
		}
		if t == wire.DataEnd {
			break
		}
		if t != wire.Data {
			return &startError{wire.KindInvalidArgument, fmt.Sprintf("unexpected %v frame in a write", t)}
		}
		if _, err := tmp.Write(payload); err != nil {
			return pathError("write", p, err)
		}
	}
	// Fchmod sets the exact bits (setuid, sticky) regardless of the umask.
	if err := syscall.Fchmod(int(tmp.Fd()), mode&0o7777); err != nil {
		return pathError("write", p, err)
	}
	if err := tmp.Close(); err != nil {
		return pathError("write", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return pathError("write", p, err)
	}
	done = true
	return nil
}

// mkdirs creates dir and its missing ancestors 0755, leaving existing ones alone; an
// existing ancestor that is not a directory is InvalidArgument.
func mkdirs(p, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return &startError{wire.KindInvalidArgument, fmt.Sprintf("write %s: %s is not a directory", p, dir)}
	case !errors.Is(err, os.ErrNotExist):
		if errors.Is(err, syscall.ENOTDIR) {
			return &startError{wire.KindInvalidArgument, fmt.Sprintf("write %s: %s is not a directory", p, dir)}
		}
		return pathError("write", p, err)
	}
	if err := mkdirs(p, path.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil // made meanwhile by someone else: leave its mode alone
		}
		return pathError("write", p, err)
	}
	return os.Chmod(dir, 0o755) // regardless of the umask
}
