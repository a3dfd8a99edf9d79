package moat

import (
	"context"
	"time"

	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// WinSize is a terminal's size in character cells.
type WinSize = moattype.WinSize

// TerminalRequest is an interactive command on a pseudo-terminal (moattype.TerminalRequest).
type TerminalRequest = moattype.TerminalRequest

// Terminal runs req on a pseudo-terminal in the sandbox and waits for it. Backends without
// terminals (no backend.PTYExecer) return an Unsupported error. As with Exec, a non-zero
// exit is not an error.
func (s *Sandbox) Terminal(ctx context.Context, req TerminalRequest) (ExitResult, error) {
	cmd := req.Cmd
	if len(cmd) == 0 {
		cmd = []string{"sh"}
	}
	argv, err := argvOf(&ExecRequest{Cmd: cmd})
	if err != nil {
		return ExitResult{}, err
	}
	if req.Stdout == nil {
		return ExitResult{}, errdefs.InvalidArgumentf("moat: terminal: no output writer")
	}
	env, wd, err := s.envAndWorkdir("terminal", req.Env, req.Workdir)
	if err != nil {
		return ExitResult{}, err
	}
	if err := checkArgSize(argv, env); err != nil {
		return ExitResult{}, err
	}
	size := req.Size
	if size.Rows == 0 || size.Cols == 0 {
		size = WinSize{Rows: 24, Cols: 80}
	}
	inst, err := s.usable(ctx)
	if err != nil {
		return ExitResult{}, err
	}
	pe, ok := inst.(backend.PTYExecer)
	if !ok {
		return ExitResult{}, errdefs.Unsupportedf("moat: backend %s has no terminals", s.backend)
	}
	start := time.Now()
	code, err := pe.ExecPTY(ctx, &backend.ExecRequest{
		Argv: argv, Env: env, Workdir: wd, Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stdout,
	}, size, req.Resize)
	res := ExitResult{ExitCode: code, Duration: time.Since(start)}
	s.m.touch(s.id)
	if err != nil {
		if ctx.Err() != nil && errdefs.KindOf(err) == errdefs.KindUnknown {
			err = errdefs.Wrap(ctx.Err(), err)
		}
		return res, s.checkGone(ctx, inst, err)
	}
	return res, nil
}
