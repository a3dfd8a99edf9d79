package e2b

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// The Connect protocol (connectrpc.com, "connect" protocol, JSON codec), written by hand:
// envd serves it with connect-go and the official JS SDK speaks it with the JSON codec.
//
//   - unary: POST /<pkg.Service>/<Method>, Content-Type application/json, body = message;
//     200 with the answer message, or a non-200 status with {"code":"not_found","message":..}.
//   - server stream: Content-Type application/connect+json; the request body is one envelope
//     and the answer a sequence of envelopes (1 flag byte, 4-byte big-endian length, JSON);
//     flag 0x02 marks the end-of-stream message {"error":{...}?, "metadata":{...}?}. The HTTP
//     status is 200 even when the stream ends in error.

const (
	connectProtocolVersion = "1"
	flagCompressed         = 0x01
	flagEndStream          = 0x02
	maxEnvelope            = 64 << 20 // bound on one message, far above envd's 32 KiB chunks
)

// connectError is Connect's error object.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errdefs kinds for Connect codes (https://connectrpc.com/docs/protocol#error-codes).
func connectKind(code string) error {
	switch code {
	case "canceled":
		return errdefs.ErrCanceled
	case "invalid_argument", "out_of_range":
		return errdefs.ErrInvalidArgument
	case "deadline_exceeded":
		return errdefs.ErrDeadlineExceeded
	case "not_found":
		return errdefs.ErrNotFound
	case "already_exists":
		return errdefs.ErrAlreadyExists
	case "permission_denied":
		return errdefs.ErrPermissionDenied
	case "resource_exhausted":
		return errdefs.ErrResourceExhausted
	case "failed_precondition":
		return errdefs.ErrFailedPrecondition
	case "aborted":
		return errdefs.ErrConflict
	case "unimplemented":
		return errdefs.ErrUnsupported
	case "unavailable":
		return errdefs.ErrUnavailable
	case "unauthenticated":
		return errdefs.ErrUnauthenticated
	}
	return nil // unknown, internal, data_loss: no kind
}

func (ce *connectError) toError(what string) error {
	msg := fmt.Sprintf("e2b: %s: %s: %s", what, ce.Code, ce.Message)
	if k := connectKind(ce.Code); k != nil {
		return errdefs.New(k, msg)
	}
	return errors.New(msg)
}

// envelope frames one JSON message for a streaming request.
func envelope(flags byte, payload []byte) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:5], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

// streamReader reads the envelopes of a server-streaming answer.
type streamReader struct {
	body io.ReadCloser
	r    *bufio.Reader
	what string
	buf  []byte
}

func newStreamReader(body io.ReadCloser, what string) *streamReader {
	return &streamReader{body: body, r: bufio.NewReaderSize(body, 64<<10), what: what}
}

// next decodes the next message into v. It returns io.EOF after a clean end-of-stream, the
// stream's error when it ended with one, and io.ErrUnexpectedEOF when the body ended without
// an end-of-stream message (connection lost).
func (s *streamReader) next(v any) error {
	var hdr [5]byte
	if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxEnvelope {
		return errdefs.Unavailablef("e2b: %s: stream message of %d bytes exceeds the limit", s.what, n)
	}
	if cap(s.buf) < int(n) {
		s.buf = make([]byte, n)
	}
	s.buf = s.buf[:n]
	if _, err := io.ReadFull(s.r, s.buf); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if hdr[0]&flagCompressed != 0 {
		// We never offer compression (no Connect-Accept-Encoding), so this is a broken peer.
		return errdefs.Unavailablef("e2b: %s: compressed stream message not negotiated", s.what)
	}
	if hdr[0]&flagEndStream != 0 {
		var end struct {
			Error *connectError `json:"error"`
		}
		if err := json.Unmarshal(s.buf, &end); err != nil {
			return errdefs.Unavailablef("e2b: %s: bad end-of-stream message %q", s.what, restapi.Prefix(s.buf, quoteLen))
		}
		if end.Error != nil {
			return end.Error.toError(s.what)
		}
		return io.EOF
	}
	if err := json.Unmarshal(s.buf, v); err != nil {
		return errdefs.Unavailablef("e2b: %s: bad stream message %q: %v", s.what, restapi.Prefix(s.buf, quoteLen), err)
	}
	return nil
}

func (s *streamReader) Close() error { return s.body.Close() }

// readEnvdError turns a non-200 envd answer into an error. A Connect JSON error keeps its
// code; anything else (the edge proxy's JSON, an HTML page) maps by HTTP status. The proxy
// answers 502 when the sandbox does not exist (any more): that is errSandboxGone so callers
// can confirm with the control plane. Secrets are redacted from the quoted body.
func readEnvdError(resp *http.Response, what string, secrets ...string) error {
	b := readErrorBody(resp.Body, secrets)
	if resp.StatusCode == http.StatusBadGateway {
		return &goneError{msg: fmt.Sprintf("e2b: %s: 502 %s", what, providerMessage(b))}
	}
	ct := resp.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/json") {
		var ce connectError
		if err := json.Unmarshal(b, &ce); err == nil && ce.Code != "" && !isNumber(ce.Code) {
			return ce.toError(what)
		}
	}
	if len(bytes.TrimSpace(b)) > 0 && !json.Valid(b) && resp.StatusCode < 500 {
		return statusError(resp.StatusCode, fmt.Sprintf("e2b: %s: %d unexpected non-JSON response %q", what, resp.StatusCode, restapi.Prefix(b, quoteLen)))
	}
	return statusError(resp.StatusCode, fmt.Sprintf("e2b: %s: %d %s", what, resp.StatusCode, providerMessage(b)))
}

func isNumber(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// goneError is the edge proxy's "sandbox not found" (502). It is Unavailable until the
// control plane confirms the sandbox is gone.
type goneError struct{ msg string }

func (g *goneError) Error() string { return g.msg }
func (g *goneError) Unwrap() error { return errdefs.ErrUnavailable }
