package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// errTooLarge marks a body over its limit: 413, kind resource_exhausted.
var errTooLarge = errors.New("request body too large")

// writeError answers err as {"error":{"kind","message"}} with its kind's status. Errors
// without a kind are 500 with their message: moat's messages carry no secrets by rule.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	kind := errdefs.KindOf(err)
	status := errdefs.HTTPStatus(kind)
	var mbe *http.MaxBytesError
	if errors.Is(err, errTooLarge) || errors.As(err, &mbe) {
		status, kind = http.StatusRequestEntityTooLarge, errdefs.KindResourceExhausted
	}
	if status >= 500 && kind != errdefs.KindUnsupported && kind != errdefs.KindUnavailable && kind != errdefs.KindDeadlineExceeded {
		s.log.Error("request failed", "request_id", RequestID(r.Context()), "kind", kind, "err", err)
	}
	writeJSON(w, status, apitype.Error{Error: apitype.NewErrorBody(kind, err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// decodeJSON reads one JSON value from r's body into v: at most limit bytes, no unknown
// fields, nothing after it. The rest of the body is drained so the server notices a client
// that goes away (its request context is then canceled).
func decodeJSON(r *http.Request, w http.ResponseWriter, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		return errdefs.InvalidArgumentf("httpapi: content type %q: want application/json", ct)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("httpapi: body over %d bytes: %w", limit, errTooLarge)
		}
		if errors.Is(err, io.EOF) {
			return errdefs.InvalidArgumentf("httpapi: empty request body: want a JSON object")
		}
		return errdefs.InvalidArgumentf("httpapi: invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("httpapi: body over %d bytes: %w", limit, errTooLarge)
		}
		return errdefs.InvalidArgumentf("httpapi: invalid JSON body: data after the JSON value")
	}
	return nil
}
