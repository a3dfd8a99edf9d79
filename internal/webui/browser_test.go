package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/store/memstore"
)

// cdp is a minimal Chrome DevTools Protocol client: calls by id, events ignored.
type cdp struct {
	c    *websocket.Conn
	mu   sync.Mutex
	next int
	wait map[int]chan cdpReply
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func dialCDP(ctx context.Context, t *testing.T, url string) *cdp {
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("devtools: %v", err)
	}
	c.SetReadLimit(64 << 20)
	d := &cdp{c: c, wait: map[int]chan cdpReply{}}
	go func() {
		for {
			_, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			var m struct {
				ID int `json:"id"`
				cdpReply
			}
			if json.Unmarshal(msg, &m) != nil || m.ID == 0 {
				continue
			}
			d.mu.Lock()
			ch := d.wait[m.ID]
			delete(d.wait, m.ID)
			d.mu.Unlock()
			if ch != nil {
				ch <- m.cdpReply
			}
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	return d
}

func (d *cdp) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	d.mu.Lock()
	d.next++
	id := d.next
	ch := make(chan cdpReply, 1)
	d.wait[id] = ch
	d.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b, _ := json.Marshal(msg)
	if err := d.c.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		return r.Result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab driven through the protocol.
type page struct {
	t       *testing.T
	ctx     context.Context
	d       *cdp
	session string
}

// eval runs a JavaScript expression in the page and returns its value as JSON.
func (p *page) eval(expr string) json.RawMessage {
	p.t.Helper()
	res, err := p.d.call(p.ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	})
	if err != nil {
		p.t.Fatal(err)
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		p.t.Fatal(err)
	}
	if r.Exception != nil {
		p.t.Fatalf("%s: %s", expr, r.Exception.Text)
	}
	return r.Result.Value
}

// waitText polls a string expression until ok accepts it.
func (p *page) waitText(what, expr string, ok func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var s string
	for {
		// The page may not be there yet: an exception is a value to wait past.
		_ = json.Unmarshal(p.eval(`(() => { try { return String(`+expr+`); } catch (e) { return "exception: " + e; } })()`), &s)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waiting for %s: last value %q", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrowserWithToken drives the page in headless Chromium against a moatd that wants a
// token: the page asks for it and keeps it; the terminal WebSocket carries it as the
// subprotocol (and the CSP allows the socket), takes typed keys, follows a window resize and
// shows the exit code; exec, upload and destroy go through with it.
func TestBrowserWithToken(t *testing.T) {
	const tok = "browser/test+token"
	// The fake's stop answers as a backend without the ability does.
	noStop := fake.WithFault(fake.OpStop, func(context.Context) error { return errdefs.Unsupportedf("fake: stop is not supported here") })
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{Backend: "fake"}}, moat.WithoutRegistered(), moat.WithBackend("fake", fake.New(noStop)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	h := httpapi.New(m, httpapi.Options{Tokens: []string{tok}, UI: Handler()})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); _ = h.Shutdown(context.Background()) })
	c, err := client.New(srv.URL, client.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.Create(context.Background(), moat.Spec{Name: "term"})
	if err != nil {
		t.Fatal(err)
	}

	p := openPage(t, srv.URL+"/#sandbox/"+sb.ID()+"/terminal")

	// The API answered 401: the page asks for the token.
	p.waitText("the token dialog", `String(document.getElementById("login").open)`, func(s string) bool { return s == "true" })
	p.eval(`document.getElementById("login-token").value = ` + jsString(tok) + `; document.getElementById("login-form").requestSubmit(); ""`)
	p.waitText("the sandbox row", `document.getElementById("sb-rows").textContent`, func(s string) bool { return strings.Contains(s, sb.ID()) })
	if got := p.waitText("the stored token", `sessionStorage.getItem("moat.token")`, func(string) bool { return true }); got != tok {
		t.Errorf("sessionStorage token %q", got)
	}

	p.eval(`document.getElementById("term-form").requestSubmit(); ""`)
	term := `document.getElementById("term").textContent`
	first := p.waitText("the terminal's first line", term, func(s string) bool { return strings.Contains(s, "argv sh size ") })
	sz := regexp.MustCompile(`size (\d+)x(\d+)`).FindStringSubmatch(first)
	if sz == nil || sz[1] == "0" || sz[2] == "0" {
		t.Errorf("initial size in %q", first)
	}
	// Keys as typed, on the terminal element.
	p.eval(`(() => { const t = document.getElementById("term");
		for (const key of [..."echo hi", "Enter"]) t.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true, cancelable: true}));
		return ""; })()`)
	p.waitText("the echoed line", term, func(s string) bool { return strings.Contains(s, "> echo hi") })

	// A smaller window: the page sends a resize.
	if _, err := p.d.call(p.ctx, p.session, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": 700, "height": 600, "deviceScaleFactor": 1, "mobile": false,
	}); err != nil {
		t.Fatal(err)
	}
	after := p.waitText("a resize", term, func(s string) bool { return regexp.MustCompile(`\nsize \d+x\d+`).MatchString(s) })
	nsz := regexp.MustCompile(`\nsize (\d+)x(\d+)`).FindStringSubmatch(after)
	if nsz != nil && sz != nil && nsz[2] == sz[2] {
		t.Errorf("columns did not change on resize: %v then %v", sz, nsz)
	}

	p.eval(`(() => { const t = document.getElementById("term");
		for (const key of [..."exit 3", "Enter"]) t.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true, cancelable: true}));
		return ""; })()`)
	p.waitText("the exit code", `document.getElementById("term-status").textContent`, func(s string) bool { return s == "exited with code 3" })

	// Exec: argv split by the page's rule, output and exit code shown.
	p.eval(`document.querySelector('#subtabs [data-tab="exec"]').click();
		document.getElementById("exec-cmd").value = "echo 'a  b' c";
		document.getElementById("exec-form").requestSubmit(); ""`)
	p.waitText("the exec output", `document.getElementById("exec-stdout").textContent`, func(s string) bool { return s == "a  b c\n" })
	if code := p.waitText("the exit code", `document.getElementById("exec-code").textContent`, func(s string) bool { return s != "" }); code != "0" {
		t.Errorf("exec exit code %q", code)
	}

	// Files: upload into the listed directory, then it is listed and in the sandbox.
	p.eval(`document.querySelector('#subtabs [data-tab="files"]').click();
		document.getElementById("files-path").value = "/workspace";
		const dt = new DataTransfer();
		dt.items.add(new File(["uploaded <b>bytes</b>"], "up <1>.txt"));
		document.getElementById("upload-file").files = dt.files;
		document.getElementById("upload-form").requestSubmit(); ""`)
	p.waitText("the uploaded file in the list", `document.getElementById("files-rows").textContent`, func(s string) bool { return strings.Contains(s, "up <1>.txt") })
	var got strings.Builder
	if err := sb.ReadFile(p.ctx, "/workspace/up <1>.txt", &got); err != nil || got.String() != "uploaded <b>bytes</b>" {
		t.Errorf("uploaded file: %q, %v", got.String(), err)
	}

	// Lifecycle: an ability the backend lacks is reported, not hidden (this fake does not
	// stop); destroy asks first and then removes the sandbox.
	p.eval(`document.querySelector('#d-actions [data-op="stop"]').click(); ""`)
	p.waitText("the unsupported stop", `document.getElementById("flash").textContent`, func(s string) bool { return strings.HasPrefix(s, "unsupported: ") })
	p.eval(`window.confirm = () => true; document.querySelector('#d-actions [data-op="destroy"]').click(); ""`)
	p.waitText("the destroyed sandbox gone from the list", `document.getElementById("sb-rows").textContent`, func(s string) bool { return !strings.Contains(s, sb.ID()) })
	if _, err := c.Get(p.ctx, sb.ID()); err == nil {
		t.Errorf("the sandbox is still there after Destroy in the page")
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
