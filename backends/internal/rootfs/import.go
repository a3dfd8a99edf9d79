package rootfs

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moatsh/moat/errdefs"
)

// ImportLimits bound an import: an image is untrusted input (a tar bomb surface).
type ImportLimits struct {
	MaxBytes   int64 // total regular-file bytes; 0 means DefaultMaxBytes
	MaxEntries int   // entries; 0 means DefaultMaxEntries
}

// Defaults for ImportLimits.
const (
	DefaultMaxBytes   = 8 << 30
	DefaultMaxEntries = 1 << 20
)

// Import copies the rootfs image src — a directory, a .tar or a gzip-compressed tar
// (detected by content) — into the existing directory dst. Entries with absolute names or
// ".." components, entries reached through a symlink, hard links leaving the image,
// and device nodes outside /dev are rejected with InvalidArgument, as is an image over the
// limits; device nodes and fifos under /dev are skipped (backends mount their own /dev).
// Setuid/setgid bits are dropped and ownership is not restored: files belong to the
// importing user. On error dst may hold a partial tree; the caller removes it.
func Import(ctx context.Context, src, dst string, lim ImportLimits) error {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = DefaultMaxEntries
	}
	st, err := os.Stat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errdefs.NotFoundf("rootfs: image %s does not exist", src)
		}
		return fmt.Errorf("rootfs: image %s: %w", src, err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("rootfs: open %s: %w", dst, err)
	}
	defer root.Close()
	im := &importer{ctx: ctx, root: root, lim: lim}
	if st.IsDir() {
		return im.fromDir(src)
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("rootfs: image %s: %w", src, err)
	}
	defer f.Close()
	return im.fromTar(f)
}

type importer struct {
	ctx     context.Context
	root    *os.Root
	lim     ImportLimits
	bytes   int64
	entries int
}

func invalid(format string, args ...any) error {
	return errdefs.InvalidArgumentf("rootfs: image: "+format, args...)
}

// fromTar imports a tar stream, gunzipping it when it starts with the gzip magic.
func (im *importer) fromTar(r io.Reader) error {
	br := bufio.NewReader(r)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return invalid("gzip: %v", err)
		}
		defer zr.Close()
		in = zr
	}
	tr := tar.NewReader(in)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return invalid("tar: %v", err)
		}
		if err := im.entry(h, tr); err != nil {
			return err
		}
	}
}

// fromDir imports a directory tree; symlinks in it are copied, never followed.
func (im *importer) fromDir(src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("rootfs: image %s: %w", src, err)
		}
		relp, err := filepath.Rel(src, p)
		if err != nil || relp == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("rootfs: image %s: %w", src, err)
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return fmt.Errorf("rootfs: image %s: %w", src, err)
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			if fi.Mode()&(fs.ModeSocket) != 0 {
				return nil // sockets cannot be copied and never matter in an image
			}
			return invalid("%s: %v", relp, err)
		}
		h.Name = filepath.ToSlash(relp)
		var body io.Reader
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("rootfs: image %s: %w", src, err)
			}
			defer f.Close()
			body = f
		}
		return im.entry(h, body)
	})
}

// cleanName validates an entry name and returns it relative, "" for the root itself.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", invalid("absolute entry name %q", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", invalid("entry name %q contains ..", name)
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", invalid("entry name contains NUL")
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// checkParents makes sure no parent of name is a symlink or a non-directory, creating
// missing parents. The image is written before the sandbox runs, so nothing races this;
// os.Root additionally keeps every operation inside dst.
func (im *importer) checkParents(name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		fi, err := im.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return im.root.MkdirAll(strings.Join(parts[:len(parts)-1], "/"), 0o755)
		}
		if err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return invalid("entry %q is reached through the symlink %q", name, p)
		}
		if !fi.IsDir() {
			return invalid("entry %q is below the non-directory %q", name, p)
		}
	}
	return nil
}

// clear removes what is at name unless it is a directory and keepDir is set.
func (im *importer) clear(name string, keepDir bool) error {
	fi, err := im.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if keepDir {
			return nil
		}
		return im.root.RemoveAll(name)
	}
	return im.root.Remove(name)
}

func (im *importer) entry(h *tar.Header, body io.Reader) error {
	if err := im.ctx.Err(); err != nil {
		return fmt.Errorf("rootfs: import: %w", err)
	}
	im.entries++
	if im.entries > im.lim.MaxEntries {
		return invalid("more than %d entries", im.lim.MaxEntries)
	}
	name, err := cleanName(h.Name)
	if err != nil || name == "" {
		return err
	}
	// Never setuid/setgid: the tree lives on the host, where such a file owned by the
	// importing user (root, often) would be a privilege escalation.
	perm := fs.FileMode(h.Mode).Perm()
	if h.Mode&0o1000 != 0 {
		perm |= fs.ModeSticky
	}
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if name == "dev" || strings.HasPrefix(name, "dev/") {
			return nil
		}
		return invalid("device node or fifo %q outside /dev", name)
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	default:
		return invalid("entry %q has unsupported type %q", name, h.Typeflag)
	}
	if err := im.checkParents(name); err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := im.clear(name, true); err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		// Owner keeps write access so later entries (and the sandbox) can fill it.
		if err := im.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		return im.root.Chmod(name, perm|0o700)
	case tar.TypeReg, tar.TypeRegA:
		if err := im.clear(name, false); err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		f, err := im.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		remaining := im.lim.MaxBytes - im.bytes
		n, err := io.Copy(f, io.LimitReader(body, remaining+1))
		im.bytes += n
		if err == nil && im.bytes > im.lim.MaxBytes {
			err = invalid("larger than %d bytes", im.lim.MaxBytes)
		}
		if err == nil {
			err = f.Chmod(perm)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			if errdefs.Is(err, errdefs.KindInvalidArgument) {
				return err
			}
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		return nil
	case tar.TypeSymlink:
		// Any target is fine: it is resolved inside the sandbox (and inside the root by
		// FS), and checkParents refuses to write through it.
		if err := im.clear(name, false); err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		if err := im.root.Symlink(h.Linkname, name); err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		return nil
	case tar.TypeLink:
		target, err := cleanName(h.Linkname)
		if err != nil {
			return err
		}
		if target == "" {
			return invalid("hard link %q to the root", name)
		}
		if err := im.checkParents(target); err != nil {
			return err
		}
		fi, err := im.root.Lstat(target)
		if err != nil || !fi.Mode().IsRegular() {
			return invalid("hard link %q to %q, which is not a regular file in the image", name, h.Linkname)
		}
		if err := im.clear(name, false); err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		if err := im.root.Link(target, name); err != nil {
			return fmt.Errorf("rootfs: image: %s: %w", name, err)
		}
		return nil
	}
	return nil
}
