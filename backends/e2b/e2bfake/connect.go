package e2bfake

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// Server side of the Connect protocol with the JSON codec, as connect-go (which envd uses)
// speaks it. Written independently of the client in package e2b so one cannot hide the
// other's mistakes.

// rpcError is a Connect error: a code name and a message.
type rpcError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return e.Code + ": " + e.Message }

func rpcErr(code, format string, args ...any) *rpcError {
	return &rpcError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// connectHTTPStatus is Connect's code → HTTP status table for unary errors.
var connectHTTPStatus = map[string]int{
	"canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
	"not_found": 404, "already_exists": 409, "permission_denied": 403, "resource_exhausted": 429,
	"failed_precondition": 400, "aborted": 409, "out_of_range": 400, "unimplemented": 501,
	"internal": 500, "unavailable": 503, "data_loss": 500, "unauthenticated": 401,
}

// writeUnaryError answers a unary call with a Connect error.
func writeUnaryError(w http.ResponseWriter, e *rpcError) {
	status, ok := connectHTTPStatus[e.Code]
	if !ok {
		status = 500
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

func writeUnary(w http.ResponseWriter, msg any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(msg)
}

// readEnvelope reads one enveloped message of a streaming request.
func readEnvelope(r io.Reader, max uint32) (flags byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > max {
		return 0, nil, fmt.Errorf("message of %d bytes exceeds %d", n, max)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// streamSender writes enveloped messages of a server stream. It is safe for concurrent use
// and turns into a sink once the handler returned or the client went away, because envd
// keeps a process running after its stream is gone.
type streamSender struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	dead bool
}

func newStreamSender(w http.ResponseWriter) *streamSender {
	w.Header().Set("Content-Type", "application/connect+json")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	return &streamSender{w: w}
}

func (s *streamSender) send(flags byte, msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	frame := make([]byte, 5+len(b))
	frame[0] = flags
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(b)))
	copy(frame[5:], b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return io.ErrClosedPipe
	}
	if _, err := s.w.Write(frame); err != nil {
		s.dead = true
		return err
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// message sends one stream message.
func (s *streamSender) message(msg any) error { return s.send(0, msg) }

// end sends the end-of-stream message, with e when the stream failed.
func (s *streamSender) end(e *rpcError) error {
	body := map[string]any{}
	if e != nil {
		body["error"] = e
	}
	return s.send(0x02, body)
}

// close makes the sender a sink: the handler is returning.
func (s *streamSender) close() {
	s.mu.Lock()
	s.dead = true
	s.mu.Unlock()
}
