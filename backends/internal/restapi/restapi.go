// Package restapi answers "how does a hosted-provider client handle the HTTP parts every
// provider shares?": one request loop with one retry policy (Client.Do with a Policy:
// attempts, idempotency, backoff with jitter, Retry-After and its cap, sleeping bounded by
// ctx), which answers are worth another attempt, the errdefs kind of an HTTP status, and
// quoting or redacting text that goes into error messages.
//
// It holds only the logic the provider clients (vercel, daytona, e2b, ...) have in common.
// Each provider keeps only its headers and URLs (Request.Build), its error-body shapes
// (Client.Error) and the few statuses it maps or retries differently (Client.Retryable).
package restapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat/errdefs"
)

// RetryAfterCap bounds what ParseRetryAfter returns. It only keeps absurd values (a huge
// delay-seconds, a date centuries ahead) from overflowing a time.Duration; each client's
// Policy.RetryAfterCap is the much smaller limit on top.
const RetryAfterCap = 24 * time.Hour

// ParseRetryAfter parses the value of a Retry-After header (RFC 9110 §10.2.3) relative to
// now: delay-seconds ("120"; a decimal fraction such as "1.5" is accepted too, as some
// servers send one) or an HTTP date. A date in the past is 0. ok is false for an empty,
// negative or unparsable value, which callers treat as "no hint". The result is at most
// RetryAfterCap.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDecimal(v) {
		// Digits too many for a float64 parse as +Inf with ErrRange: capped below.
		s, err := strconv.ParseFloat(v, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, false
		}
		if s >= RetryAfterCap.Seconds() {
			return RetryAfterCap, true
		}
		return time.Duration(s * float64(time.Second)), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), RetryAfterCap), true
}

// isDecimal reports whether s is digits with at most one '.' among them: what
// delay-seconds may look like. It keeps "-1", "NaN", "Inf" and "1e9" out of ParseFloat.
func isDecimal(s string) bool {
	digits, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// RetryAfter returns the Retry-After hint of an answer's headers, as ParseRetryAfter does
// at the current time.
func RetryAfter(h http.Header) (time.Duration, bool) {
	return ParseRetryAfter(h.Get("Retry-After"), time.Now())
}

// Backoff computes the delay before a retry: exponential from Base, capped at Max, with
// jitter. The zero value retries at once (unless the server asked for a wait).
type Backoff struct {
	// Base is the nominal delay before the first retry; it doubles with every attempt.
	Base time.Duration
	// Max caps the nominal delay; 0 means no cap.
	Max time.Duration
}

// randN returns a uniform value in [0, n); a variable so tests can pin the jitter.
var randN = rand.N[time.Duration]

// Delay returns how long to wait before retry number attempt (1 = the first retry) when
// the server hinted retryAfter (0 = no hint). The nominal delay Base·2^(attempt-1), capped
// at Max, is jittered uniformly over [nominal/2, nominal] so that clients failing together
// do not retry together; the result is never less than retryAfter, because retrying before
// the server said it is ready only earns another refusal.
func (b Backoff) Delay(attempt int, retryAfter time.Duration) time.Duration {
	return max(b.jitter(b.nominal(attempt)), retryAfter)
}

// nominal is Base·2^(attempt-1) capped at Max (or, without Max, at a value that cannot
// overflow), attempt counted from 1.
func (b Backoff) nominal(attempt int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	limit := b.Max
	if limit <= 0 {
		limit = time.Duration(1<<63-1) / 2
	}
	d := min(b.Base, limit)
	for i := 1; i < attempt && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return d
}

func (b Backoff) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + randN(d-d/2+1)
}

// Sleep waits for d or until ctx is done, whichever comes first. It returns ctx.Err() when
// ctx ended first (or had already ended), else nil; d <= 0 does not wait.
func Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RetryableStatus reports whether an answer with this status is worth another attempt. A
// 429 always is: the server refused before doing anything. A 5xx is only for idempotent
// calls, since the call may have had its effect before the server failed.
func RetryableStatus(status int, idempotent bool) bool {
	if status == http.StatusTooManyRequests {
		return true
	}
	return idempotent && status >= 500 && status <= 599
}

// NothingSent reports whether a transport error happened while dialing, before any byte of
// the request could reach the server: such a failure may be retried even for a call that
// is not idempotent.
func NothingSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// KindForStatus returns the errdefs sentinel for an error answer's status, or nil when the
// status has no kind of its own (1xx-3xx, unlisted 4xx), so the provider picks its default:
//
//	400, 422  InvalidArgument        408, 504  DeadlineExceeded
//	401       Unauthenticated        409       Conflict
//	403       PermissionDenied       413, 429  ResourceExhausted
//	404, 410  NotFound               other 5xx Unavailable
func KindForStatus(status int) error {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return errdefs.ErrInvalidArgument
	case http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case http.StatusNotFound, http.StatusGone:
		return errdefs.ErrNotFound
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return errdefs.ErrDeadlineExceeded
	case http.StatusConflict:
		return errdefs.ErrConflict
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return errdefs.ErrResourceExhausted
	}
	if status >= 500 && status <= 599 {
		return errdefs.ErrUnavailable
	}
	return nil
}

// MaxErrorBody bounds how much of an error answer is read: enough for any provider's JSON
// error, and a proxy's HTML page cannot make the client buffer megabytes.
const MaxErrorBody = 64 << 10

// ReadErrorBody reads at most MaxErrorBody bytes of an error answer's body. A read error
// just ends the body early: the status still tells what happened. It does not close r.
func ReadErrorBody(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, MaxErrorBody))
	return b
}

// Prefix returns at most n bytes of b, with surrounding white space trimmed, for quoting a
// body that is not what the client expected (an HTML error page, garbage) in a message.
// A cut ends on a rune boundary and is marked with "…". Callers quote it with %q.
func Prefix(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) <= n {
		return string(b)
	}
	// Move the cut back to the start of the rune it falls in (at most UTFMax-1 bytes, so
	// a body that is not UTF-8 at all is still quoted).
	cut := max(n, 0)
	for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(b[cut]); i++ {
		cut--
	}
	return string(b[:cut]) + "…"
}

// Redacted replaces a secret in text that came from elsewhere (a server echoing headers).
const Redacted = "[redacted]"

// Redact replaces every occurrence of each non-empty secret in s with Redacted.
func Redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, Redacted)
		}
	}
	return s
}

// TransportError describes a failed http.Client.Do of the call named by what ("e2b: GET
// /sandboxes/x"). When ctx has ended, that is the error: kind Canceled or DeadlineExceeded,
// with errors.Is(err, context.Canceled / DeadlineExceeded) holding, since the caller chose
// to stop. Otherwise the call is Unavailable with the transport's cause. The *url.Error's
// URL is left out: what names the call already, the cause names the address ("dial tcp
// 127.0.0.1:9: connect: connection refused"), and a query string only adds noise. Secrets
// are redacted from the cause's text in case a proxy or transport echoed them.
func TransportError(ctx context.Context, what string, err error, secrets ...string) error {
	if cerr := ctx.Err(); cerr != nil {
		return errdefs.Wrap(errdefs.Sentinel(errdefs.KindOf(cerr)), fmt.Errorf("%s: %w", what, cerr))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return errdefs.Unavailablef("%s: %s", what, Redact(err.Error(), secrets...))
}
