package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// sessionCmd manages per-session backend overrides (stored, so they survive restarts).
func (a *app) sessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "per-session backend overrides",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "set SESSION BACKEND",
		Short: "make sandboxes of SESSION use BACKEND unless their spec names one",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, done, err := a.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer done()
			return m.SetSessionBackend(cmd.Context(), args[0], args[1])
		},
	}, &cobra.Command{
		Use:   "get SESSION",
		Short: "print SESSION's backend override",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, done, err := a.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer done()
			b, err := m.SessionBackend(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, b)
			return nil
		},
	}, &cobra.Command{
		Use:   "clear SESSION",
		Short: "remove SESSION's backend override",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, done, err := a.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer done()
			return m.ClearSessionBackend(cmd.Context(), args[0])
		},
	})
	return cmd
}
