package agentd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/moatsh/moat/agent/wire"
)

// DefaultSocket is where the agent listens inside a docker sandbox.
const DefaultSocket = "/.moat/agent.sock"

// Main is moat-agent's main: "serve [-socket PATH]" runs the server until SIGTERM or
// SIGINT (then exits 0, so a stopped container reads as cleanly stopped); "version" prints
// the agent version and protocol versions. It returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: moat-agent serve [-socket PATH] | version")
		return 2
	}
	switch args[0] {
	case "version":
		fmt.Fprintf(stdout, "%s protocol %v\n", Version, wire.Versions)
		return 0
	case "serve":
	default:
		fmt.Fprintf(stderr, "moat-agent: unknown command %q\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("socket", DefaultSocket, "unix socket to listen on")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	// Few threads: the agent's threads count against the sandbox's pids limit, and its
	// work (copying pipes to a socket) needs little parallelism.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(min(2, runtime.NumCPU()))
	}
	// SIGPIPE is not ignored: ignored signals are inherited by the commands. Go already turns
	// a write to a vanished client into EPIPE.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := Listen(*sock)
	if err != nil {
		fmt.Fprintln(stderr, "moat-agent:", err)
		return 1
	}
	s := &Server{Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	if err := s.Serve(ctx, ln); err != nil {
		fmt.Fprintln(stderr, "moat-agent:", err)
		return 1
	}
	_ = os.Remove(*sock)
	return 0
}
