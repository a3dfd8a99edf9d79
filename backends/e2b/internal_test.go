package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backends/internal/providertest"
	"github.com/moatsh/moat/errdefs"
)

func TestStreamReader(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(envelope(0, []byte(`{"event":{"start":{"pid":7}}}`)))
	buf.Write(envelope(0, []byte(`{"event":{"data":{"stdout":"aGk="}}}`)))
	buf.Write(envelope(0, []byte(`{"event":{"end":{"exited":true,"status":"exit status 0"}}}`)))
	buf.Write(envelope(flagEndStream, []byte(`{}`)))
	sr := newStreamReader(io.NopCloser(&buf), "test")
	var evs []processEvent
	for {
		var ev processEvent
		err := sr.next(&ev)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 || evs[0].Event.Start.Pid != 7 || string(evs[1].Event.Data.Stdout) != "hi" ||
		evs[2].Event.End.ExitCode != 0 || !evs[2].Event.End.Exited {
		t.Fatalf("events: %+v", evs)
	}

	// An error end-of-stream keeps its Connect code as an errdefs kind.
	buf.Reset()
	buf.Write(envelope(flagEndStream, []byte(`{"error":{"code":"not_found","message":"process with pid 3 not found"}}`)))
	err := newStreamReader(io.NopCloser(&buf), "Start").next(&processEvent{})
	if !errdefs.Is(err, errdefs.KindNotFound) || !strings.Contains(err.Error(), "pid 3 not found") {
		t.Fatalf("end-of-stream error: %v", err)
	}
	// A body cut short is not a clean end.
	buf.Reset()
	buf.Write(envelope(0, []byte(`{"event":{}}`))[:7])
	if err := newStreamReader(io.NopCloser(&buf), "Start").next(&processEvent{}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestEndExitCode(t *testing.T) {
	for _, tc := range []struct {
		end  endInfo
		want int
		err  bool
	}{
		{endInfo{exited: true, status: "exit status 0"}, 0, false},
		{endInfo{code: 3, exited: true, status: "exit status 3"}, 3, false},
		{endInfo{code: -1, status: "signal: killed"}, 137, false},
		{endInfo{code: -1, status: "signal: terminated"}, 143, false},
		{endInfo{code: -1, status: "signal: segmentation fault (core dumped)"}, 139, false},
		{endInfo{code: -1, status: "weird"}, -1, true},
	} {
		got, err := tc.end.exitCode()
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%+v: got %d, %v; want %d", tc.end, got, err, tc.want)
		}
	}
}

func TestMarkerFilter(t *testing.T) {
	var out bytes.Buffer
	m := &markerFilter{w: &out}
	// The marker split across writes is held back and recognised.
	m.Write([]byte(notFoundMarker[:4]))
	m.Write([]byte(notFoundMarker[4:]))
	if !m.isMarker() || out.Len() != 0 {
		t.Fatalf("marker not recognised: %v %q", m.isMarker(), out.String())
	}
	// Anything else is passed through in order, including a marker-like prefix.
	out.Reset()
	m = &markerFilter{w: &out}
	m.Write([]byte("\x1emoat"))
	m.Write([]byte("-x and more"))
	m.Write([]byte("!"))
	if m.isMarker() || out.String() != "\x1emoat-x and more!" {
		t.Fatalf("passthrough: %q", out.String())
	}
	// A prefix of the marker at the end of output is flushed, not lost.
	out.Reset()
	m = &markerFilter{w: &out}
	m.Write([]byte("\x1emo"))
	if err := m.flush(); err != nil || out.String() != "\x1emo" {
		t.Fatalf("flush: %q %v", out.String(), err)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{"0.5.7", "0.5.7", true}, {"0.5.10", "0.5.7", true}, {"0.5.6", "0.5.7", false},
		{"0.4.0", "0.5.2", false}, {"1.0.0", "0.5.7", true}, {"v0.6.0", "0.5.7", true},
		{"", "0.5.7", true /* unparsable counts as new */},
	} {
		if got := versionAtLeast(tc.have, tc.want); got != tc.ok {
			t.Errorf("versionAtLeast(%q, %q) = %v", tc.have, tc.want, got)
		}
	}
}

// TestStatusOverrides checks E2B's differences from restapi's shared status mapping and
// retry rule (Retry-After, backoff and the shared mapping are tested in restapi).
func TestStatusOverrides(t *testing.T) {
	for _, tc := range []struct {
		status int
		kind   errdefs.Kind
	}{
		{400, errdefs.KindInvalidArgument},
		{401, errdefs.KindUnauthenticated},
		{404, errdefs.KindNotFound},
		{410, errdefs.KindNotFound},
		{429, errdefs.KindResourceExhausted},
		{500, errdefs.KindUnavailable},
		{501, errdefs.KindUnsupported},
		{504, errdefs.KindUnavailable},
		{507, errdefs.KindResourceExhausted},
		{418, errdefs.KindUnknown},
	} {
		err := statusError(tc.status, "e2b: x")
		if got := errdefs.KindOf(err); got != tc.kind || err.Error() != "e2b: x" {
			t.Errorf("statusError(%d) = %q of kind %q; want kind %q", tc.status, err, got, tc.kind)
		}
	}
	if retryable(http.StatusNotImplemented, true) {
		t.Error("501 must not be retried")
	}
	if !retryable(http.StatusServiceUnavailable, true) || retryable(http.StatusServiceUnavailable, false) ||
		!retryable(http.StatusTooManyRequests, false) {
		t.Error("retryable lost restapi's rule: 5xx when idempotent, 429 always")
	}
}

func TestEntryInfoSize(t *testing.T) {
	var e entryInfo
	if err := json.Unmarshal([]byte(`{"name":"f","size":"12345678901","mode":420,"modifiedTime":"2024-01-02T03:04:05Z"}`), &e); err != nil || e.Size != 12345678901 || e.Name != "f" || e.Mode != 420 {
		t.Fatalf("string size: %+v %v", e, err)
	}
	if err := json.Unmarshal([]byte(`{"name":"g","size":7}`), &e); err != nil || e.Size != 7 {
		t.Fatalf("number size: %+v %v", e, err)
	}
	if err := json.Unmarshal([]byte(`{"name":"h"}`), &e); err != nil || e.Size != 0 {
		t.Fatalf("omitted zero size: %+v %v", e, err)
	}
}

// TestListPagination checks that List follows X-Next-Token and filters on moat's metadata.
func TestListPagination(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") != "k" {
			w.WriteHeader(401)
			return
		}
		seen = append(seen, r.URL.RawQuery)
		q := r.URL.Query()
		if q.Get("metadata") != "moat.managed=true" || q.Get("state") != "running,paused" {
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"code":400,"message":"bad query"}`))
			return
		}
		n, _ := strconv.Atoi(q.Get("nextToken"))
		if n < 2 {
			w.Header().Set("X-Next-Token", strconv.Itoa(n+1))
		}
		_ = json.NewEncoder(w).Encode([]map[string]any{{
			"sandboxID": "sb" + strconv.Itoa(n), "state": "running",
			"metadata": map[string]string{"moat.id": "m" + strconv.Itoa(n)},
		}})
	}))
	defer srv.Close()
	b, err := New(Config{Token: "k", APIURL: srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != "m0" || got[2].ID != "m2" || len(seen) != 3 {
		t.Fatalf("List = %+v after queries %q", got, seen)
	}
	var st handleState
	if err := json.Unmarshal(got[1].Handle.State, &st); err != nil || st.SandboxID != "sb1" || got[1].Handle.Backend != Name {
		t.Fatalf("handle %+v: %v", got[1].Handle, err)
	}
}

func TestEnvdBase(t *testing.T) {
	b, _ := New(Config{}, Options{})
	if got := b.newInstance(b.configured(), "abc", "", 0, "", "").envd().base; got != "https://sandbox.e2b.app" {
		t.Errorf("default domain: %s", got)
	}
	if got := b.newInstance(b.configured(), "abc", "example.com", 0, "", "").envd().base; got != "https://49983-abc.example.com" {
		t.Errorf("custom domain: %s", got)
	}
	b2, _ := New(Config{SandboxURL: "http://127.0.0.1:9/"}, Options{})
	if got := b2.newInstance(b2.configured(), "abc", "e2b.app", 0, "", "").envd().base; got != "http://127.0.0.1:9" {
		t.Errorf("override: %s", got)
	}
	// A handle that recorded its endpoint keeps it: with no sandbox_url, envd is derived
	// from the domain even where one is configured now; an old handle takes the configured.
	ep, err := b2.endpointOf(handleState{SandboxID: "abc", APIURL: "http://api.example.com", Domain: "example.com"})
	if err != nil || ep.c.apiURL != "http://api.example.com" || ep.sandboxURL != "" {
		t.Fatalf("endpointOf(new handle) = %+v, %v", ep, err)
	}
	if got := b2.newInstance(ep, "abc", "example.com", 0, "", "").envd().base; got != "https://49983-abc.example.com" {
		t.Errorf("recorded endpoint without sandbox_url: %s", got)
	}
	if ep, err := b2.endpointOf(handleState{SandboxID: "abc"}); err != nil || ep.c != b2.c || ep.sandboxURL != "http://127.0.0.1:9" {
		t.Errorf("endpointOf(old handle) = %+v, %v; want the configured endpoint", ep, err)
	}
	if _, err := New(Config{APIURL: "ftp://x"}, Options{}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("bad api_url: %v", err)
	}
}

// TestConfigKeys checks the canonical duration and max_attempts keys and the deprecated
// forms (max_retries, bare seconds), each warned about once.
func TestConfigKeys(t *testing.T) {
	open := func(section string) (*Backend, string, error) {
		b, logs, err := providertest.OpenTOML(Name, section)
		if err != nil {
			return nil, logs.String(), err
		}
		return b.(*Backend), logs.String(), nil
	}
	b, logs, err := open("timeout = \"10m\"\nrequest_timeout = \"30s\"\nmax_attempts = 2")
	if err != nil || b.cfg.timeout != 10*time.Minute || b.cfg.requestTimeout != 30*time.Second || b.c.policy.MaxAttempts != 2 || logs != "" {
		t.Fatalf("canonical keys: %v %+v logs %q", err, b, logs)
	}
	b, _, err = open("")
	if err != nil || b.cfg.timeout != DefaultTimeout || b.cfg.requestTimeout != DefaultRequestTimeout || b.c.policy.MaxAttempts != DefaultMaxAttempts {
		t.Fatalf("defaults: %v", err)
	}
	b, logs, err = open("timeout = 600\nrequest_timeout = 20\nmax_retries = 3")
	if err != nil || b.cfg.timeout != 10*time.Minute || b.cfg.requestTimeout != 20*time.Second || b.c.policy.MaxAttempts != 3 {
		t.Fatalf("deprecated forms: %v", err)
	}
	for _, w := range []string{"timeout = 600 is deprecated", "request_timeout = 20 is deprecated", "max_retries is deprecated; use max_attempts"} {
		if strings.Count(logs, w) != 1 {
			t.Errorf("want one warning %q in %q", w, logs)
		}
	}
	if _, _, err := open("max_retries = 3\nmax_attempts = 5"); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("both set: %v", err)
	}
	if _, _, err := open(`timeout = "1500ms"`); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("fractional seconds: %v", err)
	}
}
