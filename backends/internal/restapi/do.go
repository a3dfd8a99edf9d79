package restapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/moatsh/moat/errdefs"
)

// Policy says how often and how patiently one call is tried. Every hosted-provider client
// retries by it, through Client.Do; only the numbers differ between providers. The zero
// value tries once.
type Policy struct {
	// MaxAttempts bounds how often one call is tried, the first attempt included; < 1
	// counts as 1.
	MaxAttempts int
	// BaseBackoff is the nominal delay before the first retry; it doubles with every
	// retry and is jittered (see Backoff). 0 retries at once unless the server asked for
	// a wait.
	BaseBackoff time.Duration
	// MaxBackoff caps the nominal delay; 0 means no cap.
	MaxBackoff time.Duration
	// RetryAfterCap is the longest Retry-After the client waits for. An answer asking for
	// a longer wait ends the call at once with that answer's error: the server said that
	// an earlier retry is refused, and waiting that long is the caller's decision, not
	// the client's. 0 means no limit but ctx (and ParseRetryAfter's bound).
	RetryAfterCap time.Duration
}

// Client sends the calls of one provider under one Policy. The provider supplies only what
// is its own: the request (headers, URL, body) through Request.Build, the decoding of its
// error bodies through Error, and the statuses it retries differently through Retryable.
// A Client is safe for concurrent use once its fields are set.
type Client struct {
	// Name prefixes every message of the transport and of the retry loop ("vercel").
	Name string
	// HTTP sends the requests; nil is http.DefaultClient.
	HTTP *http.Client
	// Policy decides retries.
	Policy Policy
	// Secrets are redacted from transport errors' text (a proxy may echo a header).
	Secrets []string
	// Error turns a non-2xx answer of the call named what ("GET /sandboxes") into the
	// error the call returns, keeping the provider's message and an errdefs kind. Do
	// closes the body after it. Required.
	Error func(resp *http.Response, what string) error
	// Retryable reports whether an error answer is worth another attempt, given its
	// status, whether the call is idempotent and the error Error made of it. nil is
	// RetryableStatus; a provider sets it to differ on a few statuses.
	Retryable func(status int, idempotent bool, err error) bool
}

// Request is one call.
type Request struct {
	// What names the call in messages, after the client's Name: "GET /v2/sandboxes".
	What string
	// Build returns a fresh request for each attempt, made with ctx and with a body that
	// reads from the start again (bytes.NewReader of the same slice, say): a request body
	// is consumed by the attempt that sends it.
	Build func(ctx context.Context) (*http.Request, error)
	// Idempotent calls are retried on 5xx answers and on any connection error. Every call
	// is retried on 429 (refused before anything happened) and on a failed dial (nothing
	// was sent); a call that is not idempotent is never sent twice otherwise, because the
	// first attempt may have had its effect.
	Idempotent bool
	// NoRetry makes the call one attempt whatever the policy (probes report, they do not
	// insist).
	NoRetry bool
}

// Do sends r, retrying as the policy and r allow, and returns the first 2xx response; the
// caller closes its body. Any other outcome is an error with an errdefs kind: the last
// answer's (as Client.Error made it) or the transport's (Unavailable); when ctx ends, the
// error wraps ctx's (Canceled or DeadlineExceeded) and names the last failure. Waits
// between attempts are exponential with jitter and at least the answer's Retry-After;
// they end early when ctx does. A Build error is returned as it is.
func (c *Client) Do(ctx context.Context, r Request) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	attempts := max(c.Policy.MaxAttempts, 1)
	if r.NoRetry {
		attempts = 1
	}
	backoff := Backoff{Base: c.Policy.BaseBackoff, Max: c.Policy.MaxBackoff}
	what := c.Name + ": " + r.What
	var lastErr error
	for attempt := 1; ; attempt++ {
		req, err := r.Build(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		var hint time.Duration
		if err != nil {
			lastErr = TransportError(ctx, what, err, c.Secrets...)
			if ctx.Err() != nil || !(r.Idempotent || NothingSent(err)) {
				return nil, lastErr
			}
		} else if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
			return resp, nil
		} else {
			lastErr = c.answerError(resp, r.What)
			if !c.retryable(resp.StatusCode, r.Idempotent, lastErr) {
				return nil, lastErr
			}
			if ra, ok := RetryAfter(resp.Header); ok {
				if c.Policy.RetryAfterCap > 0 && ra > c.Policy.RetryAfterCap {
					return nil, lastErr
				}
				hint = ra
			}
		}
		if attempt >= attempts {
			return nil, lastErr
		}
		if err := Sleep(ctx, backoff.Delay(attempt, hint)); err != nil {
			return nil, errdefs.Wrap(errdefs.Sentinel(errdefs.KindOf(err)),
				fmt.Errorf("%s: %w (last error: %v)", what, err, lastErr))
		}
	}
}

// answerError is Client.Error, after which the body is drained a little (so the
// connection can be reused) and closed.
func (c *Client) answerError(resp *http.Response, what string) error {
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxErrorBody))
		_ = resp.Body.Close()
	}()
	return c.Error(resp, what)
}

func (c *Client) retryable(status int, idempotent bool, err error) bool {
	if c.Retryable != nil {
		return c.Retryable(status, idempotent, err)
	}
	return RetryableStatus(status, idempotent)
}
