package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// Exec runs a command, like moattype.Sandbox.Exec: a non-zero exit is not an error. It picks the
// wire form from the request: with Stdin, a WebSocket (input is streamed); with Stdout or
// Stderr writers, an NDJSON stream (output arrives as it is produced); otherwise one JSON
// call. Canceling ctx kills the command on the server.
func (s *Sandbox) Exec(ctx context.Context, req moattype.ExecRequest) (moattype.ExitResult, error) {
	wreq, err := toWire(req)
	if err != nil {
		return moattype.ExitResult{}, err
	}
	switch {
	case req.Stdin != nil:
		return s.execWS(ctx, wreq, req)
	case req.Stdout != nil || req.Stderr != nil:
		return s.execStream(ctx, wreq, req)
	}
	var out apitype.ExecResponse
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.info.ID)+"/exec", nil, wreq, &out); err != nil {
		return moattype.ExitResult{}, err
	}
	res := moattype.ExitResult{ExitCode: out.ExitCode, StdoutTruncated: out.StdoutTruncated,
		StderrTruncated: out.StderrTruncated, OOMKilled: out.OOMKilled, Duration: time.Duration(out.DurationMS) * time.Millisecond}
	if res.Stdout, err = apitype.DecodeBytes(out.Stdout, out.StdoutEncoding); err != nil {
		return res, err
	}
	if res.Stderr, err = apitype.DecodeBytes(out.Stderr, out.StderrEncoding); err != nil {
		return res, err
	}
	return res, nil
}

func toWire(req moattype.ExecRequest) (apitype.ExecRequest, error) {
	if req.Timeout < 0 || req.MaxOutputBytes < 0 {
		return apitype.ExecRequest{}, errdefs.InvalidArgumentf("client: exec: negative timeout or output cap")
	}
	w := apitype.ExecRequest{Cmd: req.Cmd, Shell: req.Shell, Env: req.Env, Workdir: req.Workdir,
		MaxOutputBytes: req.MaxOutputBytes}
	if req.Timeout > 0 {
		w.TimeoutMS = max(1, req.Timeout.Milliseconds())
	}
	return w, nil
}

// outputs routes output events to the request's writers, or captures them (capped, as the
// manager does) when the request has none.
type outputs struct {
	stdout, stderr     io.Writer
	outBuf, errBuf     *capBuffer
	outTrunc, errTrunc bool
	writeErr           error
}

func newOutputs(req moattype.ExecRequest) *outputs {
	o := &outputs{stdout: req.Stdout, stderr: req.Stderr}
	capN := req.MaxOutputBytes
	if capN == 0 {
		capN = moattype.DefaultMaxOutput
	}
	if o.stdout == nil {
		o.outBuf = &capBuffer{max: capN}
		o.stdout = o.outBuf
	}
	if o.stderr == nil {
		o.errBuf = &capBuffer{max: capN}
		o.stderr = o.errBuf
	}
	return o
}

func (o *outputs) chunk(ev *apitype.Event) error {
	b, err := apitype.DecodeBytes(ev.Data, ev.Encoding)
	if err != nil {
		return err
	}
	w := o.stdout
	if ev.Type == apitype.EventStderr {
		w = o.stderr
	}
	if o.writeErr == nil {
		if _, err := w.Write(b); err != nil {
			o.writeErr = err
		}
	}
	return nil
}

func (o *outputs) result(ev *apitype.Event) (moattype.ExitResult, error) {
	res := moattype.ExitResult{StdoutTruncated: ev.StdoutTruncated, StderrTruncated: ev.StderrTruncated,
		OOMKilled: ev.OOMKilled, Duration: time.Duration(ev.DurationMS) * time.Millisecond}
	if ev.ExitCode != nil {
		res.ExitCode = *ev.ExitCode
	}
	if o.outBuf != nil {
		res.Stdout = o.outBuf.buf.Bytes()
		res.StdoutTruncated = res.StdoutTruncated || o.outBuf.truncated
	}
	if o.errBuf != nil {
		res.Stderr = o.errBuf.buf.Bytes()
		res.StderrTruncated = res.StderrTruncated || o.errBuf.truncated
	}
	if o.writeErr != nil {
		return res, fmt.Errorf("client: exec: writing output: %w", o.writeErr)
	}
	return res, nil
}

// capBuffer keeps at most max bytes, never ending inside a UTF-8 character that the data
// continued past the cap.
type capBuffer struct {
	buf       bytes.Buffer
	max       int64
	truncated bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if c.truncated {
		return n, nil
	}
	room := c.max - int64(c.buf.Len())
	if int64(len(p)) > room {
		cut := int(room)
		for cut > 0 && cut > int(room)-utf8.UTFMax && !utf8.RuneStart(p[cut]) {
			cut--
		}
		if !utf8.RuneStart(p[cut]) {
			cut = int(room)
		}
		p = p[:cut]
		c.truncated = true
	}
	c.buf.Write(p)
	return n, nil
}

func (s *Sandbox) execStream(ctx context.Context, wreq apitype.ExecRequest, req moattype.ExecRequest) (moattype.ExitResult, error) {
	out := newOutputs(req)
	// With MaxOutputBytes 0 the server streams without a cap (as the manager does for
	// writers) and a captured stream is capped here, at the manager's default.
	body, err := json.Marshal(wreq)
	if err != nil {
		return moattype.ExitResult{}, errdefs.InvalidArgumentf("client: encode request: %v", err)
	}
	resp, err := s.c.do(ctx, request{method: http.MethodPost, path: sandboxPath(s.info.ID) + "/exec",
		body: bytes.NewReader(body), contentType: "application/json", accept: apitype.MediaNDJSON})
	if err != nil {
		return moattype.ExitResult{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev apitype.Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return moattype.ExitResult{}, transportError(ctx, err)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return moattype.ExitResult{}, errdefs.Unavailablef("client: exec stream ended without an exit: %v", err)
		}
		switch ev.Type {
		case apitype.EventStdout, apitype.EventStderr:
			if err := out.chunk(&ev); err != nil {
				return moattype.ExitResult{}, err
			}
		case apitype.EventExit:
			return out.result(&ev)
		case apitype.EventError:
			res, _ := out.result(&ev)
			return res, eventError(ev.Error)
		}
	}
}

// wsURL turns an API path into a ws:// or wss:// URL.
func (c *Client) wsURL(p string) string {
	u := c.join(p)
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	return u.String()
}

// dialWS opens a WebSocket to path and sends first as its first message.
func (c *Client) dialWS(ctx context.Context, path string, first any) (*websocket.Conn, error) {
	h := http.Header{}
	c.header(h)
	conn, resp, err := websocket.Dial(ctx, c.wsURL(path), &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 {
			var body io.Reader = strings.NewReader("")
			if resp.Body != nil {
				body = resp.Body
				defer resp.Body.Close()
			}
			return nil, decodeError(resp.StatusCode, body)
		}
		return nil, transportError(ctx, err)
	}
	conn.SetReadLimit(16 << 20)
	b, err := json.Marshal(first)
	if err != nil {
		conn.CloseNow()
		return nil, errdefs.InvalidArgumentf("client: encode request: %v", err)
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		conn.CloseNow()
		return nil, transportError(ctx, err)
	}
	return conn, nil
}

// pumpStdin copies r to the WebSocket as binary messages, then sends eof. It returns when r
// ends or a write fails; a reader that never returns keeps it blocked in Read (io.Reader
// cannot be interrupted), which is why Exec does not wait for it.
func pumpStdin(ctx context.Context, conn *websocket.Conn, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := conn.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			b, _ := json.Marshal(apitype.Event{Type: apitype.EventEOF})
			_ = conn.Write(ctx, websocket.MessageText, b)
			return
		}
	}
}

func (s *Sandbox) execWS(ctx context.Context, wreq apitype.ExecRequest, req moattype.ExecRequest) (moattype.ExitResult, error) {
	conn, err := s.c.dialWS(ctx, sandboxPath(s.info.ID)+"/exec/ws", wreq)
	if err != nil {
		return moattype.ExitResult{}, err
	}
	defer conn.CloseNow()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go pumpStdin(wctx, conn, req.Stdin)
	out := newOutputs(req)
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return moattype.ExitResult{}, transportError(ctx, err)
			}
			return moattype.ExitResult{}, errdefs.Unavailablef("client: exec websocket ended without an exit: %v", err)
		}
		if typ != websocket.MessageText {
			continue
		}
		var ev apitype.Event
		if err := json.Unmarshal(msg, &ev); err != nil {
			return moattype.ExitResult{}, errdefs.Unavailablef("client: invalid event from server: %v", err)
		}
		switch ev.Type {
		case apitype.EventStdout, apitype.EventStderr:
			if err := out.chunk(&ev); err != nil {
				return moattype.ExitResult{}, err
			}
		case apitype.EventExit, apitype.EventError:
			conn.Close(websocket.StatusNormalClosure, "")
			res, rerr := out.result(&ev)
			if ev.Type == apitype.EventError {
				return res, eventError(ev.Error)
			}
			return res, rerr
		}
	}
}

// Terminal runs req on a pseudo-terminal in the sandbox over a WebSocket, like
// moattype.Sandbox.Terminal: keystrokes from req.Stdin, output to req.Stdout, sizes from
// req.Resize.
func (s *Sandbox) Terminal(ctx context.Context, req moattype.TerminalRequest) (moattype.ExitResult, error) {
	if req.Stdout == nil {
		return moattype.ExitResult{}, errdefs.InvalidArgumentf("client: terminal: no output writer")
	}
	conn, err := s.c.dialWS(ctx, sandboxPath(s.info.ID)+"/terminal", apitype.TerminalRequest{
		Cmd: req.Cmd, Env: req.Env, Workdir: req.Workdir, Rows: req.Size.Rows, Cols: req.Size.Cols,
	})
	if err != nil {
		return moattype.ExitResult{}, err
	}
	defer conn.CloseNow()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// websocket.Conn.Write is safe for concurrent use: keystrokes and resizes share it.
	if req.Stdin != nil {
		go pumpStdin(wctx, conn, req.Stdin)
	}
	if req.Resize != nil {
		go func() {
			for {
				select {
				case <-wctx.Done():
					return
				case sz, ok := <-req.Resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(apitype.Event{Type: apitype.EventResize, Rows: sz.Rows, Cols: sz.Cols})
					if conn.Write(wctx, websocket.MessageText, b) != nil {
						return
					}
				}
			}
		}()
	}
	var writeErr error
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return moattype.ExitResult{}, transportError(ctx, err)
			}
			return moattype.ExitResult{}, errdefs.Unavailablef("client: terminal websocket ended without an exit: %v", err)
		}
		if typ == websocket.MessageBinary {
			if writeErr == nil {
				_, writeErr = req.Stdout.Write(msg)
			}
			continue
		}
		var ev apitype.Event
		if err := json.Unmarshal(msg, &ev); err != nil {
			return moattype.ExitResult{}, errdefs.Unavailablef("client: invalid event from server: %v", err)
		}
		switch ev.Type {
		case apitype.EventExit:
			conn.Close(websocket.StatusNormalClosure, "")
			res := moattype.ExitResult{Duration: time.Duration(ev.DurationMS) * time.Millisecond}
			if ev.ExitCode != nil {
				res.ExitCode = *ev.ExitCode
			}
			if writeErr != nil {
				return res, fmt.Errorf("client: terminal: writing output: %w", writeErr)
			}
			return res, nil
		case apitype.EventError:
			conn.Close(websocket.StatusNormalClosure, "")
			return moattype.ExitResult{}, eventError(ev.Error)
		}
	}
}
