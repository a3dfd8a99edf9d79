// Package moattest answers "does a moat front end behave like the Manager?": one suite of
// manager-level checks (lifecycle, error kinds, exec with streaming, stdin, caps and
// cancellation, files large and small, sessions (settings, bad input, teardown), concurrency, cleanup) that runs against a
// client.API — the in-process Manager (Local) and the same Manager behind the HTTP API
// (OverHTTP) — so errors, streaming and cancellation are proven to survive the hop.
package moattest

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/moatsh/moat/client/local"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/store/memstore"
)

// BlockCommand is a command the fake sandboxes of NewManager know: it writes "started\n"
// and blocks until it is killed, counting itself in Env.Running meanwhile.
const BlockCommand = "moattest-block"

// Env is a Manager on the fake backend and an in-memory store, with a way to see commands
// that are still running.
type Env struct {
	Manager *moat.Manager
	Fake    *fake.Backend
	running *atomic.Int64
}

// Running reports how many BlockCommand processes are running.
func (e *Env) Running() int64 { return e.running.Load() }

// NewManager returns a Manager whose only backend is a fake named "fake", on a fresh
// in-memory store. It is closed when t ends.
func NewManager(t testing.TB, opts ...fake.Option) *Env {
	t.Helper()
	return NewManagerWith(t, nil, opts...)
}

// NewManagerWith is NewManager with more backends or options for moat.Open (such as
// moat.WithFactory for a backend whose settings the test changes).
func NewManagerWith(t testing.TB, mopts []moat.Option, opts ...fake.Option) *Env {
	t.Helper()
	running := new(atomic.Int64)
	block := func(ctx context.Context, req *backend.ExecRequest) (int, error) {
		running.Add(1)
		defer running.Add(-1)
		if _, err := req.Stdout.Write([]byte("started\n")); err != nil {
			return 1, nil
		}
		<-ctx.Done()
		return 137, ctx.Err()
	}
	fb := fake.New(append([]fake.Option{fake.WithCommand(BlockCommand, block)}, opts...)...)
	mopts = append([]moat.Option{moat.WithoutRegistered(), moat.WithBackend("fake", fb)}, mopts...)
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Home: t.TempDir(),
		Sandbox: moat.SandboxConfig{Backend: "fake"}}, mopts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &Env{Manager: m, Fake: fb, running: running}
}

// Target is what the suite tests: an API and what it needs to know of the backend behind.
type Target struct {
	API client.API
	// Manager is the Manager behind API (in this process), for leak checks.
	Manager *moat.Manager
	// Backend is the backend sandboxes land on; Spec is the base spec of every sandbox the
	// suite creates (an image the backend has).
	Backend string
	Spec    moat.Spec
	// Block is an argv that writes "started\n" and then runs until it is killed.
	Block []string
	// Running reports how many Block commands run, or is nil when that cannot be seen;
	// then the suite checks cancellation from the caller's side only.
	Running func() int64
	// Leftovers lists sandboxes the backend still has, or is nil.
	Leftovers func() []string
	// UnusableImage is an image the backend refuses at create time, or "" to skip that
	// check.
	UnusableImage string
	// Terminal is true when the backend has terminals (else the suite expects Unsupported).
	Terminal bool
	// Remote is true when calls cross HTTP; Server is then the httptest server.
	Remote bool
	Server *httptest.Server
}

// Target returns the in-process target of e.
func (e *Env) Target() Target {
	return Target{
		API: local.New(e.Manager), Manager: e.Manager, Backend: "fake",
		Block: []string{BlockCommand}, Running: e.Running, Leftovers: e.Fake.IDs,
		UnusableImage: fake.SnapshotImagePrefix + "no-such-snapshot",
		Terminal:      true, // the fake's terminal double echoes its argv
	}
}

// Local returns a target calling a fresh fake Manager in-process.
func Local(t testing.TB) Target { return NewManager(t).Target() }

// OverHTTP returns a target calling a fresh fake Manager through client → httptest
// server → httpapi.
func OverHTTP(t testing.TB, opts httpapi.Options) Target { return Serve(t, Local(t), opts) }

// Serve returns tg with its Manager behind an httptest server running httpapi, and API
// the client of that server. The server is shut down when t ends.
func Serve(t testing.TB, tg Target, opts httpapi.Options) Target {
	h := httpapi.New(tg.Manager, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		_ = h.Shutdown(context.Background())
	})
	var copts []client.Option
	if len(opts.Tokens) > 0 {
		copts = append(copts, client.WithToken(opts.Tokens[0]))
	}
	c, err := client.New(srv.URL, copts...)
	if err != nil {
		t.Fatal(err)
	}
	tg.API, tg.Remote, tg.Server = client.Remote(c), true, srv
	return tg
}
