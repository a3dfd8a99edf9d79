// Package tarfs answers "how does a tar stream go in and out of a tree safely?": moat's one
// tar implementation, used by the manager's archive fallback, by every front end (HTTP API,
// CLI) and by the coming workspace sync. It reads and writes regular files and directories
// only, and refuses what could write outside the target directory or exhaust its host:
// absolute names, ".." elements, backslashes, NUL bytes and invalid UTF-8 in names, links,
// devices and FIFOs (or skips them, on downloads), and archives over their size or entry
// caps (tar bombs).
//
// Errors carry errdefs kinds: InvalidArgument for a bad or hostile archive,
// ResourceExhausted for a cap, Unavailable for a tree that lists impossible names.
package tarfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Default caps, used for a zero Limits field.
const (
	DefaultMaxBytes   = moattype.DefaultArchiveMaxBytes
	DefaultMaxEntries = moattype.DefaultArchiveMaxEntries
)

// maxNameLen bounds one entry name (PATH_MAX on Linux).
const maxNameLen = 4096

// Limits caps one archive transfer (moattype.ArchiveLimits).
type Limits = moattype.ArchiveLimits

// Result counts what an archive transfer carried.
type Result = moattype.ArchiveResult

// Entry is one archive member: a regular file or a directory.
type Entry struct {
	// Name is relative, clean and slash-separated: never "", ".", absolute or with "..".
	Name    string
	IsDir   bool
	Mode    fs.FileMode // permission bits only
	Size    int64       // content length of a file; 0 for a directory
	ModTime time.Time
}

// CleanName checks one archive entry name and returns it relative and clean ("" for the
// root itself, "./"). Absolute names, ".." elements, backslashes, NUL bytes and invalid
// UTF-8 are InvalidArgument: an archive must not write outside its target directory.
func CleanName(name string) (string, error) {
	if name == "" || len(name) > maxNameLen || strings.ContainsRune(name, 0) || !utf8.ValidString(name) {
		return "", errdefs.InvalidArgumentf("tarfs: archive entry %q: invalid name", clip(name))
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", errdefs.InvalidArgumentf("tarfs: archive entry %q: absolute or backslash paths are not allowed", clip(name))
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", errdefs.InvalidArgumentf("tarfs: archive entry %q escapes the target directory", clip(name))
		}
		if len(el) > moattype.MaxPathElemBytes {
			return "", errdefs.InvalidArgumentf("tarfs: archive entry %q: a %d byte name element is over the limit of %d", clip(name), len(el), moattype.MaxPathElemBytes)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	if d := strings.Count(c, "/") + 1; d > moattype.MaxPathDepth {
		return "", errdefs.InvalidArgumentf("tarfs: archive entry %q is %d elements deep, over the limit of %d", clip(name), d, moattype.MaxPathDepth)
	}
	return c, nil
}

// checkUnder checks that the clean entry name, unpacked under the absolute directory
// base, still makes a path within moattype.MaxPathBytes and MaxPathDepth.
func checkUnder(base, name string) error {
	full := path.Join(base, name)
	if len(full) > moattype.MaxPathBytes {
		return errdefs.InvalidArgumentf("tarfs: archive entry %q under %s makes a %d byte path, over the limit of %d", clip(name), clip(base), len(full), moattype.MaxPathBytes)
	}
	if d := strings.Count(full, "/"); d > moattype.MaxPathDepth {
		return errdefs.InvalidArgumentf("tarfs: archive entry %q under %s is %d elements deep, over the limit of %d", clip(name), clip(base), d, moattype.MaxPathDepth)
	}
	return nil
}

// plainName reports whether a listed name is exactly one path element.
func plainName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= maxNameLen &&
		!strings.ContainsAny(name, "/\\\x00") && utf8.ValidString(name)
}

// Reader reads a tar stream entry by entry, yielding only safe regular files and
// directories within its Limits. It is not safe for concurrent use.
type Reader struct {
	// SkipSpecial makes links, devices and FIFOs skipped instead of refused: for archives
	// made by a sandbox (downloads), where they are ordinary but cannot be carried safely.
	SkipSpecial bool
	// Base, when set, is the absolute directory the archive is unpacked into: an entry
	// whose path under it would be longer or deeper than a sandbox path may be
	// (moattype.MaxPathBytes, MaxPathDepth) is InvalidArgument.
	Base string

	src     *errReader
	tr      *tar.Reader
	lim     Limits
	entries int
	bytes   int64
}

// NewReader returns a Reader of the tar stream r, capped by lim.
func NewReader(r io.Reader, lim Limits) *Reader {
	src := &errReader{r: r}
	return &Reader{src: src, tr: tar.NewReader(src), lim: lim.Defaults()}
}

// Next advances to the next entry; io.EOF at the end. The root directory entry ("./") is
// not returned.
func (r *Reader) Next() (Entry, error) {
	for {
		hdr, err := r.tr.Next()
		if errors.Is(err, io.EOF) {
			return Entry{}, io.EOF
		}
		if err != nil {
			return Entry{}, r.streamErr(err)
		}
		if r.entries++; r.entries > r.lim.MaxEntries {
			return Entry{}, errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: archive has more than %d entries", r.lim.MaxEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := CleanName(hdr.Name)
		if err != nil {
			return Entry{}, err
		}
		if r.Base != "" && name != "" {
			if err := checkUnder(r.Base, name); err != nil {
				return Entry{}, err
			}
		}
		e := Entry{Name: name, Mode: fs.FileMode(hdr.Mode) & fs.ModePerm, ModTime: hdr.ModTime}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name == "" {
				continue
			}
			e.IsDir = true
			return e, nil
		case tar.TypeReg, tar.TypeRegA:
			if name == "" {
				return Entry{}, errdefs.InvalidArgumentf("tarfs: archive entry %q: a file needs a name", clip(hdr.Name))
			}
			if hdr.Size < 0 {
				return Entry{}, errdefs.InvalidArgumentf("tarfs: archive entry %q: negative size", clip(hdr.Name))
			}
			if hdr.Size > r.lim.MaxFileBytes {
				return Entry{}, errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: archive entry %q: %d bytes is over the %d byte file limit", clip(hdr.Name), hdr.Size, r.lim.MaxFileBytes)
			}
			if r.bytes += hdr.Size; r.bytes > r.lim.MaxBytes {
				return Entry{}, errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: archive content is over the %d byte limit", r.lim.MaxBytes)
			}
			e.Size = hdr.Size
			return e, nil
		}
		if r.SkipSpecial {
			continue
		}
		return Entry{}, errdefs.InvalidArgumentf("tarfs: archive entry %q: only regular files and directories are allowed (type %q)", clip(hdr.Name), hdr.Typeflag)
	}
}

// Read reads the current file's content.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.tr.Read(p)
	if err != nil && err != io.EOF {
		err = r.streamErr(err)
	}
	return n, err
}

// Err returns the first error the underlying stream returned (a body over its limit, a
// connection cut), or nil: when a consumer of Read fails, this is usually why.
func (r *Reader) Err() error {
	if r.src.err == nil {
		return nil
	}
	return r.streamErr(r.src.err)
}

// streamErr explains a tar error, keeping the stream's own error (a body over its limit,
// say) in the chain.
func (r *Reader) streamErr(err error) error {
	if r.src.err != nil && !errors.Is(r.src.err, io.EOF) {
		if errdefs.KindOf(r.src.err) != errdefs.KindUnknown {
			return fmt.Errorf("tarfs: reading archive: %w", r.src.err)
		}
		return errdefs.Newf(errdefs.ErrInvalidArgument, "tarfs: reading archive: %w", r.src.err)
	}
	return errdefs.Newf(errdefs.ErrInvalidArgument, "tarfs: invalid tar archive: %w", err)
}

// errReader remembers the first error of r other than EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// Writer writes a tar stream of regular files and directories within its Limits.
type Writer struct {
	tw      *tar.Writer
	lim     Limits
	entries int
	bytes   int64
	res     Result
}

// NewWriter returns a Writer to w, capped by lim.
func NewWriter(w io.Writer, lim Limits) *Writer {
	return &Writer{tw: tar.NewWriter(w), lim: lim.Defaults()}
}

// Result returns what was written so far.
func (w *Writer) Result() Result { return w.res }

func (w *Writer) header(e Entry) (*tar.Header, error) {
	name, err := CleanName(e.Name)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, errdefs.InvalidArgumentf("tarfs: entry needs a name")
	}
	if w.entries++; w.entries > w.lim.MaxEntries {
		return nil, errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: more than %d entries", w.lim.MaxEntries)
	}
	mt := e.ModTime
	if mt.IsZero() {
		mt = time.Now()
	}
	return &tar.Header{Name: name, Mode: int64(e.Mode.Perm()), ModTime: mt.Truncate(time.Second), Format: tar.FormatPAX}, nil
}

// WriteDir writes a directory entry.
func (w *Writer) WriteDir(e Entry) error {
	hdr, err := w.header(e)
	if err != nil {
		return err
	}
	hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	w.res.Dirs++
	return nil
}

// WriteFile writes a file entry of e.Size bytes read from r; r must have exactly that many.
func (w *Writer) WriteFile(e Entry, r io.Reader) error {
	if e.Size > w.lim.MaxFileBytes {
		return errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: %s: %d bytes is over the %d byte file limit", clip(e.Name), e.Size, w.lim.MaxFileBytes)
	}
	if w.bytes+e.Size > w.lim.MaxBytes {
		return errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: archive content is over the %d byte limit", w.lim.MaxBytes)
	}
	hdr, err := w.header(e)
	if err != nil {
		return err
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(w.tw, io.LimitReader(r, e.Size))
	if err != nil {
		return err
	}
	if n != e.Size {
		return fmt.Errorf("tarfs: %s: %d of %d bytes (the file shrank)", clip(e.Name), n, e.Size)
	}
	w.bytes += n
	w.res.Files++
	w.res.Bytes += n
	return nil
}

// Close writes the archive's trailer.
func (w *Writer) Close() error { return w.tw.Close() }

// Copy re-encodes the safe entries of r into w: what reaches w is exactly what Reader
// accepted. Use it to pass an untrusted stream on to something that unpacks by itself.
func Copy(w *Writer, r *Reader) (Result, error) {
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return w.Result(), nil
		}
		if err != nil {
			return w.Result(), err
		}
		if e.IsDir {
			err = w.WriteDir(e)
		} else {
			err = w.WriteFile(e, r)
			if rerr := r.Err(); err != nil && rerr != nil {
				err = rerr
			}
		}
		if err != nil {
			return w.Result(), err
		}
	}
}

// Source is a tree Pack reads. Paths are root joined with slash-separated names.
type Source interface {
	// ListDir lists a directory; entry names must be single path elements.
	ListDir(ctx context.Context, p string) ([]backend.FileInfo, error)
	// ReadFile copies a regular file to w.
	ReadFile(ctx context.Context, p string, w io.Writer) error
}

// Opener is a Source that can open a file with its exact size, which spares Pack a spool.
type Opener interface {
	Open(ctx context.Context, p string) (io.ReadCloser, int64, error)
}

// Dest is a tree Unpack writes. Paths are root joined with clean relative names.
type Dest interface {
	// WriteFile creates or replaces a file, creating missing parent directories.
	WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error
	// Mkdir creates a directory and its missing parents; an existing directory is fine.
	Mkdir(ctx context.Context, p string, mode fs.FileMode) error
}

// Pack writes the tree at root of src to w as a tar stream of its regular files and
// directories, names relative to root. Symlinks, devices and other special files are left
// out (a link is never followed). The root is listed before anything is written, so a
// missing root fails with nothing on w.
func Pack(ctx context.Context, w io.Writer, src Source, root string, lim Limits) (Result, error) {
	entries, err := src.ListDir(ctx, root)
	if err != nil {
		return Result{}, err
	}
	p := &packer{src: src, tw: NewWriter(w, lim)}
	if err := p.walk(ctx, root, "", entries); err != nil {
		return p.tw.Result(), err
	}
	return p.tw.Result(), p.tw.Close()
}

type packer struct {
	src Source
	tw  *Writer
}

func (p *packer) walk(ctx context.Context, abs, rel string, entries []backend.FileInfo) error {
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		// A listing comes from the sandbox (an agent inside it, or a provider): a name that
		// is not one plain element would read outside abs and name an entry that unpacks
		// outside the receiver's directory.
		if !plainName(e.Name) {
			return errdefs.Unavailablef("tarfs: %s: the tree listed an invalid entry name %q", abs, clip(e.Name))
		}
		src, name := path.Join(abs, e.Name), path.Join(rel, e.Name)
		switch {
		case e.Mode&fs.ModeSymlink != 0:
			// Never followed: a link to "." or a parent would never end, and one to
			// elsewhere would carry what is outside the tree.
		case e.IsDir || e.Mode.IsDir():
			if err := p.tw.WriteDir(Entry{Name: name, Mode: e.Mode.Perm(), ModTime: e.ModTime}); err != nil {
				return err
			}
			sub, err := p.src.ListDir(ctx, src)
			if err != nil {
				return err
			}
			if err := p.walk(ctx, src, name, sub); err != nil {
				return err
			}
		case e.Mode.IsRegular():
			if err := p.file(ctx, src, Entry{Name: name, Mode: e.Mode.Perm(), ModTime: e.ModTime}); err != nil {
				return err
			}
		}
	}
	return nil
}

// file adds one file. A tar header needs the exact size, and a file may change between
// listing and reading, so it is read into a spool first unless the source can open it.
func (p *packer) file(ctx context.Context, src string, e Entry) error {
	if o, ok := p.src.(Opener); ok {
		rc, size, err := o.Open(ctx, src)
		if err != nil {
			return err
		}
		defer rc.Close()
		e.Size = size
		return p.tw.WriteFile(e, rc)
	}
	sp := &spool{max: min(p.tw.lim.MaxFileBytes, p.tw.lim.MaxBytes-p.tw.bytes)}
	defer sp.close()
	if err := p.src.ReadFile(ctx, src, sp); err != nil {
		if sp.err != nil {
			return sp.err
		}
		return err
	}
	r, err := sp.reader()
	if err != nil {
		return err
	}
	e.Size = sp.n
	return p.tw.WriteFile(e, r)
}

// memSpool is how much of one file a spool keeps in memory before it moves to a temporary
// file.
const memSpool = 1 << 20

// spool holds one file's bytes, up to max.
type spool struct {
	max int64
	n   int64
	buf bytes.Buffer
	f   *os.File
	err error
}

func (s *spool) Write(p []byte) (int, error) {
	if s.n+int64(len(p)) > s.max {
		s.err = errdefs.Newf(errdefs.ErrResourceExhausted, "tarfs: file over the %d byte limit", s.max)
		return 0, s.err
	}
	if s.f == nil && s.buf.Len()+len(p) > memSpool {
		f, err := os.CreateTemp("", "moat-tarfs-*")
		if err != nil {
			return 0, err
		}
		s.f = f
		if _, err := s.f.Write(s.buf.Bytes()); err != nil {
			return 0, err
		}
		s.buf = bytes.Buffer{}
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		n, err = s.buf.Write(p)
	}
	s.n += int64(n)
	return n, err
}

func (s *spool) reader() (io.Reader, error) {
	if s.f == nil {
		return &s.buf, nil
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.f, nil
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
	}
}

// Unpack writes the entries of r into root of dst, in order; on error the earlier ones
// stay. Files create their parent directories; directories that nothing else creates are
// made at the end (directory modes apply to those only).
func Unpack(ctx context.Context, r *Reader, dst Dest, root string) (Result, error) {
	var res Result
	hasContent := map[string]bool{} // directories a file's WriteFile created
	var dirs []Entry
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, err
		}
		if e.IsDir {
			dirs = append(dirs, e)
			continue
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := dst.WriteFile(ctx, path.Join(root, e.Name), r, mode); err != nil {
			if rerr := r.Err(); rerr != nil {
				return res, rerr
			}
			return res, err
		}
		for d := path.Dir(e.Name); d != "."; d = path.Dir(d) {
			hasContent[d] = true
		}
		res.Files++
		res.Bytes += e.Size
	}
	// Deepest first (an archive lists parents first): making a leaf makes its parents.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if hasContent[d.Name] {
			continue
		}
		for p := d.Name; p != "."; p = path.Dir(p) {
			hasContent[p] = true
		}
		mode := d.Mode
		if mode == 0 {
			mode = 0o755
		}
		if err := dst.Mkdir(ctx, path.Join(root, d.Name), mode); err != nil {
			return res, err
		}
	}
	res.Dirs = len(dirs)
	return res, nil
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
