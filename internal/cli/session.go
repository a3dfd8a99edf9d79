package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat/client"
)

// apiCmd builds a command that runs fn with the API open (embedded, without reconciling,
// or remote).
func (a *app) apiCmd(use, short string, nargs int, fn func(ctx context.Context, api client.API, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(nargs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAPI(cmd.Context(), func(api client.API) error { return fn(cmd.Context(), api, args) })
		},
	}
}

// sessionCmd manages per-session backend overrides (stored, so they survive restarts).
func (a *app) sessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "per-session backend overrides",
	}
	cmd.AddCommand(
		a.apiCmd("set SESSION BACKEND", "make sandboxes of SESSION use BACKEND unless their spec names one", 2,
			func(ctx context.Context, api client.API, args []string) error {
				return api.SetSessionBackend(ctx, args[0], args[1])
			}),
		a.apiCmd("get SESSION", "print SESSION's backend override", 1,
			func(ctx context.Context, api client.API, args []string) error {
				b, err := api.SessionBackend(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, b)
				return nil
			}),
		a.apiCmd("clear SESSION", "remove SESSION's backend override", 1,
			func(ctx context.Context, api client.API, args []string) error {
				return api.ClearSessionBackend(ctx, args[0])
			}),
	)
	return cmd
}
