// Package client answers "how does Go code use a moat server?": a ctx-first SDK for the
// moatd HTTP API that mirrors moattype.Manager and moattype.Sandbox — create, find, list and destroy
// sandboxes, exec (buffered, streaming, with stdin), files and archives, the terminal,
// backends and session overrides — and turns error answers back into errdefs kinds. API and
// Handle are the small interfaces that both a local *moattype.Manager (Local) and a server
// (Remote) satisfy, so a CLI can work either way.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// Client talks to one moat server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// Option configures New.
type Option func(*Client)

// WithToken sends token as "Authorization: Bearer <token>".
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc (default: a client without a timeout; use contexts).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client of the server at baseURL ("http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, errdefs.InvalidArgumentf("client: server url %q: %v", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errdefs.InvalidArgumentf("client: server url %q: want http://host:port or https://host", baseURL)
	}
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.RawPath, "/")
	c := &Client{base: u, hc: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// url returns the full URL of an API path ("/v1/sandboxes") with query q.
func (c *Client) url(p string, q url.Values) string {
	u := c.join(p)
	u.RawQuery = q.Encode()
	return u.String()
}

// join appends the API path p to the base URL. p is already escaped (callers escape each
// variable segment with url.PathEscape), so it goes into RawPath: adding it to Path would
// escape it a second time ("a b" would reach the server as "a%20b").
func (c *Client) join(p string) url.URL {
	u := *c.base
	u.RawPath = u.EscapedPath() + p
	u.Path, _ = url.PathUnescape(u.RawPath) // escaped by construction: cannot fail
	u.RawQuery = ""
	return u
}

func (c *Client) header(h http.Header) {
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
}

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	body         io.Reader
	contentType  string
	accept       string
}

// do sends req and returns the response when it is a success; error answers become errdefs
// errors. The caller closes the body.
func (c *Client) do(ctx context.Context, req request) (*http.Response, error) {
	hr, err := http.NewRequestWithContext(ctx, req.method, c.url(req.path, req.query), req.body)
	if err != nil {
		return nil, errdefs.InvalidArgumentf("client: %v", err)
	}
	c.header(hr.Header)
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	if req.accept != "" {
		hr.Header.Set("Accept", req.accept)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp.StatusCode, resp.Body)
	}
	return resp, nil
}

// transportError keeps a context's error as the kind (canceled, deadline) and calls other
// failures to reach the server Unavailable.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("client: %w", errors.Join(ctx.Err(), err))
	}
	return errdefs.Wrap(errdefs.ErrUnavailable, fmt.Errorf("client: %w", err))
}

// decodeError reads an {"error":{...}} body into an errdefs error.
func decodeError(status int, body io.Reader) error {
	b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	var e apitype.Error
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
		return errdefs.FromHTTP(status, "", fmt.Sprintf("client: server answered %d: %s", status, msg))
	}
	return e.Error.Err(status)
}

// eventError turns an error event into an errdefs error.
func eventError(b *apitype.ErrorBody) error {
	if b == nil {
		return errdefs.Unavailablef("client: error event without an error")
	}
	return b.Err(errdefs.HTTPStatus(b.Kind))
}

// doJSON sends in (when not nil) as JSON and decodes the answer into out (when not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	req := request{method: method, path: path, query: q}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return errdefs.InvalidArgumentf("client: encode request: %v", err)
		}
		req.body, req.contentType = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return transportError(ctx, err)
		}
		return errdefs.Unavailablef("client: decode %s %s answer: %v", method, path, err)
	}
	return nil
}

// Health asks /readyz whether the server is ready (nil) or why not.
func (c *Client) Health(ctx context.Context) error {
	var h apitype.Health
	return c.doJSON(ctx, http.MethodGet, "/readyz", nil, nil, &h)
}
