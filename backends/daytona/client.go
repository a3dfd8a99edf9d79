package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// wireVersion is the Daytona SDK version whose wire format this client speaks. The toolbox
// daemon picks response formats from the X-Daytona-SDK-Version header (split stdout/stderr
// JSON logs need >= 0.167.0), so the client claims the version it was checked against.
const wireVersion = "0.218.0"

// client is a hand-written typed HTTP client for the Daytona platform API and the
// per-sandbox toolbox API. It is safe for concurrent use.
type client struct {
	apiURL string // e.g. https://app.daytona.io/api, no trailing slash
	token  string
	orgID  string
	// rc sends every call with the shared retry policy.
	rc restapi.Client
	// endpointFromAPI: apiURL was chosen through the settings API.
	endpointFromAPI bool
}

// newClient returns a client with Daytona's error decoding and the given policy.
func newClient(apiURL, token, orgID string, p restapi.Policy) *client {
	c := &client{apiURL: apiURL, token: token, orgID: orgID}
	c.rc = restapi.Client{
		Name:    "daytona",
		HTTP:    &http.Client{Transport: http.DefaultTransport},
		Policy:  p,
		Secrets: []string{token},
		Error:   c.errorFrom,
	}
	return c
}

// withAPIURL returns a copy of c that sends its platform calls to apiURL (no trailing
// slash): the same token, organization, headers, retry policy and HTTP client.
func (c *client) withAPIURL(apiURL string, fromAPI bool) *client {
	n := *c
	n.apiURL = apiURL
	n.endpointFromAPI = fromAPI
	n.rc.Error = n.errorFrom
	return &n
}

// apiError is a non-2xx answer, already mapped to an errdefs kind.
type apiError struct {
	Status int
	Code   string // toolbox daemon code (NOT_FOUND, REQUEST_TIMEOUT, ...), "" when absent
	err    error
}

func (e *apiError) Error() string { return e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

// request describes one call. Body is a byte slice so retries can replay it.
type request struct {
	method      string
	url         string // absolute
	body        []byte
	contentType string
	// idempotent calls are retried on 5xx and any connection error; every call is retried
	// on 429 and failed dials (see restapi.Request.Idempotent).
	idempotent bool
	// noRetry makes the call one attempt (probes).
	noRetry bool
}

// apiPath builds an absolute URL under the platform API.
func (c *client) apiPath(format string, args ...any) string {
	return c.apiURL + fmt.Sprintf(format, args...)
}

// maxJSONAnswer bounds a JSON answer other than command logs: the largest (a page of
// sandboxes, a directory listing) is far smaller, and a broken peer must not make the
// client buffer without end.
const maxJSONAnswer = 16 << 20

// maxLogAnswer bounds a command-logs answer. The toolbox returns a command's whole log on
// every poll, so this is also the most output (base64-encoded, about 3/4 of it decoded)
// one Exec can return.
const maxLogAnswer = 128 << 20

// doJSON sends in (when non-nil) as JSON and decodes a 2xx answer of at most maxJSONAnswer
// bytes into out (when non-nil).
func (c *client) doJSON(ctx context.Context, method, u string, in, out any, idempotent bool) error {
	return c.doJSONLimit(ctx, method, u, in, out, idempotent, maxJSONAnswer)
}

// doJSONLimit is doJSON with an answer bound of limit bytes; a longer answer is
// ResourceExhausted.
func (c *client) doJSONLimit(ctx context.Context, method, u string, in, out any, idempotent bool, limit int64) error {
	r := request{method: method, url: u, idempotent: idempotent}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("daytona: encode request: %w", err)
		}
		r.body, r.contentType = b, "application/json"
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if out == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("daytona: %s %s: %w", method, redactURL(u), ctx.Err())
		}
		return errdefs.Wrap(errdefs.ErrUnavailable, fmt.Errorf("daytona: %s %s: read response: %w", method, redactURL(u), err))
	}
	if int64(len(body)) > limit {
		return errdefs.Newf(errdefs.ErrResourceExhausted, "daytona: %s %s: answer larger than %d bytes", method, redactURL(u), limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return errdefs.Unavailablef("daytona: %s %s: undecodable %d response %q: %v", method, redactURL(u), resp.StatusCode, restapi.Prefix(body, quoteLen), err)
	}
	return nil
}

// do performs r with retries and returns a 2xx response whose body the caller must close.
func (c *client) do(ctx context.Context, r request) (*http.Response, error) {
	return c.rc.Do(ctx, restapi.Request{
		What:       r.method + " " + redactURL(r.url),
		Idempotent: r.idempotent,
		NoRetry:    r.noRetry,
		Build: func(ctx context.Context) (*http.Request, error) {
			var body io.Reader
			if r.body != nil {
				body = bytes.NewReader(r.body)
			}
			req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
			if err != nil {
				return nil, errdefs.InvalidArgumentf("daytona: build request %s %s: %v", r.method, redactURL(r.url), err)
			}
			if r.contentType != "" {
				req.Header.Set("Content-Type", r.contentType)
			}
			req.Header.Set("Accept", "application/json")
			req.Header.Set("Authorization", "Bearer "+c.token)
			req.Header.Set("X-Daytona-Source", "moat")
			req.Header.Set("X-Daytona-SDK-Version", wireVersion)
			req.Header.Set("User-Agent", "moat-daytona/"+wireVersion)
			if c.orgID != "" {
				req.Header.Set("X-Daytona-Organization-ID", c.orgID)
			}
			return req, nil
		},
	})
}

// errorFrom maps the error answer of the call named what ("GET /api/sandbox") to an
// *apiError with an errdefs kind, keeping the provider's message. Both Daytona error shapes
// carry "message": the platform API's NestJS filter ({statusCode, error, message, path,
// timestamp}) and the toolbox daemon's ({statusCode, message, code, ...}).
func (c *client) errorFrom(resp *http.Response, what string) error {
	status, ctype := resp.StatusCode, resp.Header.Get("Content-Type")
	body := restapi.ReadErrorBody(resp.Body)
	var eb struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
		Code    string          `json:"code"`
	}
	msg := ""
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &eb) == nil {
		var s string
		var list []string
		switch {
		case json.Unmarshal(eb.Message, &s) == nil && s != "":
			msg = s
		case json.Unmarshal(eb.Message, &list) == nil && len(list) > 0:
			msg = strings.Join(list, ", ")
		case eb.Error != "":
			msg = eb.Error
		}
	}
	if msg == "" {
		switch {
		case len(trimmed) == 0:
			msg = http.StatusText(status)
		case strings.HasPrefix(ctype, "text/plain") && utf8.Valid(trimmed) && len(trimmed) <= 200:
			msg = string(trimmed)
		default:
			msg = fmt.Sprintf("unexpected response body %q", restapi.Prefix(trimmed, quoteLen))
		}
	}
	msg = restapi.Redact(msg, c.token)
	text := fmt.Sprintf("daytona: %s: %s (HTTP %d)", what, msg, status)
	return &apiError{Status: status, Code: eb.Code, err: errdefs.New(kindFor(status), text)}
}

// kindFor maps an error answer's status to a kind: restapi.KindForStatus, and Unavailable
// for a status it leaves open (an answer the client does not understand).
func kindFor(status int) error {
	if k := restapi.KindForStatus(status); k != nil {
		return k
	}
	return errdefs.ErrUnavailable
}

// redactURL drops the query string: it may hold file paths but never needs to be in errors
// twice, and keeps messages short.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "<invalid url>"
	}
	return p.Path
}

// quoteLen is how much of an unexpected body an error message quotes.
const quoteLen = 64

func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 256<<10))
	_ = rc.Close()
}
