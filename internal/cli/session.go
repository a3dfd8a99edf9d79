package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/config"
	"github.com/moatsh/moat/moattype"
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

// sessionCmd manages session settings (stored, so they survive restarts): every sandbox
// created with --session starts from them.
func (a *app) sessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "per-session settings: backend, image, limits, network, env, labels, mode",
	}
	var output string
	get := a.apiCmd("get SESSION", "print SESSION's settings", 1,
		func(ctx context.Context, api client.API, args []string) error {
			s, err := api.Session(ctx, args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return a.printJSON(s)
			}
			a.printSession(s)
			return nil
		})
	get.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	var lsOutput string
	ls := a.apiCmd("ls", "list sessions that have settings", 0,
		func(ctx context.Context, api client.API, _ []string) error {
			list, err := api.Sessions(ctx)
			if err != nil {
				return err
			}
			if lsOutput == "json" {
				if list == nil {
					list = []moattype.Session{}
				}
				return a.printJSON(list)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tBACKEND\tMODE\tIMAGE\tMEMORY\tCPUS\tPIDS\tNETWORK")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strconv.Quote(s.ID), dash(s.Backend), s.Mode, dash(s.Image),
					dash(bytesText(s.Limits.MemoryBytes)), dash(numText(s.Limits.CPUs)), dash(numText(float64(s.Limits.PIDs))), dash(string(s.Network)))
			}
			return tw.Flush()
		})
	ls.Flags().StringVarP(&lsOutput, "output", "o", "", "output format: json")
	cmd.AddCommand(
		a.sessionSetCmd(), get, ls,
		a.apiCmd("clear SESSION", "remove all of SESSION's settings (its sandboxes stay; moat rm --session destroys them)", 1,
			func(ctx context.Context, api client.API, args []string) error {
				return api.DeleteSession(ctx, args[0])
			}),
	)
	return cmd
}

// sessionSetCmd changes the settings its flags name and keeps the others (with --replace,
// the flags are the whole new settings).
func (a *app) sessionSetCmd() *cobra.Command {
	var (
		backend, image, memory, disk, network, mode string
		cpus                                        float64
		pids                                        int64
		env, labels, unsetEnv, unsetLabels          []string
		replace                                     bool
	)
	cmd := &cobra.Command{
		Use:   "set SESSION [BACKEND] [flags]",
		Short: "set SESSION's settings: the flags given change, the rest stay (every new sandbox of SESSION starts from them)",
		Long: `Set SESSION's settings. Every sandbox created with --session SESSION starts from them:
what its own flags or spec set wins, the session's settings come next, then moat.toml's [sandbox].
Only the flags given change; an empty value ("--image ''", "--memory 0") clears one.
A second argument is the backend (as --backend). --mode host runs the session's sandboxes
unsandboxed on the restricted host backend and needs [sandbox] allow_unisolated = true.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if len(args) == 2 {
				if fl.Changed("backend") && backend != args[1] {
					return errdefs.InvalidArgumentf("session set: backend given twice (%q and --backend %q)", args[1], backend)
				}
				backend = args[1]
				_ = fl.Set("backend", backend)
			}
			var p moattype.SessionPatch
			str := func(name string, v string) *string {
				if fl.Changed(name) {
					return &v
				}
				return nil
			}
			p.Backend, p.Image = str("backend", backend), str("image", image)
			if fl.Changed("network") {
				n := moattype.NetworkMode(network)
				p.Network = &n
			}
			if fl.Changed("mode") {
				md := moattype.SessionMode(mode)
				p.Mode = &md
			}
			var lp moattype.LimitsPatch
			limits := false
			for _, b := range []struct {
				flag string
				v    string
				dst  **int64
			}{{"memory", memory, &lp.MemoryBytes}, {"disk", disk, &lp.DiskBytes}} {
				if !fl.Changed(b.flag) {
					continue
				}
				var n int64
				if b.v != "" && b.v != "0" {
					var err error
					if n, err = config.ParseBytes(b.v); err != nil {
						return errdefs.InvalidArgumentf("--%s: %v", b.flag, err)
					}
				}
				*b.dst, limits = &n, true
			}
			if fl.Changed("cpus") {
				lp.CPUs, limits = &cpus, true
			}
			if fl.Changed("pids") {
				lp.PIDs, limits = &pids, true
			}
			if limits {
				p.Limits = &lp
			}
			var err error
			if p.Env, err = patchKV("--env", env, unsetEnv); err != nil {
				return err
			}
			if p.Labels, err = patchKV("--label", labels, unsetLabels); err != nil {
				return err
			}
			api, done, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			var s moattype.Session
			if replace {
				s, err = api.PutSession(cmd.Context(), p.Apply(moattype.Session{ID: args[0]}))
			} else {
				s, err = api.PatchSession(cmd.Context(), args[0], p)
			}
			if err != nil {
				return err
			}
			a.printSession(s)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&backend, "backend", "", "backend of the session's sandboxes (auto or empty: the configured default)")
	fl.StringVar(&image, "image", "", "image, template or rootfs of the session's sandboxes")
	fl.StringVar(&memory, "memory", "", "memory limit, e.g. 512m (0: none)")
	fl.StringVar(&disk, "disk", "", "disk limit, e.g. 10g (0: none)")
	fl.Float64Var(&cpus, "cpus", 0, "CPU limit, e.g. 1.5 (0: none)")
	fl.Int64Var(&pids, "pids", 0, "process count limit (0: none)")
	fl.StringVar(&network, "network", "", "network: none or host (host needs [network] allow_outbound)")
	fl.StringArrayVarP(&env, "env", "e", nil, "environment variable K=V (repeatable)")
	fl.StringArrayVar(&unsetEnv, "unset-env", nil, "remove environment variable K (repeatable)")
	fl.StringArrayVarP(&labels, "label", "l", nil, "label K=V (repeatable)")
	fl.StringArrayVar(&unsetLabels, "unset-label", nil, "remove label K (repeatable)")
	fl.StringVar(&mode, "mode", "", "isolated (default) or host (unsandboxed; needs [sandbox] allow_unisolated)")
	fl.BoolVar(&replace, "replace", false, "replace all of the session's settings with the flags given")
	return cmd
}

// patchKV turns K=V flags and K removals into a patch map.
func patchKV(flag string, set, unset []string) (map[string]*string, error) {
	kv, err := parseKV(flag, set)
	if err != nil {
		return nil, err
	}
	if len(kv) == 0 && len(unset) == 0 {
		return nil, nil
	}
	out := make(map[string]*string, len(kv)+len(unset))
	for _, k := range unset {
		out[k] = nil
	}
	for k, v := range kv {
		out[k] = &v
	}
	return out, nil
}

// printSession prints s as "key: value" lines.
func (a *app) printSession(s moattype.Session) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 1, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	line("session", strconv.Quote(s.ID))
	line("backend", dash(s.Backend))
	line("mode", string(s.Mode))
	line("image", dash(s.Image))
	line("memory", dash(bytesText(s.Limits.MemoryBytes)))
	line("cpus", dash(numText(s.Limits.CPUs)))
	line("pids", dash(numText(float64(s.Limits.PIDs))))
	line("disk", dash(bytesText(s.Limits.DiskBytes)))
	line("network", dash(string(s.Network)))
	line("env", dash(kvText(s.Env)))
	line("labels", dash(kvText(s.Labels)))
	_ = tw.Flush()
}

func bytesText(n int64) string {
	switch {
	case n == 0:
		return ""
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "g"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "m"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}

func numText(f float64) string {
	if f == 0 {
		return ""
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func kvText(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, " ")
}
