package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// toExec turns a wire request into a library request (stdin from the body).
func toExec(req apitype.ExecRequest) (moat.ExecRequest, error) {
	if req.TimeoutMS < 0 {
		return moat.ExecRequest{}, errdefs.InvalidArgumentf("httpapi: negative timeout_ms")
	}
	if req.TimeoutMS > int64(math.MaxInt64/time.Millisecond) {
		// Converted, it would wrap around to a short or negative timeout.
		return moat.ExecRequest{}, errdefs.InvalidArgumentf("httpapi: timeout_ms %d is too large", req.TimeoutMS)
	}
	if req.MaxOutputBytes < 0 {
		return moat.ExecRequest{}, errdefs.InvalidArgumentf("httpapi: negative max_output_bytes")
	}
	out := moat.ExecRequest{
		Cmd: req.Cmd, Shell: req.Shell, Env: req.Env, Workdir: req.Workdir,
		Timeout: time.Duration(req.TimeoutMS) * time.Millisecond, MaxOutputBytes: req.MaxOutputBytes,
	}
	if req.Stdin != "" || req.StdinEncoding != "" {
		b, err := apitype.DecodeBytes(req.Stdin, req.StdinEncoding)
		if err != nil {
			return out, err
		}
		out.Stdin = bytes.NewReader(b)
	}
	return out, nil
}

// wantsNDJSON reports whether the client asked for a stream of events.
func wantsNDJSON(r *http.Request) bool {
	for _, a := range r.Header.Values("Accept") {
		for _, part := range strings.Split(a, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), apitype.MediaNDJSON) {
				return true
			}
		}
	}
	return false
}

// exec runs a command: buffered JSON by default, NDJSON events with Accept:
// application/x-ndjson. The command is killed when the client goes away.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	var wreq apitype.ExecRequest
	if err := decodeJSON(r, w, s.opts.MaxJSONBytes, &wreq); err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := toExec(wreq)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if wantsNDJSON(r) {
		s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
			s.execStream(ctx, w, r, sb, req)
			return nil
		})
		return
	}
	if req.MaxOutputBytes == 0 || req.MaxOutputBytes > s.opts.MaxExecOutput {
		req.MaxOutputBytes = min(s.opts.MaxExecOutput, max(req.MaxOutputBytes, moat.DefaultMaxOutput))
	}
	sandboxJSON(s, w, r, http.StatusOK, func(ctx context.Context, sb *moat.Sandbox) (apitype.ExecResponse, error) {
		res, err := sb.Exec(ctx, req)
		s.metrics.observeExec(sb.Backend(), "json", res.Duration, err)
		out := apitype.ExecResponse{
			ExitCode: res.ExitCode, StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated,
			Truncated: res.StdoutTruncated || res.StderrTruncated, DurationMS: res.Duration.Milliseconds(),
			OOMKilled: res.OOMKilled,
		}
		out.Stdout, out.StdoutEncoding = apitype.EncodeBytes(res.Stdout)
		out.Stderr, out.StderrEncoding = apitype.EncodeBytes(res.Stderr)
		return out, err
	})
}

// eventSink serializes events to one destination (an NDJSON body or a WebSocket).
type eventSink struct {
	mu   sync.Mutex
	send func(ev *apitype.Event) error
	sent bool // an event went out (for NDJSON: the 200 header is written)
	err  error
}

func (e *eventSink) emit(ev *apitype.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	e.sent = true
	e.err = e.send(ev)
	return e.err
}

func (e *eventSink) wasSent() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sent
}

// streamWriter turns writes into stdout/stderr events. Text that is not UTF-8 goes as
// base64 (moat's cap writer keeps characters whole across chunks).
type streamWriter struct {
	sink *eventSink
	typ  string
}

func (w streamWriter) Write(p []byte) (int, error) {
	data, enc := apitype.EncodeBytes(p)
	if err := w.sink.emit(&apitype.Event{Type: w.typ, Data: data, Encoding: enc}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func exitEvent(res moat.ExitResult) *apitype.Event {
	code := res.ExitCode
	return &apitype.Event{Type: apitype.EventExit, ExitCode: &code, StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated, OOMKilled: res.OOMKilled, DurationMS: res.Duration.Milliseconds()}
}

func errorEvent(err error) *apitype.Event {
	return &apitype.Event{Type: apitype.EventError, Error: ptr(apitype.NewErrorBody(errdefs.KindOf(err), err))}
}

func (s *Server) execStream(ctx context.Context, w http.ResponseWriter, r *http.Request, sb *moat.Sandbox, req moat.ExecRequest) {
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	sink := &eventSink{send: func(ev *apitype.Event) error {
		if !headerSent(w) {
			w.Header().Set("Content-Type", apitype.MediaNDJSON)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusOK)
		}
		if err := enc.Encode(ev); err != nil {
			return err
		}
		return rc.Flush()
	}}
	req.Stdout = streamWriter{sink, apitype.EventStdout}
	req.Stderr = streamWriter{sink, apitype.EventStderr}
	res, err := sb.Exec(ctx, req)
	s.metrics.observeExec(sb.Backend(), "ndjson", res.Duration, err)
	if err != nil && !sink.wasSent() {
		// Nothing streamed yet: answer with the error's own status.
		s.writeError(w, r, err)
		return
	}
	if err != nil {
		_ = sink.emit(errorEvent(err))
		return
	}
	_ = sink.emit(exitEvent(res))
}

func headerSent(w http.ResponseWriter) bool {
	if sw, ok := w.(*statusWriter); ok {
		return sw.wroteHeader
	}
	return false
}

// wsConn is a WebSocket with its read loop: text messages are decoded as events and handed
// to onEvent, binary messages go to onBinary. When the client goes away (a read fails) the
// op context is canceled, so the command is killed.
type wsConn struct {
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// acceptSandboxWS looks up the sandbox {id} (a missing one is answered over HTTP, with its
// status), then upgrades r with acceptWS. It reports false when the request is answered.
func (s *Server) acceptSandboxWS(w http.ResponseWriter, r *http.Request, first any) (*moat.Sandbox, *wsConn, bool) {
	sb, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return nil, nil, false
	}
	wc, err := s.acceptWS(w, r, first)
	if err != nil {
		return nil, nil, false
	}
	return sb, wc, true
}

// acceptWS upgrades r and reads the first message, a JSON request, into first.
func (s *Server) acceptWS(w http.ResponseWriter, r *http.Request, first any) (*wsConn, error) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.opts.AllowedOrigins, Subprotocols: []string{WebSocketProtocol}})
	if err != nil {
		return nil, err // Accept answered the client
	}
	c.SetReadLimit(s.opts.MaxJSONBytes)
	ctx, cancel := s.opContext(context.WithoutCancel(r.Context()))
	wc := &wsConn{c: c, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	typ, msg, err := c.Read(rctx)
	if err != nil {
		cancel()
		c.CloseNow()
		return nil, err
	}
	if typ != websocket.MessageText {
		err = errdefs.InvalidArgumentf("httpapi: first message must be a JSON request")
	} else {
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(first); derr != nil {
			err = errdefs.InvalidArgumentf("httpapi: invalid JSON request: %v", derr)
		}
	}
	if err != nil {
		wc.fail(err)
		return nil, err
	}
	return wc, nil
}

// readLoop runs until the connection fails or closes, then cancels the op context.
func (wc *wsConn) readLoop(onEvent func(*apitype.Event) error, onBinary func([]byte) error) {
	defer close(wc.done)
	defer wc.cancel()
	for {
		typ, msg, err := wc.c.Read(wc.ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			err = onBinary(msg)
		} else {
			var ev apitype.Event
			if jerr := json.Unmarshal(msg, &ev); jerr != nil {
				err = errdefs.InvalidArgumentf("httpapi: invalid event: %v", jerr)
			} else {
				err = onEvent(&ev)
			}
		}
		if err != nil && !errors.Is(err, errInputDone) {
			_ = wc.send(errorEvent(err))
			wc.c.Close(websocket.StatusPolicyViolation, "bad input")
			return
		}
	}
}

// errInputDone is returned by handlers for input that arrives after the input was closed;
// it is dropped.
var errInputDone = errors.New("input closed")

// inputEvent applies an input event of either WebSocket route: a stdin chunk or eof.
func inputEvent(stdin *bufPipe, ev *apitype.Event) error {
	switch ev.Type {
	case apitype.EventStdin:
		b, err := apitype.DecodeBytes(ev.Data, ev.Encoding)
		if err != nil {
			return err
		}
		return stdin.input(b)
	case apitype.EventEOF:
		stdin.CloseWrite(nil)
		return nil
	}
	return errdefs.InvalidArgumentf("httpapi: unexpected event %q", ev.Type)
}

func (wc *wsConn) send(ev *apitype.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(wc.ctx, 30*time.Second)
	defer cancel()
	return wc.c.Write(ctx, websocket.MessageText, b)
}

// fail sends an error event and closes.
func (wc *wsConn) fail(err error) {
	_ = wc.send(errorEvent(err))
	wc.c.Close(websocket.StatusNormalClosure, "")
	wc.cancel()
}

// finishRun finishes with the run's exit event, or its error event.
func (wc *wsConn) finishRun(res moat.ExitResult, err error) {
	if err != nil {
		wc.finish(errorEvent(err))
		return
	}
	wc.finish(exitEvent(res))
}

// finish sends the last event, closes the connection and waits for the read loop.
func (wc *wsConn) finish(ev *apitype.Event) {
	_ = wc.send(ev)
	// A close handshake with a client that has stopped reading would wait; bound it.
	go func() {
		select {
		case <-wc.done:
		case <-time.After(5 * time.Second):
			wc.c.CloseNow()
		}
	}()
	wc.c.Close(websocket.StatusNormalClosure, "")
	wc.cancel()
	<-wc.done
}

// execWS runs a command over a WebSocket: the first message is an apitype.ExecRequest;
// then the client sends stdin (binary messages or stdin events) and an eof event; the server
// sends stdout/stderr events and ends with exit or error.
func (s *Server) execWS(w http.ResponseWriter, r *http.Request) {
	var wreq apitype.ExecRequest
	sb, wc, ok := s.acceptSandboxWS(w, r, &wreq)
	if !ok {
		return
	}
	req, err := toExec(wreq)
	if err == nil && req.Stdin != nil {
		err = errdefs.InvalidArgumentf("httpapi: exec websocket streams stdin: do not set \"stdin\"")
	}
	if err != nil {
		wc.fail(err)
		return
	}
	stdin := newBufPipe(1 << 20)
	defer stdin.CloseRead()
	go wc.readLoop(func(ev *apitype.Event) error { return inputEvent(stdin, ev) }, stdin.input)
	sink := &eventSink{send: wc.send}
	req.Stdin = stdin
	req.Stdout = streamWriter{sink, apitype.EventStdout}
	req.Stderr = streamWriter{sink, apitype.EventStderr}
	res, err := sb.Exec(wc.ctx, req)
	stdin.CloseRead()
	s.metrics.observeExec(sb.Backend(), "websocket", res.Duration, err)
	wc.finishRun(res, err)
}

func ptr[T any](v T) *T { return &v }
