package restapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsh/moat/errdefs"
)

// recorder is a test server that answers from a script and records each request's body.
type recorder struct {
	mu     sync.Mutex
	bodies []string
	answer func(n int, w http.ResponseWriter) // n counts from 1
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.bodies = append(rec.bodies, string(b))
	n := len(rec.bodies)
	rec.mu.Unlock()
	rec.answer(n, w)
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.bodies)
}

// statusThenOK answers status (with Retry-After ra when set) fails times, then 200 "ok".
func statusThenOK(status, fails int, ra string) func(int, http.ResponseWriter) {
	return func(n int, w http.ResponseWriter) {
		if n <= fails {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			w.WriteHeader(status)
			io.WriteString(w, "nope")
			return
		}
		io.WriteString(w, "ok")
	}
}

func testClient(p Policy) *Client {
	return &Client{
		Name:   "prov",
		Policy: p,
		Error: func(resp *http.Response, what string) error {
			b := ReadErrorBody(resp.Body)
			return errdefs.Newf(KindForStatus(resp.StatusCode), "prov: %s: %d %s", what, resp.StatusCode, b)
		},
	}
}

func post(url, body string, idempotent bool) Request {
	payload := []byte(body)
	return Request{
		What: "POST /x",
		Build: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
		},
		Idempotent: idempotent,
	}
}

var fast = Policy{MaxAttempts: 4, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, RetryAfterCap: time.Minute}

func TestDoAttempts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		fails      int
		idempotent bool
		noRetry    bool
		want       int // requests
		ok         bool
	}{
		{"429 retried for any call", 429, 2, false, false, 3, true},
		{"5xx retried when idempotent", 503, 3, true, false, 4, true},
		{"5xx not retried otherwise", 503, 1, false, false, 1, false},
		{"attempts bounded", 500, 10, true, false, 4, false},
		{"4xx never retried", 400, 1, true, false, 1, false},
		{"NoRetry", 429, 1, true, true, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{answer: statusThenOK(tc.status, tc.fails, "")}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			r := post(srv.URL, "payload", tc.idempotent)
			r.NoRetry = tc.noRetry
			resp, err := testClient(fast).Do(context.Background(), r)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v; want ok=%v", err, tc.ok)
			}
			if err == nil {
				resp.Body.Close()
			} else if want := fmt.Sprintf("prov: POST /x: %d nope", tc.status); err.Error() != want {
				t.Errorf("error %q; want the last answer's %q", err, want)
			} else if errdefs.KindOf(err) != errdefs.KindOf(KindForStatus(tc.status)) {
				t.Errorf("kind %q lost", errdefs.KindOf(err))
			}
			if n := rec.count(); n != tc.want {
				t.Errorf("%d requests; want %d", n, tc.want)
			}
		})
	}
}

func TestDoReplaysBody(t *testing.T) {
	rec := &recorder{answer: statusThenOK(429, 2, "")}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	resp, err := testClient(fast).Do(context.Background(), post(srv.URL, "the body", false))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(rec.bodies) != 3 {
		t.Fatalf("%d requests", len(rec.bodies))
	}
	for i, b := range rec.bodies {
		if b != "the body" {
			t.Errorf("attempt %d sent %q", i+1, b)
		}
	}
}

func TestDoProviderOverride(t *testing.T) {
	rec := &recorder{answer: statusThenOK(501, 5, "")}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c := testClient(fast)
	c.Retryable = func(status int, idempotent bool, err error) bool {
		return status != http.StatusNotImplemented && RetryableStatus(status, idempotent)
	}
	if _, err := c.Do(context.Background(), post(srv.URL, "", true)); err == nil || rec.count() != 1 {
		t.Errorf("501 with an override: err %v after %d requests; want one request", err, rec.count())
	}
}

func TestDoRetryAfter(t *testing.T) {
	// Retry-After is waited for (the backoff alone would be a millisecond).
	rec := &recorder{answer: statusThenOK(429, 1, "0.2")}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	start := time.Now()
	resp, err := testClient(fast).Do(context.Background(), post(srv.URL, "", false))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("retried after %v; want the 0.2 s Retry-After honoured", d)
	}

	// A Retry-After beyond the cap ends the call at once with the answer's error.
	rec2 := &recorder{answer: statusThenOK(429, 1, "3600")}
	srv2 := httptest.NewServer(rec2)
	defer srv2.Close()
	start = time.Now()
	_, err = testClient(fast).Do(context.Background(), post(srv2.URL, "", true))
	if !errdefs.Is(err, errdefs.KindResourceExhausted) || rec2.count() != 1 {
		t.Errorf("hour-long Retry-After: %v after %d requests; want ResourceExhausted at once", err, rec2.count())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestDoCtxCancelMidBackoff(t *testing.T) {
	rec := &recorder{answer: statusThenOK(503, 10, "")}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for rec.count() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	slow := Policy{MaxAttempts: 5, BaseBackoff: time.Hour}
	start := time.Now()
	_, err := testClient(slow).Do(ctx, post(srv.URL, "", true))
	if !errors.Is(err, context.Canceled) || errdefs.KindOf(err) != errdefs.KindCanceled {
		t.Fatalf("err %v (kind %q); want Canceled", err, errdefs.KindOf(err))
	}
	if !strings.Contains(err.Error(), "prov: POST /x: ") || !strings.Contains(err.Error(), "last error: prov: POST /x: 503 nope") {
		t.Errorf("message %q names neither the call nor the last failure", err)
	}
	if d := time.Since(start); d > 10*time.Second || rec.count() != 1 {
		t.Errorf("took %v and %d requests", d, rec.count())
	}

	// A deadline is DeadlineExceeded.
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	_, err = testClient(slow).Do(dctx, post(srv.URL, "", true))
	if !errors.Is(err, context.DeadlineExceeded) || errdefs.KindOf(err) != errdefs.KindDeadlineExceeded {
		t.Errorf("deadline: %v (kind %q)", err, errdefs.KindOf(err))
	}
}

// TestDoConnectionErrors checks which connection errors are retried: a failed dial always
// (nothing was sent), another only for an idempotent call (it may have had its effect).
func TestDoConnectionErrors(t *testing.T) {
	// A dial to a closed port fails before anything is sent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	var dials int
	c := testClient(fast)
	c.HTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
	_, err = c.Do(context.Background(), post(closed, "x", false))
	if !errdefs.Is(err, errdefs.KindUnavailable) || dials != fast.MaxAttempts {
		t.Errorf("dial failure: %v after %d dials; want Unavailable after %d", err, dials, fast.MaxAttempts)
	}

	// A server that hangs up after reading the request: the request was sent.
	var mu sync.Mutex
	accepted := 0
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go func() {
		for {
			conn, err := hl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			buf := make([]byte, 4096)
			_, _ = conn.Read(buf)
			conn.Close()
		}
	}()
	hangup := "http://" + hl.Addr().String()
	count := func() int { mu.Lock(); defer mu.Unlock(); return accepted }

	c.HTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := c.Do(context.Background(), post(hangup, "x", false)); !errdefs.Is(err, errdefs.KindUnavailable) || count() != 1 {
		t.Errorf("non-idempotent after a sent request: %v after %d connections; want one", err, count())
	}
	before := count()
	if _, err := c.Do(context.Background(), post(hangup, "x", true)); !errdefs.Is(err, errdefs.KindUnavailable) || count()-before != fast.MaxAttempts {
		t.Errorf("idempotent: %v after %d connections; want %d", err, count()-before, fast.MaxAttempts)
	}
}

func TestDoBuildError(t *testing.T) {
	boom := errors.New("boom")
	r := Request{What: "GET /x", Build: func(context.Context) (*http.Request, error) { return nil, boom }}
	if _, err := testClient(fast).Do(context.Background(), r); err != boom {
		t.Errorf("err %v; want the Build error as it is", err)
	}
}
