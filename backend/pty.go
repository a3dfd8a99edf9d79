package backend

import (
	"context"

	"github.com/moatsh/moat/moattype"
)

// WinSize is a terminal's size in character cells.
type WinSize = moattype.WinSize

// PTYExecer is an Instance that can run a command on a pseudo-terminal, for interactive
// shells (`moat shell`, the terminal WebSocket). req.Stdin carries the keystrokes and
// req.Stdout receives the terminal's output; req.Stderr is the same writer as req.Stdout
// (a terminal has one output stream) and backends must not write to both concurrently
// expecting separate streams. size is the initial size; every value received on resize
// changes it. resize may be nil. When req.Stdin reaches EOF the backend closes the
// terminal's input side (the shell sees EOF). Cancellation, exit codes and errors follow
// Instance.Exec.
type PTYExecer interface {
	ExecPTY(ctx context.Context, req *ExecRequest, size WinSize, resize <-chan WinSize) (int, error)
}
