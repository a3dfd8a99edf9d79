// Command moatd answers "how do I serve moat over HTTP?": it opens a Manager from moat.toml
// (every registered backend, the configured store, $MOAT_HOME) and serves the v1 API of
// package httpapi until SIGINT or SIGTERM, then shuts down gracefully.
//
//	moatd [--listen 127.0.0.1:8080] [-c moat.toml]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moatsh/moat"
	_ "github.com/moatsh/moat/backends/all"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/config"
	"github.com/moatsh/moat/internal/webui"
	_ "github.com/moatsh/moat/store/all"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil))
}

// shutdownGrace is how long in-flight requests may take to finish after a signal before
// their commands are killed.
const shutdownGrace = 15 * time.Second

// run is moatd without the process: it serves until ctx ends. ready, when not nil, receives
// the base URL once the server listens (for tests).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) int {
	fs := flag.NewFlagSet("moatd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to listen on (default [server] listen, $MOAT_LISTEN or 127.0.0.1:8080)")
	cfgPath := fs.String("c", "", "config file (default $MOAT_HOME/moat.toml)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "moatd: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "moatd: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, *cfgPath, *listen, getenv, log, stdout, ready); err != nil {
		fmt.Fprintf(stderr, "moatd: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfgPath, listen string, getenv func(string) string, log *slog.Logger, stdout io.Writer, ready chan<- string) error {
	loaded, err := config.Load(cfgPath, getenv)
	if err != nil {
		return err
	}
	if listen == "" {
		listen = loaded.Server.Listen
	}
	var tokens []string
	for _, t := range loaded.Server.Tokens {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	if t := strings.TrimSpace(getenv("MOAT_API_TOKEN")); t != "" {
		tokens = append(tokens, t)
	}
	if err := httpapi.CheckListen(listen, len(tokens) > 0); err != nil {
		return err
	}

	cfg := loaded.Moat
	cfg.Logger = log
	if cfg.Store == "" {
		cfg.Store = "sqlite:" + filepath.Join(cfg.Home, "moat.db")
	}
	// moat.Open reads the settings saved through the API before it builds the backends, and
	// builds a backend again when they change, so they apply without a restart.
	m, err := moat.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Close()

	// Reconcile at start and every minute after: expired sandboxes are destroyed, lost ones
	// noticed, and settings another replica saved are picked up while moatd runs.
	mctx, stopMaintain := context.WithCancel(ctx)
	maintained := make(chan struct{})
	go func() {
		defer close(maintained)
		m.Maintain(mctx, time.Minute)
	}()
	defer func() { stopMaintain(); <-maintained }()
	h := httpapi.New(m, httpapi.Options{Tokens: tokens, Logger: log, UI: webui.Handler()})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "moatd: serving the moat API and web UI on %s (store %s, home %s)\n", url, storeKind(cfg.Store), cfg.Home)
	log.Info("listening", "url", url, "auth", len(tokens) > 0)
	if ready != nil {
		ready <- url
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	// http.Server.Shutdown stops accepting and waits for plain requests; httpapi's Shutdown
	// also covers WebSockets and, at the deadline, kills the commands still running.
	herr := make(chan error, 1)
	go func() { herr <- h.Shutdown(sctx) }()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut at shutdown", "err", err)
		_ = srv.Close()
	}
	if err := <-herr; err != nil {
		log.Warn("in-flight commands canceled at shutdown", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// storeKind names the store without its URL, which may hold a password.
func storeKind(u string) string {
	scheme, _, _ := strings.Cut(u, ":")
	return scheme
}
