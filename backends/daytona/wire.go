package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// Wire types of the Daytona platform API (openapi "CreateSandbox", "Sandbox") and the
// toolbox daemon. Field names follow @daytonaio/sdk 0.218.0 / the generated api-client.

type buildInfo struct {
	DockerfileContent string `json:"dockerfileContent"`
}

type volumeMount struct {
	VolumeID  string `json:"volumeId"`
	MountPath string `json:"mountPath"`
	Subpath   string `json:"subpath,omitempty"`
}

type createSandbox struct {
	Name                string            `json:"name,omitempty"`
	Snapshot            string            `json:"snapshot,omitempty"`
	BuildInfo           *buildInfo        `json:"buildInfo,omitempty"`
	User                string            `json:"user,omitempty"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              *bool             `json:"public,omitempty"`
	Target              string            `json:"target,omitempty"`
	CPU                 int               `json:"cpu,omitempty"`
	Memory              int               `json:"memory,omitempty"` // GB
	Disk                int               `json:"disk,omitempty"`   // GB
	AutoStopInterval    *int              `json:"autoStopInterval,omitempty"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval,omitempty"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval,omitempty"`
	TTLMinutes          *int              `json:"ttlMinutes,omitempty"`
	Volumes             []volumeMount     `json:"volumes,omitempty"`
	NetworkBlockAll     *bool             `json:"networkBlockAll,omitempty"`
	NetworkAllowList    string            `json:"networkAllowList,omitempty"`
}

type sandbox struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	State           string            `json:"state"`
	DesiredState    string            `json:"desiredState"`
	ErrorReason     string            `json:"errorReason"`
	Labels          map[string]string `json:"labels"`
	ToolboxProxyURL string            `json:"toolboxProxyUrl"`
	Snapshot        string            `json:"snapshot"`
	CreatedAt       string            `json:"createdAt"`
}

type sandboxList struct {
	Items      []sandbox `json:"items"`
	NextCursor *string   `json:"nextCursor"`
}

type previewURL struct {
	SandboxID string `json:"sandboxId"`
	URL       string `json:"url"`
	Token     string `json:"token"`
}

type sessionExecRequest struct {
	Command  string `json:"command"`
	RunAsync bool   `json:"runAsync"`
}

type sessionExecResponse struct {
	CmdID    string `json:"cmdId"`
	ExitCode *int   `json:"exitCode"`
}

type command struct {
	ID       string `json:"id"`
	Command  string `json:"command"`
	ExitCode *int   `json:"exitCode"`
}

type commandLogs struct {
	Output string `json:"output"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

type fileInfo struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	Mode        string `json:"mode"`
	Permissions string `json:"permissions"`
	IsDir       bool   `json:"isDir"`
	ModifiedAt  string `json:"modifiedAt"`
}

// Platform API calls.

func (c *client) createSandbox(ctx context.Context, in *createSandbox) (*sandbox, error) {
	var out sandbox
	// Not idempotent: a retried create after a lost answer would make a second sandbox.
	if err := c.doJSON(ctx, http.MethodPost, c.apiPath("/sandbox"), in, &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) getSandbox(ctx context.Context, id string) (*sandbox, error) {
	var out sandbox
	if err := c.doJSON(ctx, http.MethodGet, c.apiPath("/sandbox/%s", url.PathEscape(id)), nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) deleteSandbox(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, c.apiPath("/sandbox/%s", url.PathEscape(id)), nil, nil, true)
}

// sandboxAction posts one of start, stop, archive.
func (c *client) sandboxAction(ctx context.Context, id, action string) (*sandbox, error) {
	var out sandbox
	if err := c.doJSON(ctx, http.MethodPost, c.apiPath("/sandbox/%s/%s", url.PathEscape(id), action), nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) snapshotSandbox(ctx context.Context, id, name string) (*sandbox, error) {
	var out sandbox
	in := map[string]string{"name": name}
	if err := c.doJSON(ctx, http.MethodPost, c.apiPath("/sandbox/%s/snapshot", url.PathEscape(id)), in, &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) listSandboxes(ctx context.Context, labels map[string]string, cursor string) (*sandboxList, error) {
	q := url.Values{}
	q.Set("limit", "100")
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if len(labels) > 0 {
		b, _ := json.Marshal(labels)
		q.Set("labels", string(b))
	}
	var out sandboxList
	if err := c.doJSON(ctx, http.MethodGet, c.apiPath("/sandbox?%s", q.Encode()), nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) previewURL(ctx context.Context, id string, port int) (*previewURL, error) {
	var out previewURL
	if err := c.doJSON(ctx, http.MethodGet, c.apiPath("/sandbox/%s/ports/%d/preview-url", url.PathEscape(id), port), nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// toolbox addresses the toolbox API of one sandbox: {toolboxProxyUrl}/{sandboxId}.
type toolbox struct {
	c    *client
	base string
}

func (c *client) toolbox(proxyURL, id string) *toolbox {
	return &toolbox{c: c, base: strings.TrimRight(proxyURL, "/") + "/" + url.PathEscape(id)}
}

func (t *toolbox) u(p string, q url.Values) string {
	if len(q) > 0 {
		return t.base + p + "?" + q.Encode()
	}
	return t.base + p
}

func (t *toolbox) createSession(ctx context.Context, sid string) error {
	return t.c.doJSON(ctx, http.MethodPost, t.u("/process/session", nil), map[string]string{"sessionId": sid}, nil, false)
}

func (t *toolbox) deleteSession(ctx context.Context, sid string) error {
	return t.c.doJSON(ctx, http.MethodDelete, t.u("/process/session/"+url.PathEscape(sid), nil), nil, nil, true)
}

func (t *toolbox) sessionExec(ctx context.Context, sid string, in *sessionExecRequest) (*sessionExecResponse, error) {
	var out sessionExecResponse
	if err := t.c.doJSON(ctx, http.MethodPost, t.u("/process/session/"+url.PathEscape(sid)+"/exec", nil), in, &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

func (t *toolbox) getCommand(ctx context.Context, sid, cid string) (*command, error) {
	var out command
	p := "/process/session/" + url.PathEscape(sid) + "/command/" + url.PathEscape(cid)
	if err := t.c.doJSON(ctx, http.MethodGet, t.u(p, nil), nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

func (t *toolbox) commandLogs(ctx context.Context, sid, cid string) (*commandLogs, error) {
	var out commandLogs
	p := "/process/session/" + url.PathEscape(sid) + "/command/" + url.PathEscape(cid) + "/logs"
	if err := t.c.doJSONLimit(ctx, http.MethodGet, t.u(p, nil), nil, &out, true, maxLogAnswer); err != nil {
		return nil, err
	}
	return &out, nil
}

// upload writes data to path with the daemon's bulk-upload form (files[0].path, files[0].file);
// the daemon creates missing parent directories.
func (t *toolbox) upload(ctx context.Context, path string, data []byte) error {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("files[0].path", path); err != nil {
		return err
	}
	fw, err := mw.CreateFormFile("files[0].file", path)
	if err != nil {
		return err
	}
	if _, err := fw.Write(data); err != nil {
		return err
	}
	if err := mw.Close(); err != nil {
		return err
	}
	resp, err := t.c.do(ctx, request{method: http.MethodPost, url: t.u("/files/bulk-upload", nil), body: buf.Bytes(), contentType: mw.FormDataContentType(), idempotent: true})
	if err != nil {
		return err
	}
	drainClose(resp.Body)
	return nil
}

func (t *toolbox) setMode(ctx context.Context, path string, perm uint32) error {
	q := url.Values{"path": {path}, "mode": {strconv.FormatUint(uint64(perm), 8)}}
	return t.c.doJSON(ctx, http.MethodPost, t.u("/files/permissions", q), nil, nil, true)
}

func (t *toolbox) createFolder(ctx context.Context, path string, perm uint32) error {
	q := url.Values{"path": {path}, "mode": {strconv.FormatUint(uint64(perm), 8)}}
	return t.c.doJSON(ctx, http.MethodPost, t.u("/files/folder", q), nil, nil, true)
}

func (t *toolbox) deleteFile(ctx context.Context, path string, recursive bool) error {
	q := url.Values{"path": {path}}
	if recursive {
		q.Set("recursive", "true")
	}
	return t.c.doJSON(ctx, http.MethodDelete, t.u("/files", q), nil, nil, true)
}

func (t *toolbox) fileInfo(ctx context.Context, path string) (*fileInfo, error) {
	var out fileInfo
	if err := t.c.doJSON(ctx, http.MethodGet, t.u("/files/info", url.Values{"path": {path}}), nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

func (t *toolbox) listFiles(ctx context.Context, path string) ([]fileInfo, error) {
	var out []fileInfo
	if err := t.c.doJSON(ctx, http.MethodGet, t.u("/files", url.Values{"path": {path}}), nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// download streams the file at path to w through the bulk-download endpoint, whose answer
// is multipart/form-data: a part named "file" with the bytes, or a part named "error" with
// a JSON ErrorResponse.
func (t *toolbox) download(ctx context.Context, path string, w io.Writer) error {
	body, _ := json.Marshal(map[string][]string{"paths": {path}})
	resp, err := t.c.do(ctx, request{method: http.MethodPost, url: t.u("/files/bulk-download", nil), body: body, contentType: "application/json", idempotent: true})
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	mr, err := multipartReader(resp)
	if err != nil {
		return err
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return errdefs.Unavailablef("daytona: download %s: no file part in response", path)
		}
		if err != nil {
			return errdefs.Unavailablef("daytona: download %s: %v", path, err)
		}
		switch part.FormName() {
		case "file":
			src := &partReader{r: part}
			if _, err := io.Copy(w, src); err != nil {
				if src.err != nil && ctx.Err() == nil {
					// The answer broke off (or is malformed): the provider's failure.
					return errdefs.Unavailablef("daytona: download %s: reading the answer: %v", path, src.err)
				}
				return fmt.Errorf("daytona: download %s: %w", path, err)
			}
			return nil
		case "error":
			b, _ := io.ReadAll(io.LimitReader(part, 16<<10))
			var e struct {
				StatusCode int    `json:"statusCode"`
				Message    string `json:"message"`
				Code       string `json:"code"`
			}
			status := http.StatusInternalServerError
			msg := strings.TrimSpace(string(b))
			if json.Unmarshal(b, &e) == nil {
				if e.StatusCode != 0 {
					status = e.StatusCode
				}
				if e.Message != "" {
					msg = e.Message
				}
				if e.Code == "FILE_NOT_FOUND" {
					status = http.StatusNotFound
				}
			}
			return &apiError{Status: status, Code: e.Code, err: errdefs.New(kindFor(status), fmt.Sprintf("daytona: download %s: %s", path, restapi.Redact(msg, t.c.token)))}
		}
	}
}

// partReader remembers a read error other than EOF, to tell a broken answer from a
// failing writer.
type partReader struct {
	r   io.Reader
	err error
}

func (p *partReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && err != io.EOF && p.err == nil {
		p.err = err
	}
	return n, err
}

func multipartReader(resp *http.Response) (*multipart.Reader, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
		return nil, errdefs.Unavailablef("daytona: download: expected a multipart answer, got %q: %q", resp.Header.Get("Content-Type"), restapi.Prefix(b, quoteLen))
	}
	return multipart.NewReader(resp.Body, params["boundary"]), nil
}
