// Package providertest answers "what do the tests of the hosted-provider backends (vercel,
// daytona, e2b) share?": the local backends their fakes run commands on (the restricted
// host, docker when its daemon is reachable, a runner without a file API), servers that
// misbehave the same way for every client (an endless JSON answer), and building a
// backend from a moat.toml section.
package providertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/docker"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/internal/testenv"
)

// HostRunner is the restricted-host backend: real processes, quick. Absolute paths in argv
// are host paths there, so tests only use /tmp paths in commands.
func HostRunner(t testing.TB) backend.Backend {
	t.Helper()
	b, err := host.New(backend.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ExecFiles wraps a runner so that its instances offer only backend.Instance: a fake then
// serves its file API through commands (package execfs), and with the host runner files
// and commands see one filesystem (the host's), as in a real sandbox.
func ExecFiles(b backend.Backend) backend.Backend { return execFiles{b} }

type execFiles struct{ backend.Backend }

func (e execFiles) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := e.Backend.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return struct{ backend.Instance }{inst}, nil
}

func (e execFiles) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	inst, err := e.Backend.Attach(ctx, h)
	if err != nil {
		return nil, err
	}
	return struct{ backend.Instance }{inst}, nil
}

// DockerRunner is the docker backend on the test image when the daemon is reachable; it
// skips t otherwise (fails it when MOAT_TEST_REQUIRE names docker). It is closed with t.
func DockerRunner(t testing.TB) backend.Backend {
	t.Helper()
	b, err := docker.New(docker.Config{Image: testenv.DockerImage()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reason := ""
	if h := b.Probe(ctx); h.State != backend.Ready {
		reason = h.Reason
	}
	testenv.Require(t, "docker", reason)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// EndlessJSON answers every request 200 with a JSON document that starts with prefix and
// never ends, until the client goes away: a client must refuse it once it passes its bound.
func EndlessJSON(prefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, prefix)
		chunk := strings.Repeat("a", 64<<10)
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
}

// OpenTOML builds the registered backend name from its [backends.<name>] section given as
// TOML text, decoded strictly as moat.toml is, with no environment and a logger writing
// to the returned buffer (where deprecation warnings land).
func OpenTOML(name, section string) (backend.Backend, *bytes.Buffer, error) {
	f, ok := backend.Lookup(name)
	if !ok {
		return nil, nil, fmt.Errorf("providertest: no backend %q registered", name)
	}
	var logs bytes.Buffer
	b, err := f(backend.Config{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Decode: func(v any) error {
			return toml.NewDecoder(strings.NewReader(section)).DisallowUnknownFields().Decode(v)
		},
	})
	return b, &logs, err
}

// RoundTrip passes h through JSON, as a store (or another process) hands it back.
func RoundTrip(t testing.TB, h backend.Handle) backend.Handle {
	t.Helper()
	raw, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var out backend.Handle
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// HandleAPIURL returns the api_url a hosted backend's handle records ("" when none).
func HandleAPIURL(t testing.TB, h backend.Handle) string {
	t.Helper()
	var st struct {
		APIURL string `json:"api_url"`
	}
	if err := json.Unmarshal(h.State, &st); err != nil {
		t.Fatal(err)
	}
	return st.APIURL
}

// RunningAfterRetries asks inst for its status, which must be running, when the provider's
// fake first answers 429 with a Retry-After: it fails t unless the answer took at least
// wait, the sum of the Retry-After delays the fake asked for.
func RunningAfterRetries(ctx context.Context, t testing.TB, inst backend.Instance, wait time.Duration) {
	t.Helper()
	start := time.Now()
	st, err := inst.Status(ctx)
	if err != nil || st != backend.StatusRunning {
		t.Fatalf("Status after 429s = %q, %v; want running", st, err)
	}
	if el := time.Since(start); el < wait {
		t.Errorf("Retry-After answers were retried after %v; want at least %v", el, wait)
	}
}
