// Package httpapi answers "how is a moat Manager served over HTTP?": the v1 JSON API
// (sandboxes, exec with buffered, NDJSON and WebSocket streaming, files and tar archives,
// the PTY terminal, backends, backend settings, sessions), health, readiness and
// Prometheus metrics, with bearer-token auth, request ids, access logs, body limits and
// graceful shutdown. The wire types live in apitype; docs/api.md and openapi.json describe
// the routes.
package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// OpenAPI is the OpenAPI 3.1 document of the API, served at GET /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Tokens are the accepted bearer tokens. They are hashed at New and never kept or
	// logged in clear. With none, the API is open (CheckListen allows that on loopback
	// only).
	Tokens []string
	// Logger receives access logs and errors; default discards.
	Logger *slog.Logger
	// MaxJSONBytes bounds JSON request bodies (exec stdin included); default 8 MiB.
	MaxJSONBytes int64
	// MaxFileBytes bounds one uploaded file; default 1 GiB.
	MaxFileBytes int64
	// MaxArchiveBytes bounds an uploaded or downloaded tar archive; default 1 GiB.
	MaxArchiveBytes int64
	// MaxArchiveEntries bounds the entries of a tar archive; default 100000.
	MaxArchiveEntries int
	// MaxExecOutput caps each stream of a buffered exec answer, whatever the request asks;
	// default 16 MiB.
	MaxExecOutput int64
	// AllowedOrigins are extra WebSocket origin patterns (the request's host is always
	// allowed); see github.com/coder/websocket AcceptOptions.OriginPatterns.
	AllowedOrigins []string
	// UI, when set, is served at GET / and GET /ui/... without a token (the page asks for
	// one and sends it to the API), behind the same Host check and access log as the API.
	// moatd sets it to the embedded web UI.
	UI http.Handler
}

func (o *Options) setDefaults(m *moat.Manager) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxJSONBytes <= 0 {
		o.MaxJSONBytes = 8 << 20
	}
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = 1 << 30
	}
	if o.MaxArchiveBytes <= 0 {
		o.MaxArchiveBytes = 1 << 30
	}
	if o.MaxArchiveEntries <= 0 {
		o.MaxArchiveEntries = 100000
	}
	if o.MaxExecOutput <= 0 {
		o.MaxExecOutput = 16 << 20
	}
}

// Server serves the API for one Manager. It is an http.Handler; use Shutdown after the
// http.Server's own Shutdown to finish or cancel what is still running (WebSockets, which
// http.Server does not track).
type Server struct {
	m       *moat.Manager
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	tokens  [][sha256.Size]byte
	metrics *metrics
	routes  []string

	base     context.Context // canceled by Shutdown when the grace period ends
	cancel   context.CancelFunc
	inflight sync.WaitGroup
	draining atomic.Bool
}

// New returns a Server for m.
func New(m *moat.Manager, opts Options) *Server {
	opts.setDefaults(m)
	s := &Server{m: m, opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	for _, t := range opts.Tokens {
		if t != "" {
			s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
		}
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.metrics = newMetrics(m)
	s.register()
	return s
}

// handle registers h under pattern ("GET /v1/...") and remembers it for Routes.
func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.routes = append(s.routes, pattern)
	s.mux.Handle(pattern, h)
}

// Routes returns every registered pattern ("METHOD /path"), in registration order.
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

func (s *Server) register() {
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.handle("GET /metrics", s.metrics.handler().ServeHTTP)
	s.handle("GET /v1/openapi.json", s.openapi)

	s.handle("POST /v1/sandboxes", s.createSandbox)
	s.handle("GET /v1/sandboxes", s.listSandboxes)
	s.handle("GET /v1/sandboxes/{id}", s.getSandbox)
	s.handle("DELETE /v1/sandboxes/{id}", s.destroySandbox)
	s.handle("POST /v1/sandboxes/{id}/stop", s.stopSandbox)
	s.handle("POST /v1/sandboxes/{id}/start", s.startSandbox)
	s.handle("POST /v1/sandboxes/{id}/pause", s.pauseSandbox)
	s.handle("POST /v1/sandboxes/{id}/resume", s.resumeSandbox)
	s.handle("POST /v1/sandboxes/{id}/snapshots", s.snapshotSandbox)
	s.handle("POST /v1/sandboxes/{id}/ports/{port}", s.exposePort)

	s.handle("POST /v1/sandboxes/{id}/exec", s.exec)
	s.handle("GET /v1/sandboxes/{id}/exec/ws", s.execWS)
	s.handle("GET /v1/sandboxes/{id}/terminal", s.terminal)

	s.handle("PUT /v1/sandboxes/{id}/files", s.putFile)
	s.handle("GET /v1/sandboxes/{id}/files", s.getFile)
	s.handle("DELETE /v1/sandboxes/{id}/files", s.deleteFile)
	s.handle("PUT /v1/sandboxes/{id}/dirs", s.putDir)
	s.handle("PUT /v1/sandboxes/{id}/archive", s.putArchive)
	s.handle("GET /v1/sandboxes/{id}/archive", s.getArchive)

	s.handle("GET /v1/backends", s.backends)
	s.handle("GET /v1/settings/backends", s.listSettings)
	s.handle("GET /v1/settings/backends/{name}", s.getSettings)
	s.handle("PUT /v1/settings/backends/{name}", s.putSettings)

	s.handle("GET /v1/sessions", s.listSessions)
	s.handle("GET /v1/sessions/{session}", s.getSession)
	s.handle("PUT /v1/sessions/{session}", s.putSession)
	s.handle("PATCH /v1/sessions/{session}", s.patchSession)
	s.handle("DELETE /v1/sessions/{session}", s.deleteSession)
	s.handle("DELETE /v1/sessions/{session}/sandboxes", s.destroySessionSandboxes)
	s.handle("GET /v1/sessions/{session}/backend", s.getSessionBackend)
	s.handle("PUT /v1/sessions/{session}/backend", s.putSessionBackend)
	s.handle("DELETE /v1/sessions/{session}/backend", s.deleteSessionBackend)

	if s.opts.UI != nil {
		s.handle("GET /{$}", s.opts.UI.ServeHTTP)
		s.handle("GET /ui/", s.opts.UI.ServeHTTP)
	}

	// Anything else under /v1/ is a JSON 405 (a route without that method) or 404 rather
	// than the mux's text answer. This catch-all matches every method, so the mux's own 405
	// never happens below /v1/: allowed works it out.
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if allow := s.allowed(r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, apitype.Error{Error: apitype.ErrorBody{
				Kind: errdefs.KindInvalidArgument, Message: fmt.Sprintf("httpapi: %s %s: method not allowed (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))}})
			return
		}
		s.writeError(w, r, errdefs.NotFoundf("httpapi: no route %s %s", r.Method, r.URL.Path))
	})
}

// allowed lists the methods that r's path has a route for (HEAD with GET), or nil.
func (s *Server) allowed(r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/v1/" {
			out = append(out, m)
		}
	}
	return out
}

// public routes need no token: probes and the API description.
func public(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/v1/openapi.json"
}

// ServeHTTP runs the middleware chain: request id, access log, metrics, auth, then the route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	start := time.Now()
	id := requestID(r.Header.Get("X-Request-Id"))
	w.Header().Set("X-Request-Id", id)
	sw := &statusWriter{ResponseWriter: w}
	// Every request is a remote caller's: the manager refuses it host paths the operator
	// did not allow (moat.WithCaller).
	r = r.WithContext(moat.WithCaller(context.WithValue(r.Context(), reqIDKey{}, id), moat.CallerRemote))
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic in handler", "request_id", id, "panic", p)
			if !sw.wroteHeader {
				s.writeError(sw, r, errdefs.New(errdefs.ErrUnavailable, "httpapi: internal error"))
			}
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		d := time.Since(start)
		s.metrics.observeRequest(r.Method, route, sw.status(), d)
		s.log.Info("http request", "request_id", id, "method", r.Method, "path", r.URL.Path,
			"route", route, "status", sw.status(), "bytes", sw.bytes, "duration_ms", d.Milliseconds(),
			"remote", r.RemoteAddr)
	}()
	if len(s.tokens) == 0 && !isLoopbackHost(r.Host) {
		// Without tokens only loopback clients are expected; a foreign Host header is a
		// DNS-rebinding page in a browser reaching for 127.0.0.1.
		s.writeError(sw, r, errdefs.Newf(errdefs.ErrPermissionDenied, "httpapi: host %q is not a loopback name and the server has no API token", r.Host))
		return
	}
	if r.Method == http.MethodPost && !isJSON(r.Header.Get("Content-Type")) {
		// Browsers send form and text/plain POSTs cross-origin without asking: requiring
		// JSON keeps such pages from driving the API.
		sw.Header().Set("Accept", "application/json")
		writeJSON(sw, http.StatusUnsupportedMediaType, apitype.Error{Error: apitype.ErrorBody{
			Kind: errdefs.KindInvalidArgument, Message: "httpapi: POST needs Content-Type: application/json"}})
		return
	}
	if !public(r.URL.Path) && !s.uiPath(r.URL.Path) && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="moat"`)
		s.writeError(sw, r, errdefs.New(errdefs.ErrUnauthenticated, "httpapi: missing or wrong bearer token"))
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// uiPath reports whether p is the web UI's (static files, no secrets: served without a
// token so that the page can ask for one). p must be clean: the mux hands an escaped dot
// segment ("/ui/..%2fv1/sandboxes") to the UI as "/ui/../v1/sandboxes", and no UI handler
// should have to know that it runs without a token.
func (s *Server) uiPath(p string) bool {
	return s.opts.UI != nil && (p == "/" || strings.HasPrefix(p, "/ui/") && path.Clean(p) == strings.TrimSuffix(p, "/"))
}

// WebSocket subprotocols. Browsers cannot set an Authorization header on a WebSocket, so a
// WebSocket upgrade may carry the bearer token as a subprotocol instead:
// Sec-WebSocket-Protocol: moat.v1, moat.bearer.<base64url(token), unpadded>. The server
// answers with WebSocketProtocol, never echoing the token.
const (
	WebSocketProtocol    = "moat.v1"
	WebSocketTokenPrefix = "moat.bearer."
)

// bearerToken returns the request's bearer token: the Authorization header, else (on a
// WebSocket upgrade only) the moat.bearer.* subprotocol.
func bearerToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		return strings.TrimSpace(tok), true
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if enc, ok := strings.CutPrefix(strings.TrimSpace(p), WebSocketTokenPrefix); ok {
				tok, err := base64.RawURLEncoding.DecodeString(enc)
				return string(tok), err == nil
			}
		}
	}
	return "", false
}

// authorized checks the bearer token against every configured hash in constant time.
func (s *Server) authorized(r *http.Request) bool {
	if len(s.tokens) == 0 {
		return true
	}
	tok, ok := bearerToken(r)
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for _, t := range s.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	return match == 1
}

// isJSON reports whether a Content-Type is application/json (parameters allowed).
func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// isLoopbackHost reports whether a Host header names this machine's loopback.
func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return isLoopback(strings.Trim(host, "[]"))
}

type reqIDKey struct{}

// RequestID returns the request id of a request handled by a Server ("" otherwise).
func RequestID(ctx context.Context) string {
	v, _ := ctx.Value(reqIDKey{}).(string)
	return v
}

// requestID keeps a caller's id when it is short and plain, else makes one.
func requestID(given string) string {
	if given != "" && len(given) <= 64 && strings.Trim(given, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == "" {
		return given
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// opContext returns a context for work done for r: canceled when the client goes away
// (r's context) or when Shutdown gives up waiting.
func (s *Server) opContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(s.base, cancel)
	return ctx, func() { stop(); cancel() }
}

// Shutdown stops accepting work as ready (readyz answers 503), waits for in-flight requests
// (including WebSockets) until ctx ends, then cancels what still runs — commands are
// killed — and waits for those handlers to return. Call it after http.Server.Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.log.Error("handlers still running 10s after cancel")
	}
	return ctx.Err()
}

// statusWriter records the status and size of an answer; it passes Flush and Hijack on.
type statusWriter struct {
	http.ResponseWriter
	code        int
	bytes       int64
	wroteHeader bool
	hijacked    bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) status() int {
	switch {
	case w.hijacked:
		return http.StatusSwitchingProtocols
	case !w.wroteHeader:
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if !w.wroteHeader {
			w.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}
