package httpapi

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// sandboxPath reads ?path= and checks it has no "..": the manager checks again, but the
// routes that build further paths from it (archives, delete) need it clean and absolute
// first. Other routes pass relative paths on (the manager resolves them against the
// sandbox's workdir).
func sandboxPath(r *http.Request, relativeOK bool) (string, error) {
	p := r.URL.Query().Get("path")
	switch {
	case p == "":
		return "", errdefs.InvalidArgumentf("httpapi: missing ?path=")
	case !relativeOK && !strings.HasPrefix(p, "/"):
		return "", errdefs.InvalidArgumentf("httpapi: path %q is not absolute", p)
	case strings.ContainsRune(p, 0) || !utf8.ValidString(p):
		return "", errdefs.InvalidArgumentf("httpapi: path %q is not valid UTF-8 text", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", errdefs.InvalidArgumentf("httpapi: path %q escapes the sandbox (contains \"..\")", p)
		}
	}
	if !strings.HasPrefix(p, "/") {
		return p, nil
	}
	return path.Clean(p), nil
}

func (s *Server) sandbox(ctx context.Context, w http.ResponseWriter, r *http.Request) (*moat.Sandbox, bool) {
	sb, err := s.m.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return nil, false
	}
	return sb, true
}

// putFile writes the raw body to ?path= (?mode=0644 octal). The body is streamed.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	p, err := sandboxPath(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var mode fs.FileMode
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o777 {
			s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: mode %q: want octal permission bits like 0644", m))
			return
		}
		mode = fs.FileMode(v)
	}
	if r.ContentLength > s.opts.MaxFileBytes {
		s.writeError(w, r, fmt.Errorf("httpapi: file of %d bytes is over the %d byte limit: %w", r.ContentLength, s.opts.MaxFileBytes, errTooLarge))
		return
	}
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, ok := s.sandbox(ctx, w, r)
	if !ok {
		return
	}
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxFileBytes)
	if err := sb.WriteFile(ctx, p, body, mode); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// lazyWriter writes the success header on the first byte, so an error that comes before
// any content can still be answered with its own status.
type lazyWriter struct {
	w           http.ResponseWriter
	contentType string
	started     bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	l.start()
	return l.w.Write(p)
}

func (l *lazyWriter) start() {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", l.contentType)
		l.w.WriteHeader(http.StatusOK)
	}
}

// getFile streams the file at ?path=, or lists the directory with ?list=1.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	p, err := sandboxPath(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, ok := s.sandbox(ctx, w, r)
	if !ok {
		return
	}
	if list, _ := strconv.ParseBool(r.URL.Query().Get("list")); list {
		entries, err := sb.ListDir(ctx, p)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if entries == nil {
			entries = []moat.FileInfo{}
		}
		writeJSON(w, http.StatusOK, apitype.FileList{Path: p, Entries: entries})
		return
	}
	lw := &lazyWriter{w: w, contentType: apitype.MediaOctet}
	if err := sb.ReadFile(ctx, p, lw); err != nil {
		if !lw.started {
			s.writeError(w, r, err)
			return
		}
		// Content went out already: cut the connection so the client sees a short body
		// rather than a file that looks complete.
		s.log.Warn("file read failed mid-stream", "request_id", RequestID(r.Context()), "err", err)
		panic(http.ErrAbortHandler)
	}
	lw.start()
}

// deleteFile removes the file at ?path= (a directory with ?recursive=1). It is NotFound
// when nothing is there.
func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	p, err := sandboxPath(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if p == "/" {
		s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: refusing to delete /"))
		return
	}
	recursive, _ := strconv.ParseBool(r.URL.Query().Get("recursive"))
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, ok := s.sandbox(ctx, w, r)
	if !ok {
		return
	}
	entries, err := sb.ListDir(ctx, path.Dir(p))
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) {
			err = errdefs.NotFoundf("httpapi: %s: no such file", p)
		}
		s.writeError(w, r, err)
		return
	}
	var found *moat.FileInfo
	for i := range entries {
		if entries[i].Name == path.Base(p) {
			found = &entries[i]
		}
	}
	if found == nil {
		s.writeError(w, r, errdefs.NotFoundf("httpapi: %s: no such file", p))
		return
	}
	if found.IsDir && !recursive {
		s.writeError(w, r, errdefs.FailedPreconditionf("httpapi: %s is a directory: add recursive=1", p))
		return
	}
	// The manager has no remove ability yet; rm with argv (never a shell line) works on
	// every backend that has a userland.
	argv := []string{"rm", "-f", "--", p}
	if found.IsDir {
		argv = []string{"rm", "-rf", "--", p}
	}
	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: argv, MaxOutputBytes: 4 << 10})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if res.ExitCode != 0 {
		s.writeError(w, r, errdefs.FailedPreconditionf("httpapi: delete %s: rm exited %d: %s", p, res.ExitCode, strings.TrimSpace(string(res.Stderr))))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// cleanTarName checks one archive entry name and returns it relative and clean. Absolute
// names, ".." elements, NUL bytes and invalid UTF-8 are refused: an archive must not
// write outside the directory it is unpacked into.
func cleanTarName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) || !utf8.ValidString(name) {
		return "", errdefs.InvalidArgumentf("httpapi: archive entry %q: invalid name", name)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", errdefs.InvalidArgumentf("httpapi: archive entry %q: absolute or backslash paths are not allowed", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", errdefs.InvalidArgumentf("httpapi: archive entry %q escapes the target directory", name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// putArchive unpacks a tar body into the directory ?path=. Regular files and directories
// only: links, devices and FIFOs are refused, as are names that escape the directory.
// Entries are applied in order; on error the earlier ones stay.
func (s *Server) putArchive(w http.ResponseWriter, r *http.Request) {
	dir, err := sandboxPath(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if r.ContentLength > s.opts.MaxArchiveBytes {
		s.writeError(w, r, fmt.Errorf("httpapi: archive of %d bytes is over the %d byte limit: %w", r.ContentLength, s.opts.MaxArchiveBytes, errTooLarge))
		return
	}
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, ok := s.sandbox(ctx, w, r)
	if !ok {
		return
	}
	res, err := s.unpack(ctx, sb, dir, tar.NewReader(http.MaxBytesReader(w, r.Body, s.opts.MaxArchiveBytes)))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) unpack(ctx context.Context, sb *moat.Sandbox, dir string, tr *tar.Reader) (apitype.ArchiveResult, error) {
	var res apitype.ArchiveResult
	hasContent := map[string]bool{} // directories that a file's WriteFile creates
	var dirs []string
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return res, fmt.Errorf("httpapi: archive over %d bytes: %w", s.opts.MaxArchiveBytes, errTooLarge)
			}
			return res, errdefs.InvalidArgumentf("httpapi: invalid tar archive: %v", err)
		}
		if n >= s.opts.MaxArchiveEntries {
			return res, fmt.Errorf("httpapi: archive has more than %d entries: %w", s.opts.MaxArchiveEntries, errTooLarge)
		}
		name, err := cleanTarName(hdr.Name)
		if err != nil {
			return res, err
		}
		target := path.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "" {
				dirs = append(dirs, target)
			}
		case tar.TypeReg, tar.TypeRegA:
			if name == "" {
				return res, errdefs.InvalidArgumentf("httpapi: archive entry %q: a file needs a name", hdr.Name)
			}
			if hdr.Size > s.opts.MaxFileBytes {
				return res, fmt.Errorf("httpapi: archive entry %q: %d bytes is over the %d byte file limit: %w", hdr.Name, hdr.Size, s.opts.MaxFileBytes, errTooLarge)
			}
			mode := fs.FileMode(hdr.Mode) & fs.ModePerm
			if err := sb.WriteFile(ctx, target, tr, mode); err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					return res, fmt.Errorf("httpapi: archive over %d bytes: %w", s.opts.MaxArchiveBytes, errTooLarge)
				}
				return res, err
			}
			for d := path.Dir(target); ; d = path.Dir(d) {
				hasContent[d] = true
				if d == "/" || d == "." {
					break
				}
			}
			res.Files++
			res.Bytes += hdr.Size
		case tar.TypeXGlobalHeader:
		default:
			return res, errdefs.InvalidArgumentf("httpapi: archive entry %q: only regular files and directories are allowed (type %q)", hdr.Name, hdr.Typeflag)
		}
	}
	// Directories that no file created: make them (empty directories are part of a tree).
	var empty []string
	for _, d := range dirs {
		if !hasContent[d] {
			empty = append(empty, d)
			hasContent[d] = true
		}
	}
	if len(empty) > 0 {
		argv := append([]string{"mkdir", "-p", "--"}, empty...)
		out, err := sb.Exec(ctx, moat.ExecRequest{Cmd: argv, MaxOutputBytes: 4 << 10})
		if err != nil {
			return res, err
		}
		if out.ExitCode != 0 {
			return res, errdefs.FailedPreconditionf("httpapi: mkdir exited %d: %s", out.ExitCode, strings.TrimSpace(string(out.Stderr)))
		}
	}
	res.Dirs = len(dirs)
	return res, nil
}

// getArchive streams the directory ?path= as a tar archive of its regular files and
// directories (symlinks and devices are left out: the file API cannot read them safely).
func (s *Server) getArchive(w http.ResponseWriter, r *http.Request) {
	dir, err := sandboxPath(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, ok := s.sandbox(ctx, w, r)
	if !ok {
		return
	}
	// List the root first so a missing directory is a plain 404.
	entries, err := sb.ListDir(ctx, dir)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", apitype.MediaTar)
	w.WriteHeader(http.StatusOK)
	tw := tar.NewWriter(w)
	a := &archiver{s: s, sb: sb, tw: tw}
	if err := a.walk(ctx, dir, "", entries); err != nil {
		s.log.Warn("archive failed mid-stream", "request_id", RequestID(r.Context()), "err", err)
		panic(http.ErrAbortHandler)
	}
	if err := tw.Close(); err != nil {
		panic(http.ErrAbortHandler)
	}
}

type archiver struct {
	s       *Server
	sb      *moat.Sandbox
	tw      *tar.Writer
	entries int
	bytes   int64
}

func (a *archiver) walk(ctx context.Context, abs, rel string, entries []moat.FileInfo) error {
	for _, e := range entries {
		if a.entries++; a.entries > a.s.opts.MaxArchiveEntries {
			return fmt.Errorf("httpapi: more than %d entries: %w", a.s.opts.MaxArchiveEntries, errTooLarge)
		}
		// A listing comes from the sandbox (an agent inside it, or a provider): a name that
		// is not one plain element would read outside abs and name a tar entry that unpacks
		// outside the client's directory.
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
			return errdefs.Unavailablef("httpapi: %s: the sandbox listed an invalid entry name %q", abs, e.Name)
		}
		p, name := path.Join(abs, e.Name), path.Join(rel, e.Name)
		switch {
		case e.IsDir:
			if err := a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(e.Mode.Perm()), ModTime: e.ModTime}); err != nil {
				return err
			}
			sub, err := a.sb.ListDir(ctx, p)
			if err != nil {
				return err
			}
			if err := a.walk(ctx, p, name, sub); err != nil {
				return err
			}
		case e.Mode.IsRegular():
			if err := a.file(ctx, p, name, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// file spools one file to a temporary file first: a tar header needs the exact size, and
// the file may change between listing and reading.
func (a *archiver) file(ctx context.Context, p, name string, e moat.FileInfo) error {
	f, err := os.CreateTemp("", "moat-archive-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	limit := a.s.opts.MaxArchiveBytes - a.bytes
	if err := a.sb.ReadFile(ctx, p, &limitWriter{w: f, n: limit}); err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	a.bytes += size
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	mt := e.ModTime
	if mt.IsZero() {
		mt = time.Now()
	}
	if err := a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: int64(e.Mode.Perm()), ModTime: mt}); err != nil {
		return err
	}
	_, err = io.Copy(a.tw, f)
	return err
}

// limitWriter fails once more than n bytes are written.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("httpapi: archive over its size limit: %w", errTooLarge)
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}
