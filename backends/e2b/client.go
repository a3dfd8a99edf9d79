package e2b

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

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// client is a hand-written HTTP client for E2B's control plane (api.<domain>) and for envd,
// the daemon inside each sandbox (reached through the edge proxy). It owns retries and the
// mapping of provider errors to errdefs kinds. It never puts the API key or an envd access
// token into an error or a log line.
type client struct {
	http      *http.Client
	apiURL    string // control plane base, no trailing slash
	apiKey    string
	policy    restapi.Policy // shared by control-plane and envd calls
	userAgent string
	// endpointFromAPI: the endpoint was chosen through the settings API.
	endpointFromAPI bool
}

// withAPIURL returns a copy of c that sends its control-plane calls to apiURL (no trailing
// slash): the same key, retry policy, user agent and HTTP client.
func (c *client) withAPIURL(apiURL string, fromAPI bool) *client {
	n := *c
	n.apiURL = apiURL
	n.endpointFromAPI = fromAPI
	return &n
}

// apiError is the control plane's error body: {code:int, message, error_code?}.
type apiError struct {
	Code      int    `json:"code"`
	Message   string `json:"message"`
	ErrorCode string `json:"error_code,omitempty"`
}

// request describes one control-plane call.
type request struct {
	method     string
	path       string // starting with "/"
	query      url.Values
	body       any // JSON-encoded when non-nil
	idempotent bool
	noRetry    bool // one attempt only (probes)
}

// do performs r against the control plane, retrying per policy, and decodes a 2xx JSON
// answer into out (when out is non-nil). It returns the final response's headers.
func (c *client) do(ctx context.Context, r request, out any) (http.Header, error) {
	var payload []byte
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, errdefs.InvalidArgumentf("e2b: encode %s %s: %v", r.method, r.path, err)
		}
		payload = b
	}
	u := c.apiURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	rc := restapi.Client{
		Name: "e2b", HTTP: c.http, Policy: c.policy, Secrets: []string{c.apiKey},
		Error:     func(resp *http.Response, what string) error { return readAPIError(resp, what, c.apiKey) },
		Retryable: func(status int, idempotent bool, _ error) bool { return retryable(status, idempotent) },
	}
	resp, err := rc.Do(ctx, restapi.Request{
		What:       r.method + " " + r.path,
		Idempotent: r.idempotent,
		NoRetry:    r.noRetry,
		Build: func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, r.method, u, bodyReader(payload))
			if err != nil {
				return nil, errdefs.InvalidArgumentf("e2b: build request %s %s: %v", r.method, r.path, err)
			}
			req.Header.Set("X-API-Key", c.apiKey)
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", c.userAgent)
			if payload != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			return req, nil
		},
	})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := decodeJSON(resp.Body, out); err != nil {
			return nil, errdefs.Unavailablef("e2b: %s %s: %v", r.method, r.path, err)
		}
	}
	return resp.Header, nil
}

func bodyReader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

// retryable is restapi.RetryableStatus but for 501, which E2B answers for what it does not
// implement (mapped to Unsupported): no retry changes that.
func retryable(status int, idempotent bool) bool {
	return status != http.StatusNotImplemented && restapi.RetryableStatus(status, idempotent)
}

func kindOfCtx(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errdefs.ErrDeadlineExceeded
	}
	return errdefs.ErrCanceled
}

// decodeJSON decodes a JSON body, quoting a short prefix of anything that is not JSON (an
// HTML error page from a proxy, say).
func decodeJSON(r io.Reader, out any) error {
	b, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return fmt.Errorf("read response: %v", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("unexpected non-JSON response %q: %v", restapi.Prefix(b, quoteLen), err)
	}
	return nil
}

// quoteLen is how much of an unexpected body an error message quotes.
const quoteLen = 120

// readAPIError turns a non-2xx control-plane answer into an errdefs error that keeps the
// provider's message, with secrets redacted (a proxy may echo the key).
func readAPIError(resp *http.Response, what string, secrets ...string) error {
	msg := providerMessage(readErrorBody(resp.Body, secrets))
	return statusError(resp.StatusCode, fmt.Sprintf("e2b: %s: %d %s", what, resp.StatusCode, msg))
}

// readErrorBody is restapi.ReadErrorBody with secrets redacted.
func readErrorBody(r io.Reader, secrets []string) []byte {
	return []byte(restapi.Redact(string(restapi.ReadErrorBody(r)), secrets...))
}

// providerMessage extracts "message" (and error_code) from a JSON error body, or quotes a
// short prefix of a body that is not JSON.
func providerMessage(b []byte) string {
	var ae apiError
	if len(bytes.TrimSpace(b)) == 0 {
		return "(empty body)"
	}
	if err := json.Unmarshal(b, &ae); err == nil && ae.Message != "" {
		if ae.ErrorCode != "" {
			return ae.Message + " (" + ae.ErrorCode + ")"
		}
		return ae.Message
	}
	// Connect's JSON errors carry a string code.
	var ce struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(b, &ce); err == nil && (ce.Message != "" || ce.Code != "") {
		return strings.TrimSpace(ce.Code + ": " + ce.Message)
	}
	return fmt.Sprintf("unexpected non-JSON response %q", restapi.Prefix(b, quoteLen))
}

// statusError maps an HTTP status to an errdefs kind: restapi.KindForStatus with E2B's
// differences on top. A status with no kind gives a plain error.
func statusError(status int, msg string) error {
	kind := restapi.KindForStatus(status)
	switch status {
	case http.StatusNotImplemented:
		kind = errdefs.ErrUnsupported
	case http.StatusGatewayTimeout:
		// A gateway timeout is Unavailable like the other 5xx (see the package doc).
		kind = errdefs.ErrUnavailable
	case http.StatusInsufficientStorage:
		// envd answers 507 when the sandbox's disk is full.
		kind = errdefs.ErrResourceExhausted
	}
	if kind == nil {
		return errors.New(msg)
	}
	return errdefs.New(kind, msg)
}
