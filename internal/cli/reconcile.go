package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat/errdefs"
)

// reconcileCmd is `moat reconcile`: the records-against-backends pass that moatd runs every
// minute, for installations without moatd. Other commands never run it.
func (a *app) reconcileCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "bring records and backends into agreement: re-attach, recreate, expire TTLs, remove orphans",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.serverURL() != "" {
				return errdefs.FailedPreconditionf("cli: moatd reconciles by itself every minute; run moat reconcile on the machine that owns the store, without --server")
			}
			m, err := a.openLocal(cmd.Context())
			if err != nil {
				return err
			}
			defer m.Close()
			rep, err := m.Reconcile(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return a.printJSON(rep)
			}
			if rep.Empty() {
				fmt.Fprintf(a.stdout, "nothing to do (%d sandboxes attached)\n", len(rep.Attached))
				return nil
			}
			fmt.Fprintln(a.stdout, rep.String())
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return cmd
}

// settingsCmd is `moat settings rotate-key`: backend settings saved through the API are
// encrypted at rest with keys in $MOAT_HOME/settings.key (or MOAT_SETTINGS_KEY_FILE).
func (a *app) settingsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "settings", Short: "backend settings kept in the store"}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate-key",
		Short: "re-encrypt the saved backend settings with a new key and drop the old one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.serverURL() != "" {
				return errdefs.FailedPreconditionf("cli: rotate the settings key on the machine that holds the key file, without --server")
			}
			m, err := a.openLocal(cmd.Context())
			if err != nil {
				return err
			}
			defer m.Close()
			if err := m.RotateSettingsKey(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "settings re-encrypted with a new key")
			return nil
		},
	})
	return cmd
}
