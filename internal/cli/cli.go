// Package cli answers "what does the moat command do?": the cobra command tree of `moat`
// (create, exec, run, ls, inspect, rm, cp, backends, version). cmd/moat only calls Main.
//
// Embedded mode (the default) opens the store and backends in-process. With --server URL
// (or MOAT_SERVER; token from MOAT_API_TOKEN) every command goes through moatd's API.
//
// Exit codes: exec and run exit with the command's own code; when moat itself fails they
// exit 125 (like docker run), and 127 when the program to run does not exist. Every other
// command exits 1 on error. Errors are one line on stderr: "moat: <kind>: <message>".
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moatsh/moat/client/local"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/config"
)

// Version is set at build time with -ldflags "-X github.com/moatsh/moat/internal/cli.Version=…".
var Version = "dev"

// Exit codes of exec and run when the failure is moat's, not the command's.
const (
	ExitMoatError    = 125
	ExitCmdNotFound  = 127
	ExitGenericError = 1
)

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	note string // printed on stderr (after "moat: ") when set, e.g. why the command died
}

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// app holds what every command shares.
type app struct {
	configPath string
	server     string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	getenv     func(string) string
	// openHook lets tests replace how the manager is opened.
	openHook func(ctx context.Context, cfg moat.Config, opts ...moat.Option) (*moat.Manager, error)
}

// Main runs moat with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, openHook: moat.Open}
	return a.run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.note != "" {
			fmt.Fprintln(a.stderr, "moat: "+ee.note)
		}
		return ee.code
	}
	fmt.Fprintln(a.stderr, formatError(err))
	var ce codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return ExitGenericError
}

// codedError is a moat error that must exit with a specific code (exec, run).
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// formatError renders err as one line: "moat: kind: message".
func formatError(err error) string {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	k := errdefs.KindOf(err)
	if k == errdefs.KindUnknown {
		return "moat: " + msg
	}
	return "moat: " + string(k) + ": " + msg
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "moat",
		Short:         "moat runs commands in sandboxes on any backend",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.PersistentFlags().StringVarP(&a.configPath, "config", "c", "", "config file (default $MOAT_HOME/moat.toml)")
	root.PersistentFlags().StringVar(&a.server, "server", "", "moatd URL: go through its API instead of running embedded (env MOAT_SERVER)")
	root.AddCommand(a.createCmd(), a.execCmd(), a.runCmd(), a.shellCmd(), a.lsCmd(), a.inspectCmd(), a.rmCmd(),
		a.cpCmd(), a.backendsCmd(), a.sessionCmd(), a.reconcileCmd(), a.settingsCmd(), a.versionCmd())
	root.AddCommand(a.abilityCmds()...)
	return root
}

// serverURL returns the moatd URL commands go through, "" for an embedded manager.
func (a *app) serverURL() string {
	if a.server != "" {
		return a.server
	}
	return a.getenv("MOAT_SERVER")
}

// open returns the API the command works through: moatd's when --server or MOAT_SERVER
// is set, else an embedded manager built from the config. An embedded manager does not
// reconcile (moatd and `moat reconcile` do): a command checks only the sandboxes it
// touches, so it does not get slower with every sandbox. The returned func releases it.
func (a *app) open(ctx context.Context) (client.API, func(), error) {
	if server := a.serverURL(); server != "" {
		c, err := client.New(server, client.WithToken(a.getenv("MOAT_API_TOKEN")))
		if err != nil {
			return nil, nil, err
		}
		return client.Remote(c), func() {}, nil
	}
	m, err := a.openLocal(ctx)
	if err != nil {
		return nil, nil, err
	}
	return local.New(m), func() { m.Close() }, nil
}

// withAPI runs fn with the API open (a.open), and closes it after.
func (a *app) withAPI(ctx context.Context, fn func(api client.API) error) error {
	api, done, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	return fn(api)
}

// withSandbox runs fn on the sandbox id (or name) of the API opened as withAPI does.
func (a *app) withSandbox(ctx context.Context, id string, fn func(sb client.Handle) error) error {
	return a.withAPI(ctx, func(api client.API) error {
		sb, err := api.Get(ctx, id)
		if err != nil {
			return err
		}
		return fn(sb)
	})
}

// moatError marks err as moat's own (exit ExitMoatError) unless it carries an exit code
// already: for the commands that exit with their command's code.
func moatError(err error) error {
	var ee exitError
	var ce codedError
	if err == nil || errors.As(err, &ee) || errors.As(err, &ce) {
		return err
	}
	return codedError{ExitMoatError, err}
}

// openLocal opens an embedded manager from the config.
func (a *app) openLocal(ctx context.Context) (*moat.Manager, error) {
	l, err := config.Load(a.configPath, a.getenv)
	if err != nil {
		return nil, err
	}
	return a.openHook(ctx, l.Moat)
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print moat's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.stdout, "moat %s\n", Version)
			return nil
		},
	}
}
