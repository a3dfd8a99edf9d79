package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// sandboxPath reads ?path= and checks it has no "..": the manager checks again, but the
// error is the API's to give. Relative paths are passed on (the manager resolves them
// against the sandbox's workdir).
func sandboxPath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	switch {
	case p == "":
		return "", errdefs.InvalidArgumentf("httpapi: missing ?path=")
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

// putFile writes the raw body to ?path= (?mode=0644 octal). The body is streamed.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	p, mode, err := pathAndMode(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := checkLength(r, "file", s.opts.MaxFileBytes); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
		return noContent(w, sb.WriteFile(ctx, p, http.MaxBytesReader(w, r.Body, s.opts.MaxFileBytes), mode))
	})
}

// lazyWriter writes the success header on the first byte, so an error that comes before
// any content can still be answered with its own status.
type lazyWriter struct {
	w           http.ResponseWriter
	contentType string
	trailers    []string // declared with the header
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
		for _, t := range l.trailers {
			l.w.Header().Add("Trailer", t)
		}
		l.w.WriteHeader(http.StatusOK)
	}
}

// getFile streams the file at ?path=, or lists the directory with ?list=1.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	p, err := sandboxPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, _ := strconv.ParseBool(r.URL.Query().Get("list"))
	s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
		if list {
			entries, err := sb.ListDir(ctx, p)
			if err != nil {
				return err
			}
			if entries == nil {
				entries = []moat.FileInfo{}
			}
			writeJSON(w, http.StatusOK, apitype.FileList{Path: p, Entries: entries})
			return nil
		}
		lw := &lazyWriter{w: w, contentType: apitype.MediaOctet}
		if err := sb.ReadFile(ctx, p, lw); err != nil {
			if !lw.started {
				return err
			}
			// Content went out already: cut the connection so the client sees a short body
			// rather than a file that looks complete.
			s.log.Warn("file read failed mid-stream", "request_id", RequestID(r.Context()), "err", err)
			panic(http.ErrAbortHandler)
		}
		lw.start()
		return nil
	})
}

// deleteFile removes the file at ?path= (a directory with ?recursive=1). It is NotFound
// when nothing is there.
func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	p, err := sandboxPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	recursive, _ := strconv.ParseBool(r.URL.Query().Get("recursive"))
	s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
		return noContent(w, sb.Remove(ctx, p, recursive))
	})
}

// putDir makes the directory ?path= and its missing parents (?mode=0755 octal).
func (s *Server) putDir(w http.ResponseWriter, r *http.Request) {
	p, mode, err := pathAndMode(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
		return noContent(w, sb.Mkdir(ctx, p, mode))
	})
}

// pathAndMode reads ?path= and ?mode= (the routes that write a file or make a directory).
func pathAndMode(r *http.Request) (string, fs.FileMode, error) {
	p, err := sandboxPath(r)
	if err != nil {
		return "", 0, err
	}
	mode, err := queryMode(r)
	return p, mode, err
}

// checkLength refuses, before any work, a body that declares more than limit bytes (413);
// what names the body in the message.
func checkLength(r *http.Request, what string, limit int64) error {
	if r.ContentLength > limit {
		return fmt.Errorf("httpapi: %s of %d bytes is over the %d byte limit: %w", what, r.ContentLength, limit, errTooLarge)
	}
	return nil
}

// queryMode reads ?mode= as octal permission bits; 0 when absent.
func queryMode(r *http.Request) (fs.FileMode, error) {
	m := r.URL.Query().Get("mode")
	if m == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(m, 8, 32)
	if err != nil || v > 0o777 {
		return 0, errdefs.InvalidArgumentf("httpapi: mode %q: want octal permission bits like 0644", m)
	}
	return fs.FileMode(v), nil
}

// archiveArgs reads ?path= and the archive caps (both archive routes).
func (s *Server) archiveArgs(r *http.Request) (string, moat.ArchiveLimits, error) {
	dir, err := sandboxPath(r)
	if err != nil {
		return "", moat.ArchiveLimits{}, err
	}
	lim, err := s.archiveLimits(r)
	return dir, lim, err
}

// archiveLimits are the server's archive caps, tightened by the caller's ?max_bytes=,
// ?max_entries= and ?max_file_bytes=.
func (s *Server) archiveLimits(r *http.Request) (moat.ArchiveLimits, error) {
	server := moat.ArchiveLimits{MaxBytes: s.opts.MaxArchiveBytes, MaxEntries: s.opts.MaxArchiveEntries, MaxFileBytes: s.opts.MaxFileBytes}
	var asked moat.ArchiveLimits
	q := r.URL.Query()
	for name, dst := range map[string]*int64{"max_bytes": &asked.MaxBytes, "max_file_bytes": &asked.MaxFileBytes} {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return server, errdefs.InvalidArgumentf("httpapi: %s %q: want a byte count", name, v)
			}
			*dst = n
		}
	}
	if v := q.Get("max_entries"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return server, errdefs.InvalidArgumentf("httpapi: max_entries %q: want a count", v)
		}
		asked.MaxEntries = n
	}
	return server.Tighter(asked), nil
}

// putArchive unpacks a tar body into the directory ?path= (see Sandbox.PutArchive).
func (s *Server) putArchive(w http.ResponseWriter, r *http.Request) {
	dir, lim, err := s.archiveArgs(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := checkLength(r, "archive", s.opts.MaxArchiveBytes); err != nil {
		s.writeError(w, r, err)
		return
	}
	sandboxJSON(s, w, r, http.StatusOK, func(ctx context.Context, sb *moat.Sandbox) (moat.ArchiveResult, error) {
		res, err := sb.PutArchive(ctx, dir, http.MaxBytesReader(w, r.Body, s.opts.MaxArchiveBytes), lim)
		if errdefs.Is(err, errdefs.KindResourceExhausted) {
			err = fmt.Errorf("%w: %w", err, errTooLarge) // 413, like a body over its limit
		}
		return res, err
	})
}

// getArchive streams the directory ?path= as a tar archive (see Sandbox.GetArchive).
func (s *Server) getArchive(w http.ResponseWriter, r *http.Request) {
	dir, lim, err := s.archiveArgs(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
		lw := &lazyWriter{w: w, contentType: apitype.MediaTar, trailers: []string{apitype.TrailerError}}
		if err := sb.GetArchive(ctx, dir, lw, lim); err != nil {
			if !lw.started {
				return err
			}
			// Content went out already: the error goes in the trailer, so its kind survives
			// (an archive over its cap is resource_exhausted, not a lost connection), and the
			// archive ends without its end marker.
			s.log.Warn("archive failed mid-stream", "request_id", RequestID(r.Context()), "err", err)
			b, _ := json.Marshal(apitype.NewErrorBody(errdefs.KindOf(err), err))
			w.Header().Set(apitype.TrailerError, string(b))
			return nil
		}
		lw.start()
		return nil
	})
}
