// Package daytonafake answers "how do I test Daytona clients without Daytona?": an in-memory
// HTTP server speaking the Daytona platform API (/api/sandbox...) and the per-sandbox
// toolbox API (/toolbox/{id}/process..., /files...) in their real wire format, with the
// commands and files of each sandbox held by a local moat backend (host, docker, ...).
//
// Mount it with httptest.NewServer(daytonafake.New(opts)); point clients at URL+"/api".
// Every Sandbox answer carries toolboxProxyUrl = URL+"/toolbox", so clients never hardcode
// it. Deviations from the real service, all deliberate: the socket.io event gateway is not
// served (the SDK falls back to polling), PTY, git, LSP, code-run and computer-use are
// absent, and signed preview URLs are path-based (URL+"/preview/{token}/") and proxy to
// 127.0.0.1:{port}, which reaches the sandbox only when its ports are host ports (the host
// backend).
package daytonafake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/backends/internal/fakeprovider"
	"github.com/moatsh/moat/errdefs"
)

// Options configure a Server.
type Options struct {
	// Token is the only API key accepted (Authorization: Bearer <Token>). Empty accepts any
	// non-empty bearer token.
	Token string
	// Backend runs each sandbox's commands and holds its files.
	Backend backend.Backend
	// StartPolls is how many GET /sandbox/{id} answers say "creating" before "started"
	// (default 1), so clients must poll as they do against the real service.
	StartPolls int
	// Image is put in the local CreateRequest when the sandbox names no snapshot.
	Image string
	// ExecFiles serves the file API through commands (package execfs) even when the local
	// backend has a native file API, so files and commands see the same paths. The host
	// backend needs it: its file API is rooted in a private directory, its commands are not.
	ExecFiles bool
	// Workdir is the local sandbox workdir (default "/"), where commands start when they
	// give no cwd.
	Workdir string
}

// Fault is an injected answer for the next requests: Status 0 only delays; ContentType
// defaults to application/json and Body to a NestJS-style error body.
type Fault = fakeprovider.Fault

// Server is the fake. It implements http.Handler and is safe for concurrent use.
type Server struct {
	opts Options
	mux  *http.ServeMux

	mu        sync.Mutex
	sandboxes map[string]*sbx
	snapshots map[string]string // snapshot name -> local image
	previews  map[string]preview
	running   int // session commands running now

	faults   fakeprovider.Faults
	requests fakeprovider.Counter
}

type preview struct {
	sandbox string
	port    int
}

type sbx struct {
	ID        string
	Name      string
	State     string
	polls     int
	inst      backend.Instance
	env       map[string]string
	labels    map[string]string
	snapshot  string
	user      string
	target    string
	public    bool
	cpu, mem  int
	disk      int
	createdAt time.Time
	sessions  map[string]*session
	// afterSnapshot is the state to return to when a snapshot completes.
	afterSnapshot string
}

// New returns a fake Daytona server.
func New(opts Options) *Server {
	if opts.StartPolls == 0 {
		opts.StartPolls = 1
	}
	if opts.Workdir == "" {
		opts.Workdir = "/"
	}
	s := &Server{
		opts:      opts,
		sandboxes: map[string]*sbx{},
		snapshots: map[string]string{},
		previews:  map[string]preview{},
	}
	m := http.NewServeMux()
	m.HandleFunc("POST /api/sandbox", s.createSandbox)
	m.HandleFunc("GET /api/sandbox", s.listSandboxes)
	m.HandleFunc("GET /api/sandbox/{id}", s.getSandbox)
	m.HandleFunc("DELETE /api/sandbox/{id}", s.deleteSandbox)
	m.HandleFunc("POST /api/sandbox/{id}/start", s.lifecycle("start"))
	m.HandleFunc("POST /api/sandbox/{id}/stop", s.lifecycle("stop"))
	m.HandleFunc("POST /api/sandbox/{id}/archive", s.lifecycle("archive"))
	m.HandleFunc("POST /api/sandbox/{id}/snapshot", s.snapshotSandbox)
	m.HandleFunc("GET /api/sandbox/{id}/toolbox-proxy-url", s.toolboxProxyURL)
	m.HandleFunc("GET /api/sandbox/{id}/ports/{port}/preview-url", s.previewURL(false))
	m.HandleFunc("GET /api/sandbox/{id}/ports/{port}/signed-preview-url", s.previewURL(true))
	m.HandleFunc("/preview/{token}/", s.servePreview)

	m.HandleFunc("POST /toolbox/{id}/process/execute", s.tb(s.execute))
	m.HandleFunc("POST /toolbox/{id}/process/session", s.tb(s.createSession))
	m.HandleFunc("GET /toolbox/{id}/process/session", s.tb(s.listSessions))
	m.HandleFunc("GET /toolbox/{id}/process/session/{sid}", s.tb(s.getSession))
	m.HandleFunc("DELETE /toolbox/{id}/process/session/{sid}", s.tb(s.deleteSession))
	m.HandleFunc("POST /toolbox/{id}/process/session/{sid}/exec", s.tb(s.sessionExec))
	m.HandleFunc("GET /toolbox/{id}/process/session/{sid}/command/{cid}", s.tb(s.getCommand))
	m.HandleFunc("GET /toolbox/{id}/process/session/{sid}/command/{cid}/logs", s.tb(s.commandLogs))
	m.HandleFunc("POST /toolbox/{id}/process/session/{sid}/command/{cid}/input", s.tb(s.sendInput))
	m.HandleFunc("GET /toolbox/{id}/files", s.tb(withPath(s.listFiles)))
	m.HandleFunc("DELETE /toolbox/{id}/files", s.tb(withPath(s.deleteFile)))
	m.HandleFunc("GET /toolbox/{id}/files/info", s.tb(withPath(s.fileInfo)))
	m.HandleFunc("GET /toolbox/{id}/files/download", s.tb(withPath(s.downloadFile)))
	m.HandleFunc("POST /toolbox/{id}/files/bulk-download", s.tb(s.bulkDownload))
	m.HandleFunc("POST /toolbox/{id}/files/bulk-upload", s.tb(s.bulkUpload))
	m.HandleFunc("POST /toolbox/{id}/files/upload", s.tb(withPath(s.uploadOne)))
	m.HandleFunc("POST /toolbox/{id}/files/upload-v2", s.tb(withPath(s.uploadOne)))
	m.HandleFunc("POST /toolbox/{id}/files/folder", s.tb(withPath(s.createFolder)))
	m.HandleFunc("POST /toolbox/{id}/files/permissions", s.tb(withPath(s.setPermissions)))
	m.HandleFunc("GET /toolbox/{id}/version", s.tb(func(w http.ResponseWriter, r *http.Request, sb *sbx) {
		writeJSON(w, http.StatusOK, map[string]string{"version": "v0.190.0-fake"})
	}))
	s.mux = m
	return s
}

// InjectFaults makes the next n requests (any endpoint) answer with f.
func (s *Server) InjectFaults(n int, f Fault) {
	if n > 0 {
		f.Count = n
		s.faults.Inject(f)
	}
}

// Fail429 makes the next n requests answer 429 with Retry-After: retryAfter seconds.
func (s *Server) Fail429(n int, retryAfter int) {
	s.InjectFaults(n, Fault{Status: http.StatusTooManyRequests, RetryAfter: strconv.Itoa(retryAfter)})
}

// Fail500 makes the next n requests answer 500.
func (s *Server) Fail500(n int) { s.InjectFaults(n, Fault{Status: http.StatusInternalServerError}) }

// DelayNext delays the next n requests by d before serving them normally.
func (s *Server) DelayNext(n int, d time.Duration) { s.InjectFaults(n, Fault{Delay: d}) }

// Vanish deletes sandbox id behind its owner's back, as the provider's auto-delete would.
// It reports whether the sandbox existed.
func (s *Server) Vanish(id string) bool {
	sb, ok := fakeprovider.Remove(&s.mu, s.sandboxes, id)
	if !ok {
		return false
	}
	s.destroyLocal(sb)
	return true
}

// Requests returns how many requests the server has received.
func (s *Server) Requests() int { return s.requests.Total() }

// RunningCommands returns how many session commands are running now.
func (s *Server) RunningCommands() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// SandboxIDs returns the ids of the live sandboxes, sorted.
func (s *Server) SandboxIDs() []string { return fakeprovider.Keys(&s.mu, s.sandboxes) }

// Close destroys every sandbox's local instance.
func (s *Server) Close() {
	for _, sb := range fakeprovider.TakeAll(&s.mu, &s.sandboxes) {
		s.destroyLocal(sb)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Count(r)
	if f, ok := s.faults.Take(r.URL.Path); ok {
		if f.Status == http.StatusTooManyRequests {
			w.Header().Set("X-RateLimit-Limit-authenticated", "50000")
			w.Header().Set("X-RateLimit-Remaining-authenticated", "0")
			w.Header().Set("X-RateLimit-Reset-authenticated", "1")
		}
		if fakeprovider.Apply(w, r, f, "application/json", func(w http.ResponseWriter, r *http.Request, status int) {
			msg := http.StatusText(status)
			if status == http.StatusTooManyRequests {
				msg = "ThrottlerException: Too Many Requests"
			}
			apiError(w, r, status, msg)
		}) {
			return
		}
	}
	if strings.HasPrefix(r.URL.Path, "/preview/") {
		s.mux.ServeHTTP(w, r) // signed URLs carry their own token
		return
	}
	if !s.authorized(r) {
		// The API's AllExceptionsFilter answer for an UnauthorizedException.
		apiError(w, r, http.StatusUnauthorized, "Unauthorized")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(r *http.Request) bool {
	tok, ok := fakeprovider.Bearer(r)
	return ok && (s.opts.Token == "" || tok == s.opts.Token)
}

// apiError writes the platform API's error shape (NestJS AllExceptionsFilter).
func apiError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	writeJSON(w, status, map[string]any{
		"path":       r.URL.RequestURI(),
		"timestamp":  time.Now().UTC().Format(time.RFC3339Nano),
		"statusCode": status,
		"error":      http.StatusText(status),
		"message":    msg,
	})
}

// daemonError writes the toolbox daemon's error shape (common-go ErrorResponse).
func daemonError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	writeJSON(w, status, map[string]any{
		"statusCode": status,
		"message":    msg,
		"code":       code,
		"timestamp":  time.Now().UTC().Format(time.RFC3339Nano),
		"path":       r.URL.Path,
		"method":     r.Method,
	})
}

var writeJSON = fakeprovider.WriteJSON

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// --- platform API ---

type createBody struct {
	Name      string `json:"name"`
	Snapshot  string `json:"snapshot"`
	BuildInfo *struct {
		DockerfileContent string `json:"dockerfileContent"`
	} `json:"buildInfo"`
	User     string            `json:"user"`
	Env      map[string]string `json:"env"`
	Labels   map[string]string `json:"labels"`
	Public   bool              `json:"public"`
	Target   string            `json:"target"`
	CPU      int               `json:"cpu"`
	Memory   int               `json:"memory"`
	Disk     int               `json:"disk"`
	Volumes  []json.RawMessage `json:"volumes"`
	AutoStop *int              `json:"autoStopInterval"`
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var in createBody
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		apiError(w, r, http.StatusBadRequest, "Invalid request body: "+err.Error())
		return
	}
	image := s.opts.Image
	if in.Snapshot != "" {
		s.mu.Lock()
		img, ok := s.snapshots[in.Snapshot]
		s.mu.Unlock()
		if !ok {
			apiError(w, r, http.StatusNotFound, fmt.Sprintf("Snapshot %s not found. Did you add it through the Daytona Dashboard?", in.Snapshot))
			return
		}
		image = img
	}
	if in.Name != "" {
		s.mu.Lock()
		for _, o := range s.sandboxes {
			if o.Name == in.Name {
				s.mu.Unlock()
				apiError(w, r, http.StatusConflict, fmt.Sprintf("Sandbox with name %s already exists", in.Name))
				return
			}
		}
		s.mu.Unlock()
	}
	id := newID()
	inst, err := s.opts.Backend.Create(r.Context(), &backend.CreateRequest{
		ID: "daytonafake-" + id, Image: image, Env: in.Env, Labels: map[string]string{"daytonafake": "1"},
		Workdir: s.opts.Workdir,
	})
	if err != nil {
		apiError(w, r, http.StatusInternalServerError, "runner failed to create sandbox: "+err.Error())
		return
	}
	name := in.Name
	if name == "" {
		name = id
	}
	sb := &sbx{
		ID: id, Name: name, State: "creating", polls: s.opts.StartPolls, inst: inst,
		env: nonNil(in.Env), labels: nonNil(in.Labels), snapshot: in.Snapshot, user: in.User,
		target: in.Target, public: in.Public, cpu: in.CPU, mem: in.Memory, disk: in.Disk,
		createdAt: time.Now().UTC(), sessions: map[string]*session{},
	}
	if sb.user == "" {
		sb.user = "daytona"
	}
	if sb.target == "" {
		sb.target = "us"
	}
	s.mu.Lock()
	s.sandboxes[id] = sb
	dto := s.dto(r, sb)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, dto)
}

// mergeEnv returns the sandbox env overlaid with extra: local backends leave merging to
// their caller, and in Daytona every process sees the sandbox's env.
func mergeEnv(base, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// lookup finds a sandbox by id or name; the caller holds s.mu.
func (s *Server) lookup(idOrName string) *sbx {
	if sb := s.sandboxes[idOrName]; sb != nil {
		return sb
	}
	for _, sb := range s.sandboxes {
		if sb.Name == idOrName {
			return sb
		}
	}
	return nil
}

func (s *Server) proxyBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// dto renders the Sandbox schema; the caller holds s.mu.
func (s *Server) dto(r *http.Request, sb *sbx) map[string]any {
	ts := sb.createdAt.Format(time.RFC3339Nano)
	return map[string]any{
		"id": sb.ID, "organizationId": "fake-org", "name": sb.Name, "snapshot": sb.snapshot,
		"user": sb.user, "env": sb.env, "labels": sb.labels, "public": sb.public,
		"networkBlockAll": false, "target": sb.target, "cpu": max(sb.cpu, 1), "gpu": 0,
		"memory": max(sb.mem, 1), "disk": max(sb.disk, 3), "state": sb.State,
		"desiredState": desired(sb.State), "autoStopInterval": 15, "autoArchiveInterval": 10080,
		"autoDeleteInterval": -1, "volumes": []any{}, "createdAt": ts, "updatedAt": ts,
		"toolboxProxyUrl": s.proxyBase(r) + "/toolbox", "daemonVersion": "v0.190.0",
		"backupState": "None", "recoverable": false,
	}
}

func desired(state string) string {
	switch state {
	case "stopped", "stopping":
		return "stopped"
	case "archived", "archiving":
		return "archived"
	case "destroyed", "destroying":
		return "destroyed"
	}
	return "started"
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request, id string) {
	apiError(w, r, http.StatusNotFound, fmt.Sprintf("Sandbox with ID or name %s not found", id))
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookup(r.PathValue("id"))
	if sb == nil {
		s.notFound(w, r, r.PathValue("id"))
		return
	}
	switch sb.State {
	case "creating", "starting":
		if sb.polls--; sb.polls < 0 {
			sb.State = "started"
		}
	case "snapshotting":
		sb.State = sb.afterSnapshot
	case "stopping":
		sb.State = "stopped"
	}
	writeJSON(w, http.StatusOK, s.dto(r, sb))
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var want map[string]string
	if l := q.Get("labels"); l != "" {
		if err := json.Unmarshal([]byte(l), &want); err != nil {
			apiError(w, r, http.StatusBadRequest, "labels must be a JSON object")
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			apiError(w, r, http.StatusBadRequest, "limit must not be greater than 200, limit must not be less than 1")
			return
		}
		limit = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, sb := range s.sandboxes {
		match := true
		for k, v := range want {
			if sb.labels[k] != v {
				match = false
			}
		}
		if match {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	// The cursor is the last id of the previous page.
	if c := q.Get("cursor"); c != "" {
		i := sort.SearchStrings(ids, c)
		for i < len(ids) && ids[i] <= c {
			i++
		}
		ids = ids[i:]
	}
	var next any
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	items := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		d := s.dto(r, s.sandboxes[id])
		delete(d, "env") // list items omit the full-DTO fields
		items = append(items, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "nextCursor": next})
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sb := s.lookup(r.PathValue("id"))
	if sb == nil {
		s.mu.Unlock()
		s.notFound(w, r, r.PathValue("id"))
		return
	}
	delete(s.sandboxes, sb.ID)
	sb.State = "destroying"
	dto := s.dto(r, sb)
	s.mu.Unlock()
	s.destroyLocal(sb)
	writeJSON(w, http.StatusOK, dto)
}

func (s *Server) destroyLocal(sb *sbx) {
	s.mu.Lock()
	sessions := make([]*session, 0, len(sb.sessions))
	for _, se := range sb.sessions {
		sessions = append(sessions, se)
	}
	sb.sessions = map[string]*session{}
	s.mu.Unlock()
	for _, se := range sessions {
		se.kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = sb.inst.Destroy(ctx)
}

func (s *Server) lifecycle(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		sb := s.lookup(r.PathValue("id"))
		if sb == nil {
			s.mu.Unlock()
			s.notFound(w, r, r.PathValue("id"))
			return
		}
		state := sb.State
		s.mu.Unlock()
		var err error
		switch action {
		case "start":
			if state == "started" {
				break
			}
			if st, ok := sb.inst.(backend.Stopper); ok && state != "creating" {
				err = st.Start(r.Context())
			}
			state = "started"
		case "stop", "archive":
			if state != "started" {
				s.mu.Lock()
				apiError(w, r, http.StatusBadRequest, "Sandbox is not started")
				s.mu.Unlock()
				return
			}
			if st, ok := sb.inst.(backend.Stopper); ok {
				err = st.Stop(r.Context())
			}
			state = map[string]string{"stop": "stopping", "archive": "archived"}[action]
		}
		if err != nil {
			apiError(w, r, http.StatusInternalServerError, "runner: "+err.Error())
			return
		}
		s.mu.Lock()
		sb.State = state
		dto := s.dto(r, sb)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, dto)
	}
}

func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Name == "" {
		apiError(w, r, http.StatusBadRequest, "name should not be empty")
		return
	}
	s.mu.Lock()
	sb := s.lookup(r.PathValue("id"))
	_, exists := s.snapshots[in.Name]
	s.mu.Unlock()
	if sb == nil {
		s.notFound(w, r, r.PathValue("id"))
		return
	}
	if exists {
		apiError(w, r, http.StatusConflict, fmt.Sprintf("Snapshot with name \"%s\" already exists", in.Name))
		return
	}
	sn, ok := sb.inst.(backend.Snapshotter)
	if !ok {
		apiError(w, r, http.StatusBadRequest, "snapshots are not supported by this runner")
		return
	}
	snap, err := sn.Snapshot(r.Context(), "daytonafake-"+in.Name)
	if err != nil {
		apiError(w, r, http.StatusInternalServerError, "runner: "+err.Error())
		return
	}
	s.mu.Lock()
	s.snapshots[in.Name] = snap.Image
	sb.afterSnapshot = sb.State
	sb.State = "snapshotting"
	dto := s.dto(r, sb)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, dto)
}

func (s *Server) toolboxProxyURL(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sb := s.lookup(r.PathValue("id"))
	s.mu.Unlock()
	if sb == nil {
		s.notFound(w, r, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": s.proxyBase(r) + "/toolbox"})
}

func (s *Server) previewURL(signed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		port, err := strconv.Atoi(r.PathValue("port"))
		if err != nil || port < 1 || port > 65535 {
			apiError(w, r, http.StatusBadRequest, "Invalid port")
			return
		}
		s.mu.Lock()
		sb := s.lookup(r.PathValue("id"))
		if sb == nil {
			s.mu.Unlock()
			s.notFound(w, r, r.PathValue("id"))
			return
		}
		token := strings.ReplaceAll(newID(), "-", "")[:20]
		s.previews[token] = preview{sandbox: sb.ID, port: port}
		id := sb.ID
		s.mu.Unlock()
		u := s.proxyBase(r) + "/preview/" + token + "/"
		if signed {
			writeJSON(w, http.StatusOK, map[string]any{"sandboxId": id, "port": port, "token": token, "url": u})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sandboxId": id, "url": u, "token": token})
	}
}

func (s *Server) servePreview(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p, ok := s.previews[r.PathValue("token")]
	_, live := s.sandboxes[p.sandbox]
	s.mu.Unlock()
	if !ok || !live {
		http.Error(w, "preview not found", http.StatusNotFound)
		return
	}
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(p.port)}
	rp := httputil.NewSingleHostReverseProxy(target)
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/preview/"+r.PathValue("token")), "/")
	rp.ServeHTTP(w, r2)
}

// --- toolbox ---

type tbHandler func(w http.ResponseWriter, r *http.Request, sb *sbx)

// tb resolves the sandbox of a toolbox request, answering as the proxy does when it is
// unknown or not running.
func (s *Server) tb(h tbHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		sb := s.sandboxes[r.PathValue("id")]
		state := ""
		if sb != nil {
			state = sb.State
		}
		s.mu.Unlock()
		if sb == nil {
			daemonError(w, r, http.StatusNotFound, "NOT_FOUND", "sandbox not found")
			return
		}
		if state != "started" && state != "snapshotting" {
			daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "sandbox is not running (state "+state+")")
			return
		}
		h(w, r, sb)
	}
}

// files returns the sandbox's file API: the local instance's own, else exec-based.
func (s *Server) files(sb *sbx) backend.FileTransferer {
	if ft, ok := sb.inst.(backend.FileTransferer); ok && !s.opts.ExecFiles {
		return ft
	}
	return execfs.New(sb.inst)
}

// run executes argv in the local sandbox; a non-zero exit is an error carrying its stderr.
func run(ctx context.Context, sb *sbx, argv ...string) error {
	var stderr bytes.Buffer
	code, err := sb.inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Workdir: "/", Stdout: io.Discard, Stderr: &stderr})
	if err == nil && code != 0 {
		err = fmt.Errorf("%s: %s", argv[0], strings.TrimSpace(stderr.String()))
	}
	return err
}

func (s *Server) execute(w http.ResponseWriter, r *http.Request, sb *sbx) {
	var in struct {
		Command string            `json:"command"`
		Cwd     *string           `json:"cwd"`
		Envs    map[string]string `json:"envs"`
		Timeout *int              `json:"timeout"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "invalid request body: "+err.Error())
		return
	}
	if strings.TrimSpace(in.Command) == "" {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "command cannot be empty or whitespace-only")
		return
	}
	ctx := context.WithoutCancel(r.Context()) // the daemon does not watch the request
	var cancel context.CancelFunc = func() {}
	if in.Timeout != nil && *in.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*in.Timeout)*time.Second)
	}
	defer cancel()
	wd := s.opts.Workdir
	if in.Cwd != nil && *in.Cwd != "" {
		wd = *in.Cwd
	}
	var out lockedBuf
	// As the daemon does: the command is piped into the shell's stdin.
	code, err := sb.inst.Exec(ctx, &backend.ExecRequest{
		Argv: []string{"sh"}, Env: mergeEnv(sb.env, in.Envs), Workdir: wd,
		Stdin: strings.NewReader(in.Command), Stdout: &out, Stderr: &out,
	})
	if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		daemonError(w, r, http.StatusRequestTimeout, "REQUEST_TIMEOUT", "command execution timeout")
		return
	}
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"exitCode": -1, "result": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"exitCode": code, "result": string(out.Bytes())})
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// --- files ---

func fileErr(w http.ResponseWriter, r *http.Request, p string, err error) {
	switch {
	case errdefs.Is(err, errdefs.KindNotFound):
		daemonError(w, r, http.StatusNotFound, "FILE_NOT_FOUND", "file not found: "+p)
	case errdefs.Is(err, errdefs.KindInvalidArgument):
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", err.Error())
	case errdefs.Is(err, errdefs.KindPermissionDenied):
		daemonError(w, r, http.StatusForbidden, "FILE_ACCESS_DENIED", "permission denied: "+p)
	default:
		daemonError(w, r, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error())
	}
}

// withPath adapts a handler of the file named by the query's path, answering 400 itself
// when there is none.
func withPath(h func(w http.ResponseWriter, r *http.Request, sb *sbx, p string)) tbHandler {
	return func(w http.ResponseWriter, r *http.Request, sb *sbx) {
		if p, ok := queryPath(w, r); ok {
			h(w, r, sb, p)
		}
	}
}

func queryPath(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.URL.Query().Get("path")
	if p == "" {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "path is required")
		return "", false
	}
	return path.Clean(p), true
}

// fileInfoJSON renders the daemon's FileInfo.
func fileInfoJSON(fi backend.FileInfo) map[string]any {
	mode := fi.Mode
	if fi.IsDir {
		mode |= 1 << 31 // fs.ModeDir
	}
	return map[string]any{
		"name": fi.Name, "size": fi.Size, "mode": mode.String(), "isDir": fi.IsDir,
		"permissions": fmt.Sprintf("%04o", fi.Mode.Perm()), "owner": "daytona", "group": "daytona",
		"modTime": fi.ModTime.String(), "modifiedAt": fi.ModTime.UTC().Format(time.RFC3339Nano),
	}
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	list, err := s.files(sb).ListDir(r.Context(), p)
	if err != nil {
		fileErr(w, r, p, err)
		return
	}
	out := make([]map[string]any, 0, len(list))
	for _, fi := range list {
		out = append(out, fileInfoJSON(fi))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) fileInfo(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	if p == "/" {
		writeJSON(w, http.StatusOK, fileInfoJSON(backend.FileInfo{Name: "/", IsDir: true, Mode: 0o755}))
		return
	}
	list, err := s.files(sb).ListDir(r.Context(), path.Dir(p))
	if err != nil {
		fileErr(w, r, p, err)
		return
	}
	for _, fi := range list {
		if fi.Name == path.Base(p) {
			writeJSON(w, http.StatusOK, fileInfoJSON(fi))
			return
		}
	}
	fileErr(w, r, p, errdefs.NotFoundf("no such file"))
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	argv := []string{"rm", "-f", "--", p}
	if r.URL.Query().Get("recursive") == "true" {
		argv = []string{"rm", "-rf", "--", p}
	}
	if err := run(r.Context(), sb, argv...); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) createFolder(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	mode := r.URL.Query().Get("mode")
	if mode == "" {
		mode = "755"
	}
	if _, err := strconv.ParseUint(mode, 8, 32); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "invalid mode")
		return
	}
	if err := run(r.Context(), sb, "mkdir", "-p", "-m", mode, "--", p); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) setPermissions(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	mode := r.URL.Query().Get("mode")
	if mode == "" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if _, err := strconv.ParseUint(mode, 8, 32); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "invalid mode")
		return
	}
	// Through the file API's own view of paths: rewrite with the same bytes and mode.
	var buf bytes.Buffer
	ft := s.files(sb)
	if err := ft.ReadFile(r.Context(), p, &buf); err != nil {
		fileErr(w, r, p, err)
		return
	}
	m, _ := strconv.ParseUint(mode, 8, 32)
	if err := ft.WriteFile(r.Context(), p, &buf, fileMode(m)); err != nil {
		fileErr(w, r, p, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) uploadOne(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	var body io.Reader = r.Body
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		f, _, err := r.FormFile("file")
		if err != nil {
			daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "invalid multipart form")
			return
		}
		defer f.Close()
		body = f
	}
	if err := s.files(sb).WriteFile(r.Context(), p, body, 0o644); err != nil {
		fileErr(w, r, p, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) bulkUpload(w http.ResponseWriter, r *http.Request, sb *sbx) {
	if err := r.ParseMultipartForm(64 << 20); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{"invalid multipart form"}})
		return
	}
	defer r.MultipartForm.RemoveAll()
	var idxs []string
	for k := range r.MultipartForm.Value {
		if strings.HasPrefix(k, "files[") && strings.HasSuffix(k, "].path") {
			idxs = append(idxs, strings.TrimSuffix(strings.TrimPrefix(k, "files["), "].path"))
		}
	}
	sort.Strings(idxs)
	var done []map[string]string
	var errs []string
	for _, i := range idxs {
		dest := r.MultipartForm.Value["files["+i+"].path"][0]
		fhs := r.MultipartForm.File["files["+i+"].file"]
		if len(fhs) == 0 {
			errs = append(errs, fmt.Sprintf("file[%s]: missing file part", i))
			continue
		}
		f, err := fhs[0].Open()
		if err != nil {
			errs = append(errs, fmt.Sprintf("file[%s]: %v", i, err))
			continue
		}
		err = s.files(sb).WriteFile(r.Context(), path.Clean(dest), f, 0o644)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Sprintf("file[%s]: %v", i, err))
			continue
		}
		done = append(done, map[string]string{"path": dest})
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": errs, "files": done})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"files": done})
}

func (s *Server) downloadFile(w http.ResponseWriter, r *http.Request, sb *sbx, p string) {
	var buf bytes.Buffer
	if err := s.files(sb).ReadFile(r.Context(), p, &buf); err != nil {
		fileErr(w, r, p, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%s", path.Base(p)))
	w.Write(buf.Bytes())
}

// bulkDownload answers multipart/form-data with boundary DAYTONA-FILE-BOUNDARY: a "file"
// part per readable path, an "error" part (JSON ErrorResponse) per failing one.
func (s *Server) bulkDownload(w http.ResponseWriter, r *http.Request, sb *sbx) {
	var in struct {
		Paths []string `json:"paths"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || len(in.Paths) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `request body must be {"paths": [ ... ]} and non-empty`})
		return
	}
	const boundary = "DAYTONA-FILE-BOUNDARY"
	w.Header().Set("Content-Type", "multipart/form-data; boundary="+boundary)
	w.WriteHeader(http.StatusOK)
	for _, p := range in.Paths {
		var buf bytes.Buffer
		err := s.files(sb).ReadFile(r.Context(), p, &buf)
		if err != nil {
			status, code, msg := http.StatusInternalServerError, "FILE_READ_FAILED", "failed to open file: "+err.Error()
			switch {
			case errdefs.Is(err, errdefs.KindNotFound):
				status, code, msg = http.StatusNotFound, "FILE_NOT_FOUND", "file not found: "+p
			case errdefs.Is(err, errdefs.KindInvalidArgument):
				status, code, msg = http.StatusBadRequest, "INVALID_FILE_PATH", "invalid file path: path points to a directory: "+p
			}
			payload, _ := json.Marshal(map[string]any{
				"statusCode": status, "message": msg, "code": code, "path": p, "method": r.Method,
				"timestamp": time.Now().UTC().Format(time.RFC3339Nano),
			})
			fmt.Fprintf(w, "--%s\r\nContent-Disposition: %s\r\nContent-Type: application/json; charset=utf-8\r\n\r\n", boundary, disposition("error", p))
			w.Write(payload)
			io.WriteString(w, "\r\n")
			continue
		}
		fmt.Fprintf(w, "--%s\r\nContent-Disposition: %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", boundary, disposition("file", p), buf.Len())
		w.Write(buf.Bytes())
		io.WriteString(w, "\r\n")
	}
	fmt.Fprintf(w, "--%s--\r\n", boundary)
}

// disposition renders the daemon's Content-Disposition: a Latin-1-safe filename and the
// RFC 5987 filename* with the exact UTF-8 path.
func disposition(name, p string) string {
	var latin strings.Builder
	for _, r := range strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\r", "", "\n", "", "\x00", "").Replace(p) {
		if r > 0xFF || r < 0x20 || r == 0x7F {
			latin.WriteByte('_')
		} else {
			latin.WriteByte(byte(r))
		}
	}
	var enc strings.Builder
	for _, b := range []byte(p) {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9',
			strings.IndexByte("!#$&+-.^_`|~", b) >= 0:
			enc.WriteByte(b)
		default:
			fmt.Fprintf(&enc, "%%%02X", b)
		}
	}
	return fmt.Sprintf(`form-data; name="%s"; filename="%s"; filename*=utf-8''%s`, name, latin.String(), enc.String())
}
