// Package e2bfake answers "what does E2B look like on the wire, without E2B?": an in-memory
// fake of E2B's control-plane REST API and of envd (the in-sandbox daemon: Connect RPC with
// the JSON codec and the /files HTTP API), reached the way the official SDK reaches them
// when E2B_API_URL and E2B_SANDBOX_URL point at one loopback server. Commands and files are
// served by a local moat backend (Options.Backend), so the provider client and the official
// SDK can be tested end to end. Fault injection covers rate limits, server errors, delays
// and sandboxes that vanish on the provider side.
package e2bfake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/backends/internal/fakeprovider"
)

// DefaultEnvdVersion is the envd version the fake reports: new enough for octet-stream
// uploads (0.5.7), CloseStdin (0.5.2) and default users (0.4.0).
const DefaultEnvdVersion = "0.5.7"

// Options configure a Server.
type Options struct {
	// Token is the API key clients must send as X-API-Key.
	Token string
	// Backend runs the sandboxes' commands and holds their files.
	Backend backend.Backend
	// Image is the local image every sandbox is created from (a snapshot's image for
	// sandboxes created from a snapshot). "" is the local backend's default.
	Image string
	// Domain, when set, is returned as the sandboxes' domain.
	Domain string
	// EnvdVersion is reported for every sandbox; default DefaultEnvdVersion.
	EnvdVersion string
	// KeepaliveInterval overrides the client's Keepalive-Ping-Interval for process streams.
	KeepaliveInterval time.Duration
	Logger            *slog.Logger
}

// Fault is an injected misbehaviour for the next Count requests (whose path starts with
// PathPrefix, when set). Without a Body, a Status answers with E2B's JSON error.
type Fault = fakeprovider.Fault

// Server is the fake. It implements http.Handler and is safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	snapshots map[string]string // snapshot id or name → local image

	faults   fakeprovider.Faults
	requests fakeprovider.Counter
}

// sandbox is one fake sandbox.
type sandbox struct {
	id          string
	templateID  string
	accessToken string
	metadata    map[string]string
	envVars     map[string]string
	startedAt   time.Time
	endAt       time.Time
	autoPause   bool
	paused      bool
	inst        backend.Instance
	ft          backend.FileTransferer

	pmu     sync.Mutex
	nextPid uint32
	procs   map[uint32]*process
}

// New returns a fake E2B.
func New(opts Options) *Server {
	if opts.EnvdVersion == "" {
		opts.EnvdVersion = DefaultEnvdVersion
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts:      opts,
		log:       log,
		sandboxes: map[string]*sandbox{},
		snapshots: map[string]string{},
	}
}

// Inject queues a fault.
func (s *Server) Inject(f Fault) { s.faults.Inject(f) }

// Vanish removes a sandbox as if E2B had killed it (timeout, crash): the control plane
// answers 404 and the edge proxy 502 from now on.
func (s *Server) Vanish(id string) bool {
	sb, ok := fakeprovider.Remove(&s.mu, s.sandboxes, id)
	if !ok {
		return false
	}
	s.teardown(sb)
	return true
}

// Sandboxes returns the ids of the live sandboxes.
func (s *Server) Sandboxes() []string { return fakeprovider.Keys(&s.mu, s.sandboxes) }

// Requests returns how many requests "METHOD /path" (path without query) the fake saw.
func (s *Server) Requests(methodPath string) int { return s.requests.Of(methodPath) }

// TotalRequests returns how many requests the fake saw, control plane and envd alike.
func (s *Server) TotalRequests() int { return s.requests.Total() }

// Processes returns the number of processes running in sandbox id.
func (s *Server) Processes(id string) int {
	s.mu.Lock()
	sb := s.sandboxes[id]
	s.mu.Unlock()
	if sb == nil {
		return 0
	}
	sb.pmu.Lock()
	defer sb.pmu.Unlock()
	return len(sb.procs)
}

// Close destroys every sandbox's local instance.
func (s *Server) Close() {
	for _, sb := range fakeprovider.TakeAll(&s.mu, &s.sandboxes) {
		s.teardown(sb)
	}
}

func (s *Server) teardown(sb *sandbox) {
	sb.pmu.Lock()
	for _, p := range sb.procs {
		p.kill()
	}
	sb.pmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sb.inst.Destroy(ctx); err != nil {
		s.log.Warn("e2bfake: destroy local instance", "sandbox", sb.id, "err", err)
	}
}

// ServeHTTP implements http.Handler. envd paths are routed by the E2b-Sandbox-Id header
// (or a <port>-<id>.<domain> host), everything else is the control plane.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Count(r)
	if f, ok := s.faults.Take(r.URL.Path); ok {
		if fakeprovider.Apply(w, r, f, "text/plain; charset=utf-8", func(w http.ResponseWriter, _ *http.Request, status int) {
			apiError(w, status, http.StatusText(status))
		}) {
			return
		}
	}
	if isEnvdPath(r.URL.Path) {
		s.serveEnvd(w, r)
		return
	}
	s.serveAPI(w, r)
}

func isEnvdPath(p string) bool {
	return p == "/files" || p == "/health" || p == "/envs" || p == "/files/compose" ||
		strings.HasPrefix(p, "/process.Process/") || strings.HasPrefix(p, "/filesystem.Filesystem/")
}

// apiError writes the control plane's error body {code, message}.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": status, "message": msg})
}

var writeJSON = fakeprovider.WriteJSON

func randID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// found is lookup for a handler: it answers 404 itself when there is no live sandbox id.
func (s *Server) found(w http.ResponseWriter, id string) *sandbox {
	sb := s.lookup(id)
	if sb == nil {
		apiError(w, http.StatusNotFound, notFoundMsg(id))
	}
	return sb
}

// lookup returns a live sandbox, applying its timeout first: an expired sandbox is killed
// (or paused with autoPause), as E2B does.
func (s *Server) lookup(id string) *sandbox {
	s.mu.Lock()
	sb := s.sandboxes[id]
	if sb == nil {
		s.mu.Unlock()
		return nil
	}
	if !sb.paused && time.Now().After(sb.endAt) {
		if sb.autoPause {
			sb.paused = true
		} else {
			delete(s.sandboxes, id)
			s.mu.Unlock()
			s.teardown(sb)
			return nil
		}
	}
	s.mu.Unlock()
	return sb
}

// ---- control plane ----

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("X-API-Key")
	switch {
	case key == "":
		apiError(w, http.StatusUnauthorized, "authorization header is missing")
		return
	case key != s.opts.Token:
		apiError(w, http.StatusUnauthorized, "Invalid API key, please visit https://e2b.dev/docs/api-key for more information.")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) > 0 && parts[0] == "v2" {
		parts = parts[1:]
	}
	v2 := strings.HasPrefix(r.URL.Path, "/v2/")
	switch {
	case len(parts) == 1 && parts[0] == "sandboxes" && r.Method == http.MethodPost:
		s.createSandbox(w, r, v2)
	case len(parts) == 1 && parts[0] == "sandboxes" && r.Method == http.MethodGet:
		s.listSandboxes(w, r, v2)
	case len(parts) == 2 && parts[0] == "sandboxes" && r.Method == http.MethodGet:
		s.getSandbox(w, parts[1])
	case len(parts) == 2 && parts[0] == "sandboxes" && r.Method == http.MethodDelete:
		s.killSandbox(w, parts[1])
	case len(parts) == 3 && parts[0] == "sandboxes" && r.Method == http.MethodPost:
		switch parts[2] {
		case "pause":
			s.pauseSandbox(w, r, parts[1])
		case "connect":
			s.connectSandbox(w, r, parts[1], false)
		case "resume":
			s.connectSandbox(w, r, parts[1], true)
		case "timeout":
			s.setTimeout(w, r, parts[1])
		case "snapshots":
			s.snapshotSandbox(w, r, parts[1])
		default:
			apiError(w, http.StatusNotFound, "not found")
		}
	default:
		apiError(w, http.StatusNotFound, fmt.Sprintf("path %s not found", r.URL.Path))
	}
}

type newSandboxBody struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int              `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	Secure              *bool             `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	AutoPause           bool              `json:"autoPause"`
}

func notFoundMsg(id string) string {
	return fmt.Sprintf("sandbox \"%s\" doesn't exist or you don't have access to it", id)
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request, v2 bool) {
	var body newSandboxBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "request body has an error: "+err.Error())
		return
	}
	if body.TemplateID == "" {
		apiError(w, http.StatusBadRequest, `request body has an error: doesn't match schema: property "templateID" is missing`)
		return
	}
	timeout := 15 // the v1 API default
	if v2 {
		timeout = 300
	}
	if body.Timeout != nil {
		timeout = *body.Timeout
	}
	if timeout <= 0 {
		apiError(w, http.StatusBadRequest, "timeout must be positive")
		return
	}
	id := "i" + randID(10)
	image := s.opts.Image
	s.mu.Lock()
	if img, ok := s.snapshots[body.TemplateID]; ok {
		image = img
	}
	s.mu.Unlock()
	network := backend.NetworkHost
	if body.AllowInternetAccess != nil && !*body.AllowInternetAccess {
		network = backend.NetworkNone
	}
	inst, err := s.opts.Backend.Create(r.Context(), &backend.CreateRequest{
		ID: id, Name: id, Image: image, Env: body.EnvVars, Labels: map[string]string{"e2bfake": "1"},
		Network: network,
	})
	if err != nil {
		apiError(w, http.StatusInternalServerError, "failed to create sandbox: "+err.Error())
		return
	}
	ft, ok := inst.(backend.FileTransferer)
	if !ok {
		ft = execfs.New(inst)
	}
	// envd resolves relative paths and the default cwd against the user's home: make sure
	// both users' homes exist (through the file API, which stays inside the sandbox).
	for _, home := range []string{"/root", "/home/user"} {
		if err := ft.WriteFile(r.Context(), home+"/.profile", strings.NewReader(""), 0o644); err != nil {
			_ = inst.Destroy(context.WithoutCancel(r.Context()))
			apiError(w, http.StatusInternalServerError, "failed to create sandbox: "+err.Error())
			return
		}
	}
	now := time.Now().UTC()
	sb := &sandbox{
		id: id, templateID: body.TemplateID, accessToken: "ea_" + randID(16),
		metadata: body.Metadata, envVars: body.EnvVars, startedAt: now,
		endAt: now.Add(time.Duration(timeout) * time.Second), autoPause: body.AutoPause,
		inst: inst, ft: ft, nextPid: 100, procs: map[uint32]*process{},
	}
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, s.sandboxJSON(sb, v2 || (body.Secure != nil && *body.Secure)))
}

// sandboxJSON is the Sandbox schema (create, connect, resume).
func (s *Server) sandboxJSON(sb *sandbox, secure bool) map[string]any {
	out := map[string]any{
		"templateID":         sb.templateID,
		"sandboxID":          sb.id,
		"clientID":           "6532622b",
		"envdVersion":        s.opts.EnvdVersion,
		"trafficAccessToken": nil,
		"domain":             nil,
	}
	if secure {
		out["envdAccessToken"] = sb.accessToken
	}
	if s.opts.Domain != "" {
		out["domain"] = s.opts.Domain
	}
	return out
}

func (s *Server) detailJSON(sb *sandbox, withToken bool) map[string]any {
	s.mu.Lock()
	state := "running"
	if sb.paused {
		state = "paused"
	}
	endAt := sb.endAt
	s.mu.Unlock()
	md := sb.metadata
	if md == nil {
		md = map[string]string{}
	}
	out := map[string]any{
		"templateID":  sb.templateID,
		"sandboxID":   sb.id,
		"clientID":    "6532622b",
		"startedAt":   sb.startedAt.Format(time.RFC3339Nano),
		"endAt":       endAt.Format(time.RFC3339Nano),
		"cpuCount":    2,
		"memoryMB":    512,
		"diskSizeMB":  1024,
		"metadata":    md,
		"state":       state,
		"envdVersion": s.opts.EnvdVersion,
		"lifecycle":   map[string]any{"autoResume": false, "onTimeout": map[bool]string{true: "pause", false: "kill"}[sb.autoPause]},
	}
	if withToken {
		out["envdAccessToken"] = sb.accessToken
		if s.opts.Domain != "" {
			out["domain"] = s.opts.Domain
		} else {
			out["domain"] = nil
		}
	}
	return out
}

func (s *Server) getSandbox(w http.ResponseWriter, id string) {
	sb := s.found(w, id)
	if sb == nil {
		return
	}
	writeJSON(w, http.StatusOK, s.detailJSON(sb, true))
}

func (s *Server) killSandbox(w http.ResponseWriter, id string) {
	if sb := s.lookup(id); sb == nil || !s.Vanish(id) {
		apiError(w, http.StatusNotFound, notFoundMsg(id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request, id string) {
	sb := s.found(w, id)
	if sb == nil {
		return
	}
	s.mu.Lock()
	already := sb.paused
	sb.paused = true
	s.mu.Unlock()
	if already {
		apiError(w, http.StatusConflict, fmt.Sprintf("Sandbox %s is already paused", id))
		return
	}
	if p, ok := sb.inst.(backend.Pauser); ok {
		if err := p.Pause(r.Context()); err != nil {
			s.mu.Lock()
			sb.paused = false
			s.mu.Unlock()
			apiError(w, http.StatusInternalServerError, "error pausing sandbox: "+err.Error())
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// connectSandbox serves /connect (200 running, 201 resumed) and the deprecated /resume (201,
// 409 when running).
func (s *Server) connectSandbox(w http.ResponseWriter, r *http.Request, id string, legacyResume bool) {
	var body struct {
		Timeout *int `json:"timeout"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			apiError(w, http.StatusBadRequest, "request body has an error: "+err.Error())
			return
		}
	}
	sb := s.found(w, id)
	if sb == nil {
		return
	}
	s.mu.Lock()
	wasPaused := sb.paused
	s.mu.Unlock()
	if legacyResume && !wasPaused {
		apiError(w, http.StatusConflict, fmt.Sprintf("Sandbox %s is already running", id))
		return
	}
	if wasPaused {
		if p, ok := sb.inst.(backend.Pauser); ok {
			if err := p.Resume(r.Context()); err != nil {
				apiError(w, http.StatusInternalServerError, "error resuming sandbox: "+err.Error())
				return
			}
		}
	}
	s.mu.Lock()
	sb.paused = false
	if body.Timeout != nil && *body.Timeout > 0 {
		if end := time.Now().Add(time.Duration(*body.Timeout) * time.Second); end.After(sb.endAt) || wasPaused {
			sb.endAt = end // connect only extends a running sandbox's TTL
		}
	}
	s.mu.Unlock()
	status := http.StatusOK
	if wasPaused {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.sandboxJSON(sb, true))
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request, id string) {
	var body struct {
		Timeout int `json:"timeout"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Timeout < 0 {
		apiError(w, http.StatusBadRequest, "request body has an error")
		return
	}
	sb := s.found(w, id)
	if sb == nil {
		return
	}
	s.mu.Lock()
	sb.endAt = time.Now().Add(time.Duration(body.Timeout) * time.Second)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request, id string) {
	var body struct {
		Name string `json:"name"`
	}
	if r.ContentLength != 0 {
		_ = json.NewDecoder(r.Body).Decode(&body)
	}
	sb := s.found(w, id)
	if sb == nil {
		return
	}
	sn, ok := sb.inst.(backend.Snapshotter)
	if !ok {
		apiError(w, http.StatusInternalServerError, "e2bfake: the local backend cannot snapshot")
		return
	}
	snap, err := sn.Snapshot(r.Context(), body.Name)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "error creating snapshot: "+err.Error())
		return
	}
	snapID := "snap" + randID(8)
	names := []string{}
	s.mu.Lock()
	s.snapshots[snapID] = snap.Image
	if body.Name != "" {
		s.snapshots[body.Name] = snap.Image
		names = append(names, body.Name)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"snapshotID": snapID, "names": names})
}

// listSandboxes serves GET /v2/sandboxes (metadata, state, limit, nextToken; X-Next-Token)
// and the deprecated GET /sandboxes (running only, unpaginated).
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request, v2 bool) {
	q := r.URL.Query()
	var want url.Values
	if md := q.Get("metadata"); md != "" {
		var err error
		if want, err = url.ParseQuery(md); err != nil {
			apiError(w, http.StatusBadRequest, "error parsing metadata: "+err.Error())
			return
		}
	}
	states := map[string]bool{"running": true, "paused": v2}
	if st := q.Get("state"); st != "" && v2 {
		states = map[string]bool{}
		for _, x := range strings.Split(st, ",") {
			states[x] = true
		}
	}
	limit := 100
	if l := q.Get("limit"); l != "" && v2 {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			apiError(w, http.StatusBadRequest, "limit must be between 1 and 100")
			return
		}
		limit = n
	}
	offset := 0
	if nt := q.Get("nextToken"); nt != "" && v2 {
		n, err := strconv.Atoi(nt)
		if err != nil || n < 0 {
			apiError(w, http.StatusBadRequest, "invalid next token")
			return
		}
		offset = n
	}
	s.mu.Lock()
	ids := make([]string, 0, len(s.sandboxes))
	for id := range s.sandboxes {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var match []*sandbox
	running := 0
	for _, id := range ids {
		sb := s.lookup(id)
		if sb == nil {
			continue
		}
		s.mu.Lock()
		state := map[bool]string{true: "paused", false: "running"}[sb.paused]
		s.mu.Unlock()
		if state == "running" {
			running++
		}
		if !states[state] {
			continue
		}
		ok := true
		for k := range want {
			if sb.metadata[k] != want.Get(k) {
				ok = false
			}
		}
		if ok {
			match = append(match, sb)
		}
	}
	sort.Slice(match, func(i, j int) bool {
		if !match[i].startedAt.Equal(match[j].startedAt) {
			return match[i].startedAt.After(match[j].startedAt)
		}
		return match[i].id < match[j].id
	})
	if offset > len(match) {
		offset = len(match)
	}
	page := match[offset:]
	if v2 && len(page) > limit {
		page = page[:limit]
		w.Header().Set("X-Next-Token", strconv.Itoa(offset+limit))
	}
	out := make([]map[string]any, 0, len(page))
	for _, sb := range page {
		out = append(out, s.detailJSON(sb, false))
	}
	if v2 {
		w.Header().Set("X-Total-Running", strconv.Itoa(running))
	}
	writeJSON(w, http.StatusOK, out)
}
