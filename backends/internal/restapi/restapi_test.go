package restapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/errdefs"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"   ", 0, false},
		{"0", 0, true},
		{"3", 3 * time.Second, true},
		{" 3 ", 3 * time.Second, true},
		{"120", 2 * time.Minute, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"0.25", 250 * time.Millisecond, true},
		{"-1", 0, false},
		{"-0.5", 0, false},
		{"+3", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"1e3", 0, false},
		{"1.2.3", 0, false},
		{".", 0, false},
		{"soon", 0, false},
		{"3s", 0, false},
		// Huge delay-seconds are capped rather than overflowing into a negative Duration.
		{"86400", RetryAfterCap, true},
		{"99999999999999999999", RetryAfterCap, true},
		{"1" + strings.Repeat("0", 400), RetryAfterCap, true},
		// HTTP dates in the three formats RFC 9110 allows, relative to now.
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second, true},
		{now.Add(time.Minute).Format(time.ANSIC), time.Minute, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{now.AddDate(300, 0, 0).Format(http.TimeFormat), RetryAfterCap, true},
		{"Wed, 99 Foo 2026 00:00:00 GMT", 0, false},
	} {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	h := http.Header{}
	if d, ok := RetryAfter(h); ok || d != 0 {
		t.Errorf("no header: %v, %v", d, ok)
	}
	h.Set("Retry-After", "7")
	if d, ok := RetryAfter(h); !ok || d != 7*time.Second {
		t.Errorf("seconds: %v, %v", d, ok)
	}
	// A date is relative to the clock: allow for the time the test takes.
	h.Set("Retry-After", time.Now().Add(10*time.Second).UTC().Format(http.TimeFormat))
	if d, ok := RetryAfter(h); !ok || d < 8*time.Second || d > 10*time.Second {
		t.Errorf("date: %v, %v", d, ok)
	}
}

func TestBackoffNominal(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{Backoff{Base: 100 * ms, Max: time.Second}, 1, 100 * ms},
		{Backoff{Base: 100 * ms, Max: time.Second}, 2, 200 * ms},
		{Backoff{Base: 100 * ms, Max: time.Second}, 4, 800 * ms},
		{Backoff{Base: 100 * ms, Max: time.Second}, 5, time.Second},
		{Backoff{Base: 100 * ms, Max: time.Second}, 1000, time.Second},
		{Backoff{Base: 100 * ms, Max: time.Second}, 0, 100 * ms},
		{Backoff{Base: 100 * ms, Max: time.Second}, -3, 100 * ms},
		{Backoff{Base: 5 * time.Second, Max: time.Second}, 1, time.Second},
		{Backoff{Base: 300 * ms}, 3, 1200 * ms},
		{Backoff{Base: 300 * ms}, 1 << 30, time.Duration(1<<63-1) / 2},
		{Backoff{Base: time.Duration(1<<62 + 1)}, 2, time.Duration(1<<63-1) / 2},
		{Backoff{}, 3, 0},
		{Backoff{Base: -ms, Max: time.Second}, 3, 0},
	} {
		if got := tc.b.nominal(tc.attempt); got != tc.want {
			t.Errorf("%+v.nominal(%d) = %v; want %v", tc.b, tc.attempt, got, tc.want)
		}
	}
}

// pinJitter makes randN return pick(n) for the duration of the test.
func pinJitter(t *testing.T, pick func(n time.Duration) time.Duration) {
	old := randN
	randN = func(n time.Duration) time.Duration {
		if n <= 0 {
			t.Fatalf("randN(%v): n must be positive", n)
		}
		return pick(n)
	}
	t.Cleanup(func() { randN = old })
}

func TestBackoffDelayJitterBounds(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	pinJitter(t, func(time.Duration) time.Duration { return 0 })
	if got := b.Delay(2, 0); got != 100*time.Millisecond {
		t.Errorf("lowest jitter: %v; want nominal/2 = 100ms", got)
	}
	pinJitter(t, func(n time.Duration) time.Duration { return n - 1 })
	if got := b.Delay(2, 0); got != 200*time.Millisecond {
		t.Errorf("highest jitter: %v; want nominal = 200ms", got)
	}
	if got := b.Delay(30, 0); got != time.Second {
		t.Errorf("highest jitter at the cap: %v; want Max", got)
	}
	// An odd nominal delay still reaches its full value.
	if got := (Backoff{Base: 3}).Delay(1, 0); got != 3 {
		t.Errorf("odd nominal: %v; want 3ns", got)
	}
}

func TestBackoffDelayRandom(t *testing.T) {
	b := Backoff{Base: 64 * time.Millisecond, Max: 500 * time.Millisecond}
	for attempt := 1; attempt <= 8; attempt++ {
		nominal := b.nominal(attempt)
		seen := map[time.Duration]bool{}
		for range 200 {
			d := b.Delay(attempt, 0)
			if d < nominal/2 || d > nominal || d > b.Max {
				t.Fatalf("Delay(%d) = %v outside [%v, %v]", attempt, d, nominal/2, nominal)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("Delay(%d) took only %d distinct values in 200 draws: no jitter?", attempt, len(seen))
		}
	}
}

func TestBackoffDelayRetryAfter(t *testing.T) {
	pinJitter(t, func(n time.Duration) time.Duration { return n - 1 })
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{1, 0, 100 * time.Millisecond},
		{1, 3 * time.Second, 3 * time.Second},              // the server's hint wins over the backoff…
		{1, 20 * time.Millisecond, 100 * time.Millisecond}, // …but never shortens it
		{10, 5 * time.Second, 5 * time.Second},             // and is not cut to Max
		{1, -time.Second, 100 * time.Millisecond},
	} {
		if got := b.Delay(tc.attempt, tc.retryAfter); got != tc.want {
			t.Errorf("Delay(%d, %v) = %v; want %v", tc.attempt, tc.retryAfter, got, tc.want)
		}
	}
	if got := (Backoff{}).Delay(1, 2*time.Second); got != 2*time.Second {
		t.Errorf("zero Backoff with a hint: %v", got)
	}
	if got := (Backoff{}).Delay(1, 0); got != 0 {
		t.Errorf("zero Backoff: %v", got)
	}
}

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), 20*time.Millisecond); err != nil {
		t.Fatalf("plain sleep: %v", err)
	}
	if err := Sleep(context.Background(), -time.Second); err != nil {
		t.Fatalf("negative sleep: %v", err)
	}

	// Cancelled during the sleep: returns promptly with Canceled.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	err := Sleep(ctx, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sleep = %v; want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancelled sleep returned after %v", d)
	}

	// A deadline during the sleep reports DeadlineExceeded.
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer dcancel()
	if err := Sleep(dctx, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline sleep = %v; want DeadlineExceeded", err)
	}

	// An already ended ctx wins even over a zero wait: the caller must stop retrying.
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("zero sleep on a cancelled ctx = %v", err)
	}
}

func TestRetryableStatus(t *testing.T) {
	for _, tc := range []struct {
		status           int
		idempotent, want bool
	}{
		{429, false, true},
		{429, true, true},
		{500, true, true},
		{502, true, true},
		{503, true, true},
		{504, true, true},
		{599, true, true},
		{500, false, false},
		{503, false, false},
		{400, true, false},
		{401, true, false},
		{404, true, false},
		{409, true, false},
		{408, true, false},
		{200, true, false},
		{600, true, false},
	} {
		if got := RetryableStatus(tc.status, tc.idempotent); got != tc.want {
			t.Errorf("RetryableStatus(%d, %v) = %v; want %v", tc.status, tc.idempotent, got, tc.want)
		}
	}
}

func TestNothingSent(t *testing.T) {
	// A port nobody listens on (loopback only): the dial fails before anything is sent.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, dialErr := http.Get("http://" + addr + "/x")
	if dialErr == nil {
		t.Fatal("GET on a closed port succeeded")
	}
	if !NothingSent(dialErr) {
		t.Errorf("NothingSent(%v) = false; want true for a refused dial", dialErr)
	}
	readErr := &url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "read", Err: errors.New("reset")}}
	if NothingSent(readErr) {
		t.Errorf("NothingSent(read error) = true")
	}
	if NothingSent(errors.New("dial")) || NothingSent(nil) {
		t.Errorf("NothingSent of a plain error or nil = true")
	}
}

func TestKindForStatus(t *testing.T) {
	want := map[int]error{
		400: errdefs.ErrInvalidArgument, 422: errdefs.ErrInvalidArgument,
		401: errdefs.ErrUnauthenticated,
		403: errdefs.ErrPermissionDenied,
		404: errdefs.ErrNotFound, 410: errdefs.ErrNotFound,
		408: errdefs.ErrDeadlineExceeded, 504: errdefs.ErrDeadlineExceeded,
		409: errdefs.ErrConflict,
		413: errdefs.ErrResourceExhausted, 429: errdefs.ErrResourceExhausted,
	}
	for status := 100; status <= 699; status++ {
		w, listed := want[status]
		if !listed && status >= 500 && status <= 599 {
			w = errdefs.ErrUnavailable
		}
		if got := KindForStatus(status); got != w {
			t.Errorf("KindForStatus(%d) = %v; want %v", status, got, w)
		}
	}
}

func TestReadErrorBody(t *testing.T) {
	big := strings.Repeat("x", MaxErrorBody+100)
	if got := ReadErrorBody(strings.NewReader(big)); len(got) != MaxErrorBody {
		t.Errorf("read %d bytes of a huge body; want %d", len(got), MaxErrorBody)
	}
	if got := ReadErrorBody(strings.NewReader(`{"a":1}`)); string(got) != `{"a":1}` {
		t.Errorf("small body: %q", got)
	}
}

func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 10, ""},
		{"  short  \n", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"<html><body>502 Bad Gateway</body></html>", 12, "<html><body>…"},
		// A cut inside a multi-byte rune backs off to its start.
		{"ab€cd", 3, "ab…"},
		{"ab€cd", 4, "ab…"},
		{"ab€cd", 5, "ab€…"},
		{"ééé", 3, "é…"},
		// Bytes that are not UTF-8 are still quoted (at most UTFMax-1 bytes are given up).
		{"\x80\x80\x80\x80\x80\x80", 4, "\x80…"},
		{"abc", 0, "…"},
	} {
		if got := Prefix([]byte(tc.in), tc.n); got != tc.want {
			t.Errorf("Prefix(%q, %d) = %q; want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		in      string
		secrets []string
		want    string
	}{
		{"token tok123 echoed: tok123", []string{"tok123"}, "token [redacted] echoed: [redacted]"},
		{"a=AAA b=BBB", []string{"AAA", "BBB"}, "a=[redacted] b=[redacted]"},
		{"nothing here", []string{"zzz"}, "nothing here"},
		{"empty secret", []string{""}, "empty secret"},
		{"no secrets", nil, "no secrets"},
	} {
		if got := Redact(tc.in, tc.secrets...); got != tc.want {
			t.Errorf("Redact(%q, %q) = %q; want %q", tc.in, tc.secrets, got, tc.want)
		}
	}
}

func TestTransportError(t *testing.T) {
	cause := errors.New("connection reset by peer tok_SECRET")
	uerr := &url.Error{Op: "Get", URL: "http://127.0.0.1:9/v2/sandboxes?teamId=team_1", Err: cause}

	err := TransportError(context.Background(), "prov: GET /v2/sandboxes", uerr, "tok_SECRET")
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Errorf("kind %q; want unavailable", errdefs.KindOf(err))
	}
	if got, want := err.Error(), "prov: GET /v2/sandboxes: connection reset by peer [redacted]"; got != want {
		t.Errorf("message %q; want %q", got, want)
	}

	plain := TransportError(context.Background(), "prov: x", errors.New("boom"))
	if plain.Error() != "prov: x: boom" || !errdefs.Is(plain, errdefs.KindUnavailable) {
		t.Errorf("plain error: %v", plain)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = TransportError(ctx, "prov: GET /x", uerr)
	if !errors.Is(err, context.Canceled) || errdefs.KindOf(err) != errdefs.KindCanceled {
		t.Errorf("cancelled ctx: %v (kind %q)", err, errdefs.KindOf(err))
	}
	if strings.Contains(err.Error(), "127.0.0.1") || !strings.HasPrefix(err.Error(), "prov: GET /x: ") {
		t.Errorf("cancelled ctx message: %q", err)
	}

	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	err = TransportError(dctx, "prov: GET /x", uerr)
	if !errors.Is(err, context.DeadlineExceeded) || errdefs.KindOf(err) != errdefs.KindDeadlineExceeded {
		t.Errorf("expired ctx: %v (kind %q)", err, errdefs.KindOf(err))
	}
}
