package host

import (
	"context"
	"fmt"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/ptyrun"
)

// ExecPTY implements backend.PTYExecer: the command runs as Exec runs it (same workdir
// inside the sandbox root, clean environment, PATH lookup, limits, tracked so Destroy
// kills it), but as the leader of a new session on a fresh pseudo-terminal.
func (i *Instance) ExecPTY(ctx context.Context, req *backend.ExecRequest, size backend.WinSize, resize <-chan backend.WinSize) (int, error) {
	p, err := i.prepare(ctx, req)
	if err != nil {
		return -1, err
	}
	defer p.done()
	code, err := ptyrun.Run(p.ctx, ptyrun.Cmd{
		Argv: req.Argv, Path: p.path, Dir: p.dir, Env: p.env,
		Stdin: req.Stdin, Stdout: req.Stdout, Group: i.sb.Group(), Size: size, Resize: resize,
	})
	if err != nil {
		return code, fmt.Errorf("host: %w", err)
	}
	return code, nil
}

var _ backend.PTYExecer = (*Instance)(nil)
