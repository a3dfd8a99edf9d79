package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// WriteFile creates or replaces the file at p with r's bytes (streamed), creating parent
// directories. mode 0 means 0644.
func (s *Sandbox) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	q := url.Values{"path": {p}}
	if mode != 0 {
		if mode&^fs.ModePerm != 0 {
			return errdefs.InvalidArgumentf("client: file mode %v: only permission bits are allowed", mode)
		}
		q.Set("mode", fmt.Sprintf("%04o", uint32(mode)))
	}
	if r == nil {
		r = http.NoBody
	}
	resp, err := s.c.do(ctx, request{method: http.MethodPut, path: sandboxPath(s.info.ID) + "/files", query: q,
		body: r, contentType: apitype.MediaOctet})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// ReadFile copies the file at p to w, streamed. A transfer cut short is an error, never a
// short file reported as complete.
func (s *Sandbox) ReadFile(ctx context.Context, p string, w io.Writer) error {
	resp, err := s.c.do(ctx, request{method: http.MethodGet, path: sandboxPath(s.info.ID) + "/files",
		query: url.Values{"path": {p}}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return copyBody(ctx, w, resp)
}

// copyBody copies a streamed body, checking its length when the server stated one.
func copyBody(ctx context.Context, w io.Writer, resp *http.Response) error {
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return transportError(ctx, err)
		}
		return errdefs.Unavailablef("client: transfer cut short after %d bytes: %v", n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return errdefs.Unavailablef("client: transfer cut short: %d of %d bytes", n, resp.ContentLength)
	}
	return nil
}

// ListDir lists the directory at p, sorted by name.
func (s *Sandbox) ListDir(ctx context.Context, p string) ([]moattype.FileInfo, error) {
	var out apitype.FileList
	err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.info.ID)+"/files", url.Values{"path": {p}, "list": {"1"}}, nil, &out)
	return out.Entries, err
}

// Remove deletes the file at p; a directory only with recursive. NotFound when missing.
func (s *Sandbox) Remove(ctx context.Context, p string, recursive bool) error {
	q := url.Values{"path": {p}}
	if recursive {
		q.Set("recursive", "1")
	}
	return s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.info.ID)+"/files", q, nil, nil)
}

// Mkdir creates the directory at p and its missing parents; mode 0 means 0755. An
// existing directory is fine.
func (s *Sandbox) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	q := url.Values{"path": {p}}
	if mode != 0 {
		if mode&^fs.ModePerm != 0 {
			return errdefs.InvalidArgumentf("client: directory mode %v: only permission bits are allowed", mode)
		}
		q.Set("mode", fmt.Sprintf("%04o", uint32(mode)))
	}
	return s.c.doJSON(ctx, http.MethodPut, sandboxPath(s.info.ID)+"/dirs", q, nil, nil)
}

// limitQuery adds lim's non-zero fields to q; the server applies them under its own caps.
func limitQuery(q url.Values, lim moattype.ArchiveLimits) url.Values {
	if lim.MaxBytes > 0 {
		q.Set("max_bytes", strconv.FormatInt(lim.MaxBytes, 10))
	}
	if lim.MaxEntries > 0 {
		q.Set("max_entries", strconv.Itoa(lim.MaxEntries))
	}
	if lim.MaxFileBytes > 0 {
		q.Set("max_file_bytes", strconv.FormatInt(lim.MaxFileBytes, 10))
	}
	return q
}

// PutArchive unpacks the tar stream r (streamed) into directory dir, creating it.
func (s *Sandbox) PutArchive(ctx context.Context, dir string, r io.Reader, lim moattype.ArchiveLimits) (moattype.ArchiveResult, error) {
	var out moattype.ArchiveResult
	resp, err := s.c.do(ctx, request{method: http.MethodPut, path: sandboxPath(s.info.ID) + "/archive",
		query: limitQuery(url.Values{"path": {dir}}, lim), body: r, contentType: apitype.MediaTar})
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := decodeBody(resp, &out); err != nil {
		return out, err
	}
	return out, nil
}

// GetArchive writes directory dir as a tar stream to w, streamed. A transfer cut short is an
// error, never a short archive reported as complete.
func (s *Sandbox) GetArchive(ctx context.Context, dir string, w io.Writer, lim moattype.ArchiveLimits) error {
	resp, err := s.c.do(ctx, request{method: http.MethodGet, path: sandboxPath(s.info.ID) + "/archive",
		query: limitQuery(url.Values{"path": {dir}}, lim), accept: apitype.MediaTar})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := copyBody(ctx, w, resp); err != nil {
		return err
	}
	// An error after the archive started comes in the trailer (read once the body is).
	if t := resp.Trailer.Get(apitype.TrailerError); t != "" {
		var b apitype.ErrorBody
		if err := json.Unmarshal([]byte(t), &b); err != nil || b.Message == "" {
			return errdefs.Unavailablef("client: archive cut short: %s", t)
		}
		return b.Err(http.StatusInternalServerError)
	}
	return nil
}

func decodeBody(resp *http.Response, v any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return errdefs.Unavailablef("client: read answer: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errdefs.Unavailablef("client: decode answer: %v", err)
	}
	return nil
}
