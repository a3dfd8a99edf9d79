package httpapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/httpapi"
)

// wsTokenProtocol is how a browser carries a token on a WebSocket.
func wsTokenProtocol(tok string) string {
	return httpapi.WebSocketTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))
}

func TestWebSocketTokenSubprotocol(t *testing.T) {
	// A token with characters that are not allowed in a subprotocol as they are.
	const tok = "tok/with+odd=chars é"
	f := newFixture(t, httpapi.Options{Tokens: []string{tok}})
	sb := f.sandbox(t)
	url := "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/v1/sandboxes/" + sb.ID() + "/exec/ws"
	dial := func(protos ...string) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos})
	}

	c, resp, err := dial(httpapi.WebSocketProtocol, wsTokenProtocol(tok))
	if err != nil {
		t.Fatalf("dial with the token subprotocol: %v", err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != httpapi.WebSocketProtocol {
		t.Errorf("negotiated %q, want %q", c.Subprotocol(), httpapi.WebSocketProtocol)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, httpapi.WebSocketTokenPrefix) || strings.Contains(v, base64.RawURLEncoding.EncodeToString([]byte(tok))) {
				t.Errorf("the answer echoes the token in %s: %q", k, v)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"cmd":["echo","over ws"]}`)); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, out.String())
		}
		var ev apitype.Event
		if err := json.Unmarshal(msg, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == apitype.EventStdout {
			out.WriteString(ev.Data)
			continue
		}
		if ev.Type != apitype.EventExit || ev.ExitCode == nil || *ev.ExitCode != 0 {
			t.Fatalf("last event %+v", ev)
		}
		break
	}
	if out.String() != "over ws\n" {
		t.Errorf("stdout %q", out.String())
	}

	for _, protos := range [][]string{
		{httpapi.WebSocketProtocol},
		{httpapi.WebSocketProtocol, wsTokenProtocol("wrong")},
		{httpapi.WebSocketProtocol, httpapi.WebSocketTokenPrefix + "%%%not-base64"},
	} {
		if c, resp, err := dial(protos...); err == nil {
			c.CloseNow()
			t.Errorf("subprotocols %q: connected", protos)
		} else if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("subprotocols %q: %v, want 401", protos, err)
		}
	}

	// The subprotocol is a WebSocket-only way: a plain request carrying it is refused.
	code, _, _ := f.call(t, "GET", "/v1/sandboxes", "", "Sec-WebSocket-Protocol", wsTokenProtocol(tok))
	if code != http.StatusUnauthorized {
		t.Errorf("plain GET with the token subprotocol: %d, want 401", code)
	}
	if strings.Contains(f.logs.String(), base64.RawURLEncoding.EncodeToString([]byte(tok))) {
		t.Errorf("the encoded token reached the logs")
	}
}

func TestUIMount(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ui:" + r.URL.Path))
	})
	f := newFixture(t, httpapi.Options{Tokens: []string{token}, UI: ui})
	for _, p := range []string{"/", "/ui/app.js"} {
		code, body, _ := f.call(t, "GET", p, "")
		if code != 200 || body != "ui:"+p {
			t.Errorf("GET %s without a token: %d %q, want the UI", p, code, body)
		}
	}
	// The API keeps its token; other paths are not the UI's.
	for _, p := range []string{"/v1/sandboxes", "/metrics", "/index.html"} {
		if code, _, _ := f.call(t, "GET", p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", p, code)
		}
	}
	if code, _, _ := f.call(t, "POST", "/", `{}`); code != http.StatusUnauthorized && code != http.StatusMethodNotAllowed {
		t.Errorf("POST / : %d", code)
	}

	// The Host guard covers the UI too: a token-less server serves it to loopback names only.
	g := newFixture(t, httpapi.Options{UI: ui})
	if code, _, _ := g.call(t, "GET", "/", "", "Host", "evil.example"); code != http.StatusForbidden {
		t.Errorf("UI for a foreign Host: %d, want 403", code)
	}
	if code, _, _ := g.call(t, "GET", "/", ""); code != 200 {
		t.Errorf("UI on loopback: %d", code)
	}

	// Without a UI, / is not served.
	h := newFixture(t, httpapi.Options{})
	if code, _, _ := h.call(t, "GET", "/", ""); code != http.StatusNotFound {
		t.Errorf("GET / without a UI: %d, want 404", code)
	}
}

// TestUIPathDotSegments: the token-free UI prefix must not cover a path that names
// something outside /ui/ once its escaped dot segments are read ("/ui/..%2fv1/...").
func TestUIPathDotSegments(t *testing.T) {
	var seen []string
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.Path)
		_, _ = w.Write([]byte("ui"))
	})
	f := newFixture(t, httpapi.Options{Tokens: []string{token}, UI: ui})
	for _, p := range []string{"/ui/..%2fv1%2fsandboxes", "/ui/%2e%2e/v1/sandboxes", "/ui/.%2fapp.js", "/ui//app.js"} {
		if code, _, _ := f.call(t, "GET", p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", p, code)
		}
	}
	if len(seen) != 0 {
		t.Errorf("the UI handler got %q without a token", seen)
	}
	if code, _, _ := f.call(t, "GET", "/ui/", ""); code != 200 {
		t.Errorf("GET /ui/: %d", code)
	}
}
