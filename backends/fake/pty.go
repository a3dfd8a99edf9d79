package fake

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// ExecPTY implements backend.PTYExecer with a terminal double, not a shell: whatever argv
// says, it prints "argv <argv> size RxC", then a "$ " prompt after each thing it prints;
// it echoes each input line (ended by Enter's carriage return or a newline) as "> line",
// reports each resize as "size RxC" on a line of its own, and exits with N on a line
// "exit N" (0 at the end of input). On cancellation it returns 137 and ctx's error.
func (i *Instance) ExecPTY(ctx context.Context, req *backend.ExecRequest, size backend.WinSize, resize <-chan backend.WinSize) (int, error) {
	if err := i.b.enter(ctx, OpExecPTY); err != nil {
		return 0, err
	}
	if _, err := i.running(); err != nil {
		return 0, err
	}
	if req.Stdout != req.Stderr {
		return 0, errdefs.InvalidArgumentf("fake: terminal: stdout and stderr are different writers")
	}
	var mu sync.Mutex
	out := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(req.Stdout, format, args...)
	}
	out("argv %s size %dx%d\r\n$ ", strings.Join(req.Argv, " "), size.Rows, size.Cols)
	lines := make(chan string)
	go func() {
		defer close(lines)
		if req.Stdin == nil {
			return
		}
		sc := bufio.NewScanner(req.Stdin)
		sc.Split(scanLine)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return 137, ctx.Err()
		case sz, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			out("\r\nsize %dx%d\r\n$ ", sz.Rows, sz.Cols)
		case l, ok := <-lines:
			if !ok {
				return 0, i.b.leave(ctx, OpExecPTY)
			}
			var code int
			if _, err := fmt.Sscanf(l, "exit %d", &code); err == nil {
				return code, i.b.leave(ctx, OpExecPTY)
			}
			out("\r\n> %s\r\n$ ", l)
		}
	}
}

// scanLine splits terminal input at the carriage return Enter sends, or at a newline.
func scanLine(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

var _ backend.PTYExecer = (*Instance)(nil)
