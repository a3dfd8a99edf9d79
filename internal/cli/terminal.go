package cli

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
)

func (a *app) shellCmd() *cobra.Command {
	var workdir string
	var env []string
	cmd := &cobra.Command{
		Use:   "shell ID [-- CMD ARGS...]",
		Short: "open an interactive terminal in a sandbox (default: sh)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := parseKV("--env", env)
			if err != nil {
				return codedError{ExitMoatError, err}
			}
			req := moat.ExecRequest{Cmd: args[1:], Env: e, Workdir: workdir, Stdin: a.stdin}
			return moatError(a.withSandbox(cmd.Context(), args[0], func(sb client.Handle) error {
				return a.runTerminal(cmd.Context(), sb, req)
			}))
		},
	}
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable K=V (repeatable)")
	return cmd
}

// runTerminal runs req on a terminal in the sandbox. When moat's own stdin is a terminal it
// is put in raw mode (restored on return) and window size changes (SIGWINCH) are passed on.
func (a *app) runTerminal(ctx context.Context, sb client.Handle, req moat.ExecRequest) error {
	treq := moat.TerminalRequest{Cmd: req.Cmd, Env: req.Env, Workdir: req.Workdir, Stdin: req.Stdin, Stdout: a.stdout}
	if req.Shell != "" {
		treq.Cmd = []string{"sh", "-c", req.Shell}
	}
	if treq.Stdin == nil {
		treq.Stdin = eofReader{}
	}
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			treq.Size = moat.WinSize{Rows: uint16(h), Cols: uint16(w)}
		}
		state, err := term.MakeRaw(fd)
		if err != nil {
			return codedError{ExitMoatError, errdefs.Newf(errdefs.ErrFailedPrecondition, "terminal: raw mode: %v", err)}
		}
		defer term.Restore(fd, state)
		resize := make(chan moat.WinSize, 1)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case resize <- moat.WinSize{Rows: uint16(h), Cols: uint16(w)}:
					default: // a newer size follows; never block the signal loop
					}
				}
			}
		}()
		treq.Resize = resize
	}
	res, err := sb.Terminal(ctx, treq)
	if err != nil {
		return codedError{ExitMoatError, err}
	}
	if res.ExitCode != 0 {
		return exitError{code: res.ExitCode}
	}
	return nil
}

// eofReader is stdin for a terminal without -i: the command sees end of input at once.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
