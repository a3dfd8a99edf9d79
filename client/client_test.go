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
