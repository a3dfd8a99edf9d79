package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
)

// sandboxCmd builds a command that runs fn on the sandbox named by the first argument.
func (a *app) sandboxCmd(use, short string, nargs int, fn func(ctx context.Context, sb client.Handle, args []string) error) *cobra.Command {
	return a.apiCmd(use, short, nargs, func(ctx context.Context, api client.API, args []string) error {
		sb, err := api.Get(ctx, args[0])
		if err != nil {
			return err
		}
		return fn(ctx, sb, args[1:])
	})
}

func (a *app) abilityCmds() []*cobra.Command {
	return []*cobra.Command{
		a.sandboxCmd("stop ID", "stop a sandbox, keeping its filesystem", 1, func(ctx context.Context, sb client.Handle, _ []string) error {
			return sb.Stop(ctx)
		}),
		a.sandboxCmd("start ID", "start a stopped sandbox", 1, func(ctx context.Context, sb client.Handle, _ []string) error {
			return sb.Start(ctx)
		}),
		a.sandboxCmd("pause ID", "freeze a sandbox's processes", 1, func(ctx context.Context, sb client.Handle, _ []string) error {
			return sb.Pause(ctx)
		}),
		a.sandboxCmd("resume ID", "thaw a paused sandbox", 1, func(ctx context.Context, sb client.Handle, _ []string) error {
			return sb.Resume(ctx)
		}),
		a.sandboxCmd("snapshot ID NAME", "save a sandbox's filesystem; prints the image to create from", 2, func(ctx context.Context, sb client.Handle, args []string) error {
			snap, err := sb.Snapshot(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, snap.Image)
			return nil
		}),
		a.sandboxCmd("port ID PORT", "expose a port of a sandbox; prints the URL that reaches it", 2, func(ctx context.Context, sb client.Handle, args []string) error {
			port, err := strconv.Atoi(args[0])
			if err != nil {
				return errdefs.InvalidArgumentf("port %q is not a number", args[0])
			}
			u, err := sb.ExposePort(ctx, port)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, u)
			return nil
		}),
	}
}
