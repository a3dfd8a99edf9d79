package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

func TestNewValidatesURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "://bad"} {
		if _, err := New(u); errdefs.KindOf(err) != errdefs.KindInvalidArgument {
			t.Errorf("New(%q) = %v", u, err)
		}
	}
	if _, err := New("http://127.0.0.1:8080/"); err != nil {
		t.Error(err)
	}
}

// TestErrorKindsRoundTrip: every kind the server names comes back as that kind, and a body
// without a kind falls back to the status code.
func TestErrorKindsRoundTrip(t *testing.T) {
	var kind errdefs.Kind
	var raw string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if raw != "" {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = w.Write([]byte(raw))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(errdefs.HTTPStatus(kind))
		_ = json.NewEncoder(w).Encode(apitype.Error{Error: apitype.ErrorBody{Kind: kind, Message: "msg " + string(kind)}})
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	for _, k := range errdefs.Kinds() {
		kind = k
		_, err := c.Get(context.Background(), "x")
		if errdefs.KindOf(err) != k || err.Error() != "msg "+string(k) {
			t.Errorf("kind %s came back as %s (%v)", k, errdefs.KindOf(err), err)
		}
	}
	raw = "<html>too big</html>"
	_, err := c.Get(context.Background(), "x")
	if errdefs.KindOf(err) != errdefs.KindResourceExhausted || !strings.Contains(err.Error(), "413") {
		t.Errorf("non-JSON 413: %v", err)
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, _ := New(url)
	_, err := c.List(context.Background(), moat.ListFilter{})
	if errdefs.KindOf(err) != errdefs.KindUnavailable {
		t.Errorf("closed server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.List(ctx, moat.ListFilter{})
	if errdefs.KindOf(err) != errdefs.KindCanceled {
		t.Errorf("canceled ctx: %v", err)
	}
}

func TestCapBufferKeepsCharacters(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		max  int64
		want string
		trun bool
	}{
		{[]string{"abc"}, 5, "abc", false},
		{[]string{"abcdef"}, 5, "abcde", true},
		{[]string{"éé", "é"}, 5, "éé", true},     // the third é would be split
		{[]string{"ab", "cdé"}, 5, "abcd", true}, // é straddles the cap
		{[]string{"\xff\xfe\xfd\xfc\xfb\xfa"}, 4, "\xff\xfe\xfd\xfc", true},
	} {
		b := &capBuffer{max: tc.max}
		for _, s := range tc.in {
			if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
				t.Errorf("write %q: %d, %v", s, n, err)
			}
		}
		if b.buf.String() != tc.want || b.truncated != tc.trun {
			t.Errorf("%q cap %d = %q truncated=%v, want %q %v", tc.in, tc.max, b.buf.String(), b.truncated, tc.want, tc.trun)
		}
	}
}

// TestPathSegmentsEscapedOnce: ids and session names travel as one path segment, escaped
// exactly once, so the server reads back the same string ("a b" must not arrive as
// "a%20b", "a/b" must not split the route).
func TestPathSegmentsEscapedOnce(t *testing.T) {
	const session = "agent 7/x?%#é"
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux := http.NewServeMux()
		mux.HandleFunc("/v1/sessions/{session}/backend", func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.PathValue("session"))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"backend":"fake"}`))
		})
		mux.HandleFunc("/v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.PathValue("id"))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":"x"}`))
		})
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for _, base := range []string{srv.URL, srv.URL + "/prefix%20dir/"} {
		got = nil
		c, err := New(base)
		if err != nil {
			t.Fatal(err)
		}
		if base != srv.URL {
			// A base path is kept as given (escaped once) in front of the API path.
			if u := c.url("/v1/x", nil); u != srv.URL+"/prefix%20dir/v1/x" {
				t.Errorf("url with base path = %q", u)
			}
			continue
		}
		ctx := context.Background()
		if _, err := c.SessionBackend(ctx, session); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "my box"); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != session || got[1] != "my box" {
			t.Errorf("server saw %q, want [%q %q]", got, session, "my box")
		}
		if u := c.wsURL(sandboxPath("a b") + "/terminal"); !strings.HasSuffix(u, "/v1/sandboxes/a%20b/terminal") {
			t.Errorf("wsURL = %q", u)
		}
	}
}
