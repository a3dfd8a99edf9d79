// Command moat-fakes serves the in-repo fakes of the hosted providers (Vercel, Daytona,
// E2B) on loopback, running their sandboxes on a local moat backend, so the real moat
// clients — and the providers' official SDKs — can be tried without an account:
//
//	moat-fakes --provider daytona --runner docker --image moat-base:latest
//	# prints: export DAYTONA_API_URL=http://127.0.0.1:PORT/api DAYTONA_API_KEY=...
//	moat run --backend daytona -- echo hi
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/bwrap"
	"github.com/moatsh/moat/backends/daytona/daytonafake"
	"github.com/moatsh/moat/backends/docker"
	"github.com/moatsh/moat/backends/e2b/e2bfake"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/backends/vercel/vercelfake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "moat-fakes:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("moat-fakes", flag.ContinueOnError)
	provider := fs.String("provider", "daytona", "fake to serve: vercel, daytona or e2b")
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	runner := fs.String("runner", "docker", "local backend that runs the sandboxes: docker, bwrap or host")
	image := fs.String("image", "", "image for the runner's sandboxes (docker image or rootfs tarball)")
	token := fs.String("token", "moat-fake-token", "API token the fake accepts")
	state := fs.String("state", filepath.Join(os.TempDir(), "moat-fakes"), "state directory of the runner")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--listen %s: the fakes serve on loopback only", *listen)
	}
	local, err := newRunner(*runner, *image, filepath.Join(*state, *runner))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	var h http.Handler
	var exports string
	switch *provider {
	case "daytona":
		h = daytonafake.New(daytonafake.Options{Token: *token, Backend: local, Image: *image, ExecFiles: *runner == "host"})
		exports = fmt.Sprintf("export DAYTONA_API_URL=%s/api DAYTONA_API_KEY=%s", url, *token)
	case "vercel":
		h = vercelfake.New(vercelfake.Options{Token: *token, Backend: local, Image: *image})
		exports = fmt.Sprintf("export VERCEL_API_URL=%s/api VERCEL_TOKEN=%s VERCEL_TEAM_ID=team_fake VERCEL_PROJECT_ID=prj_fake", url, *token)
	case "e2b":
		h = e2bfake.New(e2bfake.Options{Token: *token, Backend: local, Image: *image})
		exports = fmt.Sprintf("export E2B_API_URL=%s E2B_SANDBOX_URL=%s E2B_API_KEY=%s", url, url, *token)
	default:
		return fmt.Errorf("--provider %q: want vercel, daytona or e2b", *provider)
	}
	fmt.Println(exports)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func newRunner(name, image, stateDir string) (backend.Backend, error) {
	cfg := backend.Config{StateDir: stateDir, Getenv: os.Getenv}
	switch name {
	case "docker":
		return docker.New(docker.Config{Image: image})
	case "bwrap":
		return bwrap.New(cfg)
	case "host":
		return host.New(cfg)
	}
	return nil, fmt.Errorf("--runner %q: want docker, bwrap or host", name)
}
