package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// terminal runs an interactive command on a pseudo-terminal over a WebSocket: the first
// message is an apitype.TerminalRequest; then binary messages are keystrokes and text
// messages are resize or eof events. The server sends the terminal's output as binary
// messages and ends with an exit or error event.
func (s *Server) terminal(w http.ResponseWriter, r *http.Request) {
	var treq apitype.TerminalRequest
	sb, wc, ok := s.acceptSandboxWS(w, r, &treq)
	if !ok {
		return
	}
	stdin := newBufPipe(1 << 20)
	defer stdin.CloseRead()
	resize := make(chan moat.WinSize, 8)
	go func() {
		wc.readLoop(func(ev *apitype.Event) error {
			switch ev.Type {
			case apitype.EventResize:
				if ev.Rows == 0 || ev.Cols == 0 {
					return errdefs.InvalidArgumentf("httpapi: resize needs rows and cols")
				}
				select {
				case resize <- moat.WinSize{Rows: ev.Rows, Cols: ev.Cols}:
				default: // the backend is behind; a later resize will follow
				}
			default:
				return inputEvent(stdin, ev)
			}
			return nil
		}, stdin.input)
		close(resize)
	}()
	out := &wsBinaryWriter{wc: wc}
	res, err := sb.Terminal(wc.ctx, moat.TerminalRequest{
		Cmd: treq.Cmd, Env: treq.Env, Workdir: treq.Workdir, Stdin: stdin, Stdout: out,
		Size: moat.WinSize{Rows: treq.Rows, Cols: treq.Cols}, Resize: resize,
	})
	stdin.CloseRead()
	s.metrics.observeExec(sb.Backend(), "terminal", res.Duration, err)
	wc.finishRun(res, err)
}

// wsBinaryWriter sends each write as one binary message.
type wsBinaryWriter struct {
	mu sync.Mutex
	wc *wsConn
}

func (w *wsBinaryWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.wc.ctx, 30*time.Second)
	defer cancel()
	if err := w.wc.c.Write(ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
