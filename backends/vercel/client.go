package vercel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// DefaultBaseURL is where the official SDK sends its requests.
const DefaultBaseURL = "https://vercel.com/api"

// Client is a typed client for the Vercel Sandbox REST API. It is safe for concurrent use.
// The token never appears in its errors.
type Client struct {
	baseURL   string // no trailing slash
	token     string
	teamID    string
	userAgent string
	rc        restapi.Client
	// endpointFromAPI: baseURL was chosen through the settings API.
	endpointFromAPI bool

	// Policy is how often and how patiently a call is tried: 4 attempts, 300 ms first
	// backoff, Retry-After waited up to 30 s (the SDK's limit is 20 s). Set it before use.
	Policy restapi.Policy
}

// NewClient returns a client for baseURL ("" = DefaultBaseURL). hc may be nil.
func NewClient(baseURL, token, teamID string, hc *http.Client) *Client {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	if hc == nil {
		// No overall timeout: command streams last as long as the command; every call is
		// bounded by its ctx instead.
		hc = &http.Client{}
	}
	return &Client{
		baseURL:   strings.TrimRight(baseURL, "/"),
		token:     token,
		teamID:    teamID,
		userAgent: "moat-vercel/1 (go)",
		rc: restapi.Client{
			Name:    "vercel",
			HTTP:    hc,
			Secrets: []string{token},
			Error:   func(resp *http.Response, what string) error { return readError(resp, what, token) },
		},
		Policy: restapi.Policy{MaxAttempts: 4, BaseBackoff: 300 * time.Millisecond, RetryAfterCap: 30 * time.Second},
	}
}

// withBaseURL returns a copy of c that sends its calls to baseURL (no trailing slash):
// the same token, team, user agent, retry policy and HTTP client.
func (c *Client) withBaseURL(baseURL string, fromAPI bool) *Client {
	n := *c
	n.baseURL = baseURL
	n.endpointFromAPI = fromAPI
	return &n
}

// APIError is an error answer of the API. It is wrapped with an errdefs kind.
type APIError struct {
	Status  int
	Code    string // the provider's error code, e.g. "sandbox_stopped"
	Message string
}

func (e *APIError) Error() string {
	switch {
	case e.Code != "" && e.Message != "":
		return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
	case e.Message != "":
		return fmt.Sprintf("%d: %s", e.Status, e.Message)
	case e.Code != "":
		return fmt.Sprintf("%d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("status %d", e.Status)
}

// apiCode returns the provider error code carried by err, or "".
func apiCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// request describes one call.
type request struct {
	method      string
	path        string // appended to the base URL
	query       url.Values
	body        []byte // resent on retries
	contentType string
	header      map[string]string
	// idempotent calls are retried on 5xx and any connection error too; every call is
	// retried on 429 and failed dials (see restapi.Request.Idempotent).
	idempotent bool
}

// do sends r, retrying as c.Policy allows, and returns a 2xx response whose body the caller
// must close. Any other outcome is an error with an errdefs kind.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	q := url.Values{}
	for k, v := range r.query {
		q[k] = v
	}
	if c.teamID != "" {
		q.Set("teamId", c.teamID)
	}
	u := c.baseURL + r.path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	rc := c.rc
	rc.Policy = c.Policy
	return rc.Do(ctx, restapi.Request{
		What:       r.method + " " + r.path,
		Idempotent: r.idempotent,
		Build: func(ctx context.Context) (*http.Request, error) {
			var body io.Reader
			if r.body != nil {
				body = bytes.NewReader(r.body)
			}
			req, err := http.NewRequestWithContext(ctx, r.method, u, body)
			if err != nil {
				return nil, errdefs.InvalidArgumentf("vercel: %s %s: %v", r.method, r.path, err)
			}
			req.Header.Set("Authorization", "Bearer "+c.token)
			ct := r.contentType
			if ct == "" {
				ct = "application/json" // the SDK sends it on every request, GETs included
			}
			req.Header.Set("Content-Type", ct)
			req.Header.Set("User-Agent", c.userAgent)
			for k, v := range r.header {
				req.Header.Set(k, v)
			}
			return req, nil
		},
	})
}

// readError turns a non-2xx answer into an error with an errdefs kind, keeping the
// provider's message with secrets redacted (a proxy may echo the token), and closes the body.
func readError(resp *http.Response, what string, secrets ...string) error {
	defer resp.Body.Close()
	raw := []byte(restapi.Redact(string(restapi.ReadErrorBody(resp.Body)), secrets...))
	ae := &APIError{Status: resp.StatusCode}
	var eb ErrorBody
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if len(bytes.TrimSpace(raw)) == 0 {
		ae.Message = http.StatusText(resp.StatusCode)
	} else if err := json.Unmarshal(raw, &eb); err == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
	} else {
		// An HTML page from a proxy, or garbage: say so and quote a short prefix.
		if mt == "" {
			mt = "no content-type"
		}
		return errdefs.Newf(kindFor(resp.StatusCode, ""), "vercel: %s: unexpected %d answer (%s): %q",
			what, resp.StatusCode, mt, restapi.Prefix(raw, 80))
	}
	kind := kindFor(resp.StatusCode, ae.Code)
	if resp.StatusCode == http.StatusForbidden && eb.Error.InvalidToken {
		// Vercel answers an unknown token with 403 {"invalidToken": true}: it is an
		// authentication failure, not a permission one.
		kind = errdefs.ErrUnauthenticated
	}
	return errdefs.Newf(kind, "vercel: %s: %w", what, ae)
}

// kindFor maps a status (and the provider's error code where it is more precise) to a kind:
// restapi.KindForStatus, except where Vercel differs.
func kindFor(status int, code string) error {
	switch code {
	case "sandbox_stopped", "sandbox_stopping", "sandbox_snapshotting":
		return errdefs.ErrFailedPrecondition
	case "snapshot_not_found":
		return errdefs.ErrNotFound
	}
	switch status {
	case http.StatusGone:
		// Vercel's 410 is a stopped session: the sandbox is there but not running.
		return errdefs.ErrFailedPrecondition
	case http.StatusGatewayTimeout:
		// Every 5xx is Unavailable here (see the package doc), a gateway timeout too.
		return errdefs.ErrUnavailable
	}
	if k := restapi.KindForStatus(status); k != nil {
		return k
	}
	return errdefs.ErrInvalidArgument
}

// maxJSONAnswer bounds a JSON answer: the largest (a page of sandboxes) is kilobytes, and
// a broken peer must not make the client buffer without end.
const maxJSONAnswer = 8 << 20

// doJSON sends r and decodes a JSON answer into out (nil: discard).
func (c *Client) doJSON(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, restapi.MaxErrorBody))
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONAnswer+1))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("vercel: %s %s: %w", r.method, r.path, ctx.Err())
		}
		return errdefs.Unavailablef("vercel: %s %s: reading answer: %v", r.method, r.path, err)
	}
	if len(raw) > maxJSONAnswer {
		return errdefs.Unavailablef("vercel: %s %s: answer larger than %d bytes", r.method, r.path, maxJSONAnswer)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return errdefs.Unavailablef("vercel: %s %s: answer is not the expected JSON (%v): %q",
			r.method, r.path, err, restapi.Prefix(raw, 80))
	}
	return nil
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only maps of strings and plain structs are marshalled here.
		panic("vercel: marshal request: " + err.Error())
	}
	return b
}

// ---- endpoints ----------------------------------------------------------------------

// CreateSandbox creates a sandbox and boots its first session. A runtime selects the
// legacy /v2 endpoint, anything else /v3, as the SDK does. Not retried on 5xx: a create
// that succeeded remotely must not be repeated (the Lister finds strays by tag).
func (c *Client) CreateSandbox(ctx context.Context, body *CreateSandboxRequest) (*SandboxAndSession, error) {
	path := "/v3/sandboxes"
	if body.Runtime != "" {
		path = "/v2/sandboxes"
	}
	var out SandboxAndSession
	err := c.doJSON(ctx, request{method: http.MethodPost, path: path, body: jsonBody(body)}, &out)
	return &out, err
}

// GetSandbox returns a sandbox by name; resume=true boots a new session when none runs.
func (c *Client) GetSandbox(ctx context.Context, projectID, name string, resume bool) (*SandboxAndSession, error) {
	var out SandboxAndSession
	err := c.doJSON(ctx, request{
		method: http.MethodGet, path: "/v2/sandboxes/" + url.PathEscape(name),
		query:      url.Values{"projectId": {projectID}, "resume": {strconv.FormatBool(resume)}},
		idempotent: !resume,
	}, &out)
	return &out, err
}

// ListSandboxes returns one page of a project's sandboxes.
func (c *Client) ListSandboxes(ctx context.Context, projectID, namePrefix, cursor string, limit int) (*SandboxList, error) {
	q := url.Values{"project": {projectID}}
	if namePrefix != "" {
		q.Set("namePrefix", namePrefix)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out SandboxList
	err := c.doJSON(ctx, request{method: http.MethodGet, path: "/v2/sandboxes", query: q, idempotent: true}, &out)
	return &out, err
}

// UpdatePorts replaces the sandbox's exposed ports and returns the new routes.
func (c *Client) UpdatePorts(ctx context.Context, projectID, name string, ports []int) ([]Route, error) {
	var out UpdateSandboxResponse
	err := c.doJSON(ctx, request{
		method: http.MethodPatch, path: "/v2/sandboxes/" + url.PathEscape(name),
		query: url.Values{"projectId": {projectID}}, body: jsonBody(map[string]any{"ports": ports}),
		idempotent: true,
	}, &out)
	return out.Routes, err
}

// DeleteSandbox deletes a sandbox and stops its session.
func (c *Client) DeleteSandbox(ctx context.Context, projectID, name string) error {
	return c.doJSON(ctx, request{
		method: http.MethodDelete, path: "/v2/sandboxes/" + url.PathEscape(name),
		query: url.Values{"projectId": {projectID}}, idempotent: true,
	}, nil)
}

// StopSession stops a session.
func (c *Client) StopSession(ctx context.Context, sessionID string) (*StopSessionResponse, error) {
	var out StopSessionResponse
	err := c.doJSON(ctx, request{
		method: http.MethodPost, path: "/v2/sandboxes/sessions/" + url.PathEscape(sessionID) + "/stop",
		idempotent: true,
	}, &out)
	return &out, err
}

// CreateSnapshot snapshots a session, which stops it.
func (c *Client) CreateSnapshot(ctx context.Context, sessionID string) (*CreateSnapshotResponse, error) {
	var out CreateSnapshotResponse
	err := c.doJSON(ctx, request{
		method: http.MethodPost, path: "/v2/sandboxes/sessions/" + url.PathEscape(sessionID) + "/snapshot",
	}, &out)
	return &out, err
}

// KillCommand sends signal to a running command.
func (c *Client) KillCommand(ctx context.Context, sessionID, cmdID string, signal int) error {
	return c.doJSON(ctx, request{
		method: http.MethodPost,
		path:   "/v2/sandboxes/sessions/" + url.PathEscape(sessionID) + "/cmd/" + url.PathEscape(cmdID) + "/kill",
		body:   jsonBody(map[string]int{"signal": signal}), idempotent: true,
	}, nil)
}

// RunCommandStream starts a command with wait and logs set and returns the NDJSON stream;
// the caller closes it. Never retried on 5xx: the command may have started.
func (c *Client) RunCommandStream(ctx context.Context, sessionID string, body *RunCommandRequest) (io.ReadCloser, error) {
	body.Wait, body.Logs = true, true
	r := request{method: http.MethodPost, path: "/v2/sandboxes/sessions/" + url.PathEscape(sessionID) + "/cmd", body: jsonBody(body)}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	// The SDK compares the content type verbatim; anything else is not a command stream.
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		return nil, errdefs.Unavailablef("vercel: POST %s: expected a command stream, got %q: %q", r.path, ct, restapi.Prefix(raw, 80))
	}
	return resp.Body, nil
}

// WriteFiles uploads a gzip-compressed tar, extracted relative to extractDir.
func (c *Client) WriteFiles(ctx context.Context, sessionID, extractDir string, tgz []byte) error {
	return c.doJSON(ctx, request{
		method: http.MethodPost, path: "/v2/sandboxes/sessions/" + url.PathEscape(sessionID) + "/fs/write",
		body: tgz, contentType: "application/gzip", header: map[string]string{"x-cwd": extractDir},
		idempotent: true, // the same archive extracts to the same files
	}, nil)
}

// ReadFile returns the raw bytes of the file at path; the caller closes them. A missing
// file is NotFound (the API answers 404 with an empty body).
func (c *Client) ReadFile(ctx context.Context, sessionID, path string) (io.ReadCloser, error) {
	r := request{
		method: http.MethodPost, path: "/v2/sandboxes/sessions/" + url.PathEscape(sessionID) + "/fs/read",
		body: jsonBody(ReadFileRequest{Path: path}), idempotent: true,
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) && apiCode(err) == "" {
			return nil, errdefs.NotFoundf("vercel: read %s: no such file", path)
		}
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "application/octet-stream") {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		return nil, errdefs.Unavailablef("vercel: read %s: expected file bytes, got %q: %q", path, ct, restapi.Prefix(raw, 80))
	}
	return resp.Body, nil
}
