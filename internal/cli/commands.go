package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/config"
)

// specFlags are the flags of create and run.
type specFlags struct {
	name, backend, image, memory, session, workdir, network, ttl string
	cpus                                                         float64
	pids                                                         int64
	env, labels                                                  []string
	recreate                                                     bool
}

func (f *specFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "sandbox name (unique among live sandboxes)")
	fl.StringVar(&f.backend, "backend", "", "backend name, or auto (default from config)")
	fl.StringVar(&f.image, "image", "", "image, template or rootfs (default: the backend's)")
	fl.StringVar(&f.memory, "memory", "", "memory limit, e.g. 512m")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit, e.g. 1.5")
	fl.Int64Var(&f.pids, "pids", 0, "process count limit")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable K=V (repeatable)")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "label K=V (repeatable)")
	fl.StringVar(&f.session, "session", "", "agent session id")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the sandbox")
	fl.StringVar(&f.network, "network", "", "network: none (default) or host")
	fl.StringVar(&f.ttl, "ttl", "", "destroy after this long, e.g. 1h")
	fl.BoolVar(&f.recreate, "recreate", false, "recreate from the spec if the backend loses the sandbox")
}

func (f *specFlags) spec() (moat.Spec, error) {
	s := moat.Spec{
		Name: f.name, Backend: f.backend, Image: f.image, SessionID: f.session, Workdir: f.workdir,
		Network: moat.NetworkMode(f.network), Recreate: f.recreate,
		Limits: moat.Limits{CPUs: f.cpus, PIDs: f.pids},
	}
	if f.memory != "" {
		n, err := config.ParseBytes(f.memory)
		if err != nil {
			return s, errdefs.InvalidArgumentf("--memory: %v", err)
		}
		s.Limits.MemoryBytes = n
	}
	if f.ttl != "" {
		d, err := time.ParseDuration(f.ttl)
		if err != nil {
			return s, errdefs.InvalidArgumentf("--ttl: %v", err)
		}
		s.TTL = moat.Duration(d)
	}
	var err error
	if s.Env, err = parseKV("--env", f.env); err != nil {
		return s, err
	}
	if s.Labels, err = parseKV("--label", f.labels); err != nil {
		return s, err
	}
	return s, nil
}

func parseKV(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, errdefs.InvalidArgumentf("%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

func (a *app) createCmd() *cobra.Command {
	var f specFlags
	cmd := &cobra.Command{
		Use:   "create [flags]",
		Short: "create a sandbox and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := f.spec()
			if err != nil {
				return err
			}
			return a.withAPI(cmd.Context(), func(api client.API) error {
				sb, err := api.Create(cmd.Context(), spec)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, sb.ID())
				return nil
			})
		},
	}
	f.register(cmd)
	return cmd
}

// execFlags are exec's own flags.
type execFlags struct {
	interactive bool
	tty         bool
	env         []string
	workdir     string
	shell       bool
	timeout     time.Duration
}

func (f *execFlags) register(cmd *cobra.Command, withWorkdir bool) {
	fl := cmd.Flags()
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "pass stdin to the command")
	fl.BoolVarP(&f.tty, "tty", "t", false, "run the command on a terminal (with -i: an interactive shell)")
	fl.BoolVar(&f.shell, "sh", false, "run the arguments as one shell command line (sh -c)")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill the command after this long")
	if withWorkdir {
		fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable K=V (repeatable)")
		fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory")
	}
}

func (a *app) execRequest(f *execFlags, args []string) (moat.ExecRequest, error) {
	req := moat.ExecRequest{Stdout: a.stdout, Stderr: a.stderr, Workdir: f.workdir, Timeout: f.timeout}
	if f.shell {
		req.Shell = strings.Join(args, " ")
	} else {
		req.Cmd = args
	}
	if f.interactive {
		req.Stdin = a.stdin
	}
	env, err := parseKV("--env", f.env)
	req.Env = env
	return req, err
}

// runExec runs req and turns the result into exec's exit code.
func runExec(ctx context.Context, sb client.Handle, req moat.ExecRequest) error {
	res, err := sb.Exec(ctx, req)
	if err != nil {
		if errors.Is(err, moat.ErrCommandNotFound) {
			return codedError{ExitCmdNotFound, err}
		}
		return codedError{ExitMoatError, err}
	}
	if res.OOMKilled {
		return exitError{code: res.ExitCode, note: fmt.Sprintf("command killed: out of memory (exit %d; the sandbox's memory limit is in `moat inspect`)", res.ExitCode)}
	}
	if res.ExitCode != 0 {
		return exitError{code: res.ExitCode}
	}
	return nil
}

func (a *app) execCmd() *cobra.Command {
	var f execFlags
	cmd := &cobra.Command{
		Use:   "exec [flags] ID -- CMD [ARG...]",
		Short: "run a command in a sandbox; exits with the command's exit code",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := a.execRequest(&f, args[1:])
			if err != nil {
				return codedError{ExitMoatError, err}
			}
			return moatError(a.withSandbox(cmd.Context(), args[0], func(sb client.Handle) error {
				if f.tty {
					return a.runTerminal(cmd.Context(), sb, req)
				}
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return runExec(ctx, sb, req)
			}))
		},
	}
	f.register(cmd, true)
	return cmd
}

func (a *app) runCmd() *cobra.Command {
	var sf specFlags
	var ef execFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARG...]",
		Short: "create a sandbox, run one command in it, and destroy it (also on Ctrl-C)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := sf.spec()
			if err != nil {
				return codedError{ExitMoatError, err}
			}
			req, err := a.execRequest(&ef, args)
			if err != nil {
				return codedError{ExitMoatError, err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return moatError(a.withAPI(ctx, func(api client.API) error {
				sb, err := api.Create(ctx, spec)
				if err != nil {
					return err
				}
				defer func() {
					// Destroy even when interrupted: a fresh, bounded context.
					dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
					defer cancel()
					if derr := sb.Destroy(dctx); derr != nil {
						fmt.Fprintln(a.stderr, formatError(fmt.Errorf("destroy %s: %w", sb.ID(), derr)))
					}
				}()
				if ef.tty {
					return a.runTerminal(ctx, sb, req)
				}
				return runExec(ctx, sb, req)
			}))
		},
	}
	sf.register(cmd)
	ef.register(cmd, false)
	return cmd
}

func (a *app) lsCmd() *cobra.Command {
	var output, backendName, session, status string
	var all bool
	var labels []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list", "ps"},
		Short:   "list sandboxes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lbl, err := parseKV("--label", labels)
			if err != nil {
				return err
			}
			f := moat.ListFilter{Backend: backendName, SessionID: session, Labels: lbl, IncludeDestroyed: all}
			if status != "" {
				f.Status = []moat.Status{moat.Status(status)}
			}
			var infos []moat.Info
			if err := a.withAPI(cmd.Context(), func(api client.API) (err error) {
				infos, err = api.List(cmd.Context(), f)
				return err
			}); err != nil {
				return err
			}
			switch output {
			case "json":
				if infos == nil {
					infos = []moat.Info{}
				}
				return a.printJSON(infos)
			case "", "table":
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tBACKEND\tSTATUS\tSESSION\tCREATED")
				for _, in := range infos {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, dash(in.Name), in.Backend, in.Status,
						dash(in.SessionID), in.CreatedAt.Local().Format(time.DateTime))
				}
				return tw.Flush()
			default:
				return errdefs.InvalidArgumentf("-o %q: want table or json", output)
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&output, "output", "o", "table", "output format: table or json")
	fl.BoolVarP(&all, "all", "a", false, "include destroyed sandboxes")
	fl.StringVar(&backendName, "backend", "", "only this backend")
	fl.StringVar(&session, "session", "", "only this session")
	fl.StringVar(&status, "status", "", "only this status")
	fl.StringArrayVarP(&labels, "label", "l", nil, "only sandboxes with label K=V")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) inspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "print a sandbox's record as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSandbox(cmd.Context(), args[0], func(sb client.Handle) error {
				info, err := sb.Info(cmd.Context())
				if err != nil {
					return err
				}
				return a.printJSON(info)
			})
		},
	}
}

func (a *app) rmCmd() *cobra.Command {
	var session string
	cmd := &cobra.Command{
		Use:     "rm [ID...] [--session SESSION]",
		Aliases: []string{"destroy"},
		Short:   "destroy sandboxes (by id or name, or all of a session's); prints each id destroyed",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && session == "" {
				return errdefs.InvalidArgumentf("rm: name sandboxes or --session")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAPI(cmd.Context(), func(api client.API) error {
				var failed []string
				for _, id := range args {
					if err := api.Destroy(cmd.Context(), id); err != nil {
						fmt.Fprintln(a.stderr, formatError(err))
						failed = append(failed, id)
						continue
					}
					fmt.Fprintln(a.stdout, id)
				}
				if session != "" {
					td, err := api.DestroySessionSandboxes(cmd.Context(), session)
					for _, id := range td.Destroyed {
						fmt.Fprintln(a.stdout, id)
					}
					for _, f := range td.Failed {
						fmt.Fprintf(a.stderr, "moat: %s: destroy %s: %s\n", f.Kind, f.ID, f.Error)
						failed = append(failed, f.ID)
					}
					if err != nil && len(td.Failed) == 0 {
						return err
					}
				}
				if len(failed) > 0 {
					return exitError{code: ExitGenericError}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&session, "session", "", "destroy every sandbox of this session")
	return cmd
}

func (a *app) backendsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "backends",
		Short: "show every backend, whether it is usable and why, and which one auto picks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep moat.BackendReport
			if err := a.withAPI(cmd.Context(), func(api client.API) (err error) {
				rep, err = api.Backends(cmd.Context())
				return err
			}); err != nil {
				return err
			}
			sort.Slice(rep.Backends, func(i, j int) bool { return rep.Backends[i].Name < rep.Backends[j].Name })
			switch output {
			case "json":
				return a.printJSON(rep)
			case "", "table":
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATE\tISOLATION\tWHERE\tAUTO\tREASON")
				for _, b := range rep.Backends {
					where := "local"
					if b.Remote {
						where = "remote"
					}
					auto := ""
					if b.Auto {
						auto = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, b.Health.State, b.Isolation, where, auto, dash(b.Health.Reason))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "\nauto: %s\n", rep.AutoExplain)
				return nil
			default:
				return errdefs.InvalidArgumentf("-o %q: want table or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
