package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	_ "github.com/moatsh/moat/backends/e2b"
	_ "github.com/moatsh/moat/backends/vercel"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/moattest"
)

// serve runs the UI the way moatd does: httpapi with the UI mounted, over the fake backend.
func serve(t *testing.T, opts httpapi.Options) moattest.Target {
	t.Helper()
	opts.UI = Handler()
	return moattest.Serve(t, moattest.Local(t), opts)
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestServesAssetsWithTypesAndCacheHeaders(t *testing.T) {
	tg := serve(t, httpapi.Options{Tokens: []string{"ui-test-token"}}) // the page loads without it
	as, err := load()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/":           "text/html; charset=utf-8",
		"/ui/app.js":  "text/javascript; charset=utf-8",
		"/ui/app.css": "text/css; charset=utf-8",
	}
	for p := range as {
		if _, ok := want[p]; !ok {
			t.Errorf("asset %s is not checked by this test", p)
		}
	}
	for p, ct := range want {
		resp, body := get(t, tg.Server.URL+p)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != ct {
			t.Errorf("GET %s: Content-Type %q, want %q", p, got, ct)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", p, got)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"} {
			if resp.Header.Get(k) != v {
				t.Errorf("GET %s: %s %q, want %q", p, k, resp.Header.Get(k), v)
			}
		}
		if len(body) == 0 || string(body) != string(as[p].body) {
			t.Errorf("GET %s: body is not the embedded file", p)
		}
		etag := resp.Header.Get("ETag")
		if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
			t.Errorf("GET %s: ETag %q", p, etag)
			continue
		}
		// A revalidation is a 304 without a body; a stale tag gets the file.
		resp, body = get(t, tg.Server.URL+p, "If-None-Match", etag)
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("GET %s with its ETag: %d (%d bytes), want 304", p, resp.StatusCode, len(body))
		}
		if resp, _ = get(t, tg.Server.URL+p, "If-None-Match", `"stale"`); resp.StatusCode != 200 {
			t.Errorf("GET %s with a stale ETag: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, tg.Server.URL+"/ui/nope.js"); resp.StatusCode != 404 {
		t.Errorf("unknown asset: %d, want 404", resp.StatusCode)
	}
	// The API behind the same server still wants its token.
	if resp, _ := get(t, tg.Server.URL+"/v1/sandboxes"); resp.StatusCode != 401 {
		t.Errorf("API without a token: %d, want 401", resp.StatusCode)
	}
}

var (
	externalURL = regexp.MustCompile(`(?i)(https?:|wss?:|ftp:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	htmlRef     = regexp.MustCompile(`(?i)\b(src|href|action|srcset|poster|data)\s*=\s*"([^"]*)"`)
	cssURL      = regexp.MustCompile(`(?i)(url\(|@import)`)
)

// TestNothingExternal keeps every asset self-contained: no http(s) URLs anywhere, index
// references only embedded files (or data:), and the CSS loads nothing.
func TestNothingExternal(t *testing.T) {
	as, err := load()
	if err != nil {
		t.Fatal(err)
	}
	for p, a := range as {
		low := strings.ToLower(string(a.body))
		for _, bad := range []string{"http://", "https://", "ws://", "wss://"} {
			if strings.Contains(low, bad) {
				t.Errorf("%s contains %q", p, bad)
			}
		}
		if m := externalURL.FindString(string(a.body)); m != "" {
			t.Errorf("%s contains what looks like an external URL: %q", p, m)
		}
	}
	index := string(as["/"].body)
	refs := htmlRef.FindAllStringSubmatch(index, -1)
	if len(refs) < 2 {
		t.Fatalf("index.html references %d files; expected at least the script and the style", len(refs))
	}
	for _, m := range refs {
		ref := m[2]
		switch {
		case strings.HasPrefix(ref, "data:"):
		case as[ref] != nil && ref != "/":
		default:
			t.Errorf("index.html %s=%q is not an embedded asset", m[1], ref)
		}
	}
	if cssURL.MatchString(string(as["/ui/app.css"].body)) {
		t.Errorf("app.css loads something (url( or @import)")
	}
	if strings.Contains(index, "<script>") || strings.Contains(index, "<style") || regexp.MustCompile(`\son[a-z]+=`).MatchString(index) {
		t.Errorf("index.html has inline script, style or event handlers (the CSP forbids them)")
	}
}

// TestNoHTMLFromData guards the escaping rule: the script never turns strings into markup.
func TestNoHTMLFromData(t *testing.T) {
	as, err := load()
	if err != nil {
		t.Fatal(err)
	}
	js := string(as["/ui/app.js"].body)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser", "createContextualFragment"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

// TestScriptLogic runs the page's parsers and terminal screen under node, without a DOM.
func TestScriptLogic(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Require(t, "node", "node is not installed: "+err.Error())
	}
	as, err := load()
	if err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(t.TempDir(), "app.js")
	if err := os.WriteFile(app, as["/ui/app.js"].body, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, filepath.Join("testdata", "logic.js"), app).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var r struct {
		Argv    []json.RawMessage `json:"argv"`
		Bytes   []int64           `json:"bytes"`
		Pairs   map[string]string `json:"pairs"`
		Lines   []string          `json:"lines"`
		Col     int               `json:"col"`
		Cleared []string          `json:"cleared"`
		Keys    []*string         `json:"keys"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	wantArgv := []string{
		`["ls","-l","/workspace"]`,
		`["echo","a  b","c \"d\" \\ e","f g"]`,
		`["sh","-c","echo $HOME | wc -c"]`,
		`[""]`,
		`"ERR invalid_argument: unterminated ' quote"`,
	}
	for i, w := range wantArgv {
		if i >= len(r.Argv) || string(r.Argv[i]) != w {
			t.Errorf("splitArgv case %d: %s, want %s", i, r.Argv[i], w)
		}
	}
	if want := []int64{512 << 20, 1 << 30, 1024, 1536}; !equal(r.Bytes, want) {
		t.Errorf("parseBytes: %v, want %v", r.Bytes, want)
	}
	if r.Pairs["A"] != "1" || r.Pairs["B"] != "x=y" || len(r.Pairs) != 2 {
		t.Errorf("parsePairs: %v", r.Pairs)
	}
	// Colours and titles stripped, \r\n new lines, backspace-space-backspace and erase-line
	// edit the line as a terminal would.
	wantLines := []string{"$ ls", "file1  file2", "$ echo hi", "hi", "$ a!"}
	if strings.Join(r.Lines, "|") != strings.Join(wantLines, "|") || r.Col != 4 {
		t.Errorf("screen %q col %d, want %q col 4", r.Lines, r.Col, wantLines)
	}
	if len(r.Cleared) != 1 || r.Cleared[0] != "" {
		t.Errorf("after ESC[2J: %q", r.Cleared)
	}
	wantKeys := []string{"\r", "\x03", "\x04", "\x1b[A", "x"}
	for i, w := range wantKeys {
		if r.Keys[i] == nil || *r.Keys[i] != w {
			t.Errorf("key %d: %v, want %q", i, r.Keys[i], w)
		}
	}
	if r.Keys[5] != nil {
		t.Errorf("Shift alone sends %q", *r.Keys[5])
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// chromiumCmd is headless Chromium with args. Everything but loopback is unresolvable, so a
// page that reached out would fail rather than leak.
func chromiumCmd(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		testenv.Require(t, "chromium", "no chromium binary (apt-get install chromium)")
	}
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
		"--disable-default-apps", "--no-default-browser-check", "--disable-dev-shm-usage",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
	}
	// Chromium's helper processes may still write to the profile briefly after the browser
	// ends, so the profile is removed best-effort rather than by t.TempDir.
	profile, err := os.MkdirTemp("", "moat-webui-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 20 && os.RemoveAll(profile) != nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	})
	base = append(base, "--user-data-dir="+profile)
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	// Its own process group, so that ending it ends its helper processes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// chromium runs headless Chromium to the end and returns what it printed.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := chromiumCmd(ctx, t, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\nstderr:\n%s", err, stderr.String())
	}
	return stdout.String()
}

// startChromium starts headless Chromium with DevTools on a loopback port and returns the
// browser's DevTools WebSocket URL; the browser is killed when t ends.
func startChromium(ctx context.Context, t *testing.T) string {
	t.Helper()
	cmd := chromiumCmd(ctx, t, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	var seen []string
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "DevTools listening on "); ok {
			go func() { // keep draining so Chromium never blocks on a full pipe
				for sc.Scan() {
				}
			}()
			return strings.TrimSpace(u)
		}
		seen = append(seen, line)
	}
	t.Fatalf("chromium did not announce DevTools:\n%s", strings.Join(seen, "\n"))
	return ""
}

// TestBrowserRendersSandboxList loads the page in headless Chromium and checks that the
// sandbox list shows a sandbox created through the API, and the backends view's data.
func TestBrowserRendersSandboxList(t *testing.T) {
	tg := serve(t, httpapi.Options{})
	info, err := tg.API.Create(context.Background(), moat.Spec{Name: "ui-check", SessionID: "sess-<b>&"})
	if err != nil {
		t.Fatal(err)
	}
	id := info.ID()
	dom := chromium(t, "--dump-dom", "--virtual-time-budget=10000", tg.Server.URL+"/")
	for _, want := range []string{
		`data-id="` + id + `"`,              // the row
		`>ui-check</td>`,                    // its name
		`sess-&lt;b&gt;&amp;`,               // API text is escaped, not markup
		`<option value="fake">fake — ready`, // backends were loaded into the create form
		`1 sandbox</span>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if strings.Contains(dom, "sess-<b>") {
		t.Errorf("a session id was rendered as markup")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	// MOAT_WEBUI_SCREENSHOT=DIR saves what the page looks like, to look at by eye.
	if dir := os.Getenv("MOAT_WEBUI_SCREENSHOT"); dir != "" {
		if err := info.WriteFile(context.Background(), "/workspace/hello.txt", strings.NewReader("hello\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for name, hash := range map[string]string{
			"sandboxes": "", "backends": "#backends", "settings": "#settings", "sessions": "#sessions",
			"details": "#sandbox/" + id + "/details", "files": "#sandbox/" + id + "/files",
			"terminal": "#sandbox/" + id + "/terminal",
		} {
			shot := filepath.Join(dir, "webui-"+name+".png")
			chromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", "--virtual-time-budget=10000", tg.Server.URL+"/"+hash)
			t.Logf("screenshot: %s", shot)
		}
	}
}

// TestBrowserSettingsShowStateNotSecrets renders Settings with one token stored through the
// API and one from the environment: the page says where each comes from and holds neither.
func TestBrowserSettingsShowStateNotSecrets(t *testing.T) {
	const stored, fromEnv = "stored-vercel-secret-1", "env-e2b-secret-2"
	t.Setenv("E2B_API_KEY", fromEnv)
	var hosted []moat.Option
	for _, n := range []string{"vercel", "e2b"} {
		f, ok := backend.Lookup(n)
		if !ok {
			t.Fatalf("%s is not registered", n)
		}
		hosted = append(hosted, moat.WithFactory(n, f))
	}
	tg := moattest.Serve(t, moattest.NewManagerWith(t, hosted).Target(), httpapi.Options{UI: Handler()})
	req, err := http.NewRequest("PUT", tg.Server.URL+"/v1/settings/backends/vercel",
		strings.NewReader(`{"token":"`+stored+`","team_id":"team_<i>42"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT settings: %d", resp.StatusCode)
	}
	dom := chromium(t, "--dump-dom", "--virtual-time-budget=10000", tg.Server.URL+"/#settings")
	for _, want := range []string{
		`data-backend="vercel"`,
		`configured — from env E2B_API_KEY`, // e2b's token state
		`value="team_&lt;i&gt;42"`,          // a plain value, as an attribute, escaped
		`apply at once`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("settings page lacks %q", want)
		}
	}
	if n := strings.Count(dom, `>configured</span>`); n < 2 { // vercel's badge and its token row
		t.Errorf("vercel shown as configured %d times, want 2", n)
	}
	for _, secret := range []string{stored, fromEnv} {
		if strings.Contains(dom, secret) {
			t.Errorf("the page holds the secret %q", secret)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
