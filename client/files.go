package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
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
func (s *Sandbox) ListDir(ctx context.Context, p string) ([]moat.FileInfo, error) {
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

// UploadArchive unpacks the tar stream r into directory dir.
func (s *Sandbox) UploadArchive(ctx context.Context, dir string, r io.Reader) (apitype.ArchiveResult, error) {
	var out apitype.ArchiveResult
	resp, err := s.c.do(ctx, request{method: http.MethodPut, path: sandboxPath(s.info.ID) + "/archive",
		query: url.Values{"path": {dir}}, body: r, contentType: apitype.MediaTar})
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := decodeBody(resp, &out); err != nil {
		return out, err
	}
	return out, nil
}

// DownloadArchive writes directory dir as a tar stream to w.
func (s *Sandbox) DownloadArchive(ctx context.Context, dir string, w io.Writer) error {
	resp, err := s.c.do(ctx, request{method: http.MethodGet, path: sandboxPath(s.info.ID) + "/archive",
		query: url.Values{"path": {dir}}, accept: apitype.MediaTar})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return copyBody(ctx, w, resp)
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
