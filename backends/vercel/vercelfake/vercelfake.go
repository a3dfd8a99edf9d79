// Package vercelfake answers "what would Vercel's Sandbox API say?": an in-memory
// http.Handler speaking the real wire format of the Vercel Sandbox REST API (v2 named
// sandboxes and sessions, as the official @vercel/sandbox SDK uses it: paths, JSON field
// names, the NDJSON command stream, gzipped-tar uploads, raw reads, error envelopes and the
// gateway's answer to a bad token). Commands run and files live in a local moat backend
// (Options.Backend), one local sandbox per Vercel sandbox.
//
// Tests wrap it in httptest.NewServer; the server accepts paths with or without the
// SDK's "/api" prefix. Fault injection: FailNext (429 with Retry-After, 5xx), DelayNext,
// Vanish (a sandbox deleted behind the client's back).
//
// Where Vercel's behaviour is not documented the fake follows Vercel's own mock server
// (packages/vercel-sandbox-mock): a missing executable is exit status 127 with a shell-style
// message on stderr; commands and files of a stopped session answer 410 sandbox_stopped;
// a killed command exits 128+signal. Snapshots need a local backend that is a
// backend.Snapshotter (the fake backend is); git and tarball sources are refused, since
// the fake reaches no network.
package vercelfake

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/backends/internal/fakeprovider"
	"github.com/moatsh/moat/errdefs"
)

// Options configure a Server.
type Options struct {
	// Token is the only bearer token accepted.
	Token string
	// TeamID, when set, must be the teamId query parameter of every request.
	TeamID string
	// Backend runs the commands and holds the files (required).
	Backend backend.Backend
	// Image is the CreateRequest.Image of local sandboxes ("" = the local default).
	Image string
	// Cwd is the default working directory of sessions (Vercel's: /vercel/sandbox).
	Cwd string
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

// Runtimes the fake accepts on /v2/sandboxes, as Vercel does.
var Runtimes = []string{"node22", "node24", "node26", "python3.13"}

// Server is the fake API. It is safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by name
	sessions  map[string]*session // by id
	commands  map[string]*command // by id
	snapshots map[string]*snapshotRec

	faults   fakeprovider.Faults
	requests fakeprovider.Counter
}

type sandbox struct {
	name       string
	projectID  string
	persistent bool
	region     string
	vcpus      int
	runtime    string
	image      string
	timeout    int64
	ports      []int
	tags       map[string]string
	env        map[string]string
	network    backend.NetworkMode
	createdAt  int64
	updatedAt  int64
	session    *session
	snapshotID string // current snapshot: what a resumed session starts from
	// disk is the local sandbox that outlives a session: persistent sandboxes keep it
	// across stop/start.
	disk backend.Instance
}

type session struct {
	id          string
	sb          *sandbox
	status      string
	cwd         string
	inst        backend.Instance
	createdAt   int64
	updatedAt   int64
	stoppedAt   int64
	timeout     int64
	sourceSnap  string
	ctx         context.Context // canceled when the session stops
	cancel      context.CancelFunc
	snapshotted int64
}

type snapshotRec struct {
	id, sandboxName, sessionID, image, status string
	createdAt, updatedAt                      int64
}

// New returns a fake server.
func New(opts Options) *Server {
	if opts.Cwd == "" {
		opts.Cwd = "/vercel/sandbox"
	}
	l := opts.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: l, sandboxes: map[string]*sandbox{}, sessions: map[string]*session{},
		commands: map[string]*command{}, snapshots: map[string]*snapshotRec{}}
}

// FailNext makes the next n requests (after authentication) answer status with Vercel's
// error envelope; for 429 a Retry-After of retryAfter (whole seconds, rounded up) is set.
func (s *Server) FailNext(n, status int, retryAfter time.Duration) {
	if n <= 0 {
		return
	}
	f := fakeprovider.Fault{Count: n, Status: status}
	if status == http.StatusTooManyRequests && retryAfter > 0 {
		f.RetryAfter = strconv.Itoa(int((retryAfter + time.Second - 1) / time.Second))
	}
	s.faults.Inject(f)
}

// DelayNext delays the next n requests by d before they are served.
func (s *Server) DelayNext(n int, d time.Duration) {
	if n > 0 {
		s.faults.Inject(fakeprovider.Fault{Count: n, Delay: d})
	}
}

// Vanish deletes a sandbox (by name or by session id) as if it had been deleted on
// Vercel's side: its sessions disappear too. It reports whether there was one.
func (s *Server) Vanish(id string) bool {
	s.mu.Lock()
	sb := s.sandboxes[id]
	if sb == nil {
		if se := s.sessions[id]; se != nil {
			sb = se.sb
		}
	}
	if sb == nil {
		s.mu.Unlock()
		return false
	}
	delete(s.sandboxes, sb.name)
	var insts []backend.Instance
	for id, se := range s.sessions {
		if se.sb == sb {
			delete(s.sessions, id)
			se.cancel()
			if se.inst != nil {
				insts = append(insts, se.inst)
			}
		}
	}
	if sb.disk != nil {
		insts = append(insts, sb.disk)
	}
	s.mu.Unlock()
	destroyAll(insts)
	return true
}

// Requests returns how many requests reached the server (including failed ones).
func (s *Server) Requests() int { return s.requests.Total() }

// SandboxNames returns the names of the live sandboxes, sorted.
func (s *Server) SandboxNames() []string { return fakeprovider.Keys(&s.mu, s.sandboxes) }

// Close stops every session and destroys the local sandboxes.
func (s *Server) Close() {
	s.mu.Lock()
	var insts []backend.Instance
	seen := map[backend.Instance]bool{}
	for _, se := range s.sessions {
		se.cancel()
		if se.inst != nil && !seen[se.inst] {
			seen[se.inst] = true
			insts = append(insts, se.inst)
		}
	}
	for _, sb := range s.sandboxes {
		if sb.disk != nil && !seen[sb.disk] {
			seen[sb.disk] = true
			insts = append(insts, sb.disk)
		}
	}
	s.sandboxes, s.sessions, s.commands = map[string]*sandbox{}, map[string]*session{}, map[string]*command{}
	s.mu.Unlock()
	destroyAll(insts)
}

func destroyAll(insts []backend.Instance) {
	for _, in := range insts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = in.Destroy(ctx)
		cancel()
	}
}

func now() int64 { return time.Now().UnixMilli() }

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// ---- HTTP plumbing ------------------------------------------------------------------

var writeJSON = fakeprovider.WriteJSON

// apiError writes Vercel's error envelope.
func apiError(w http.ResponseWriter, status int, code, msg string, extra ...any) {
	body := map[string]any{"code": code, "message": msg}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i].(string)] = extra[i+1]
	}
	writeJSON(w, status, map[string]any{"error": body})
}

// faultEnvelope is Vercel's error envelope for an injected fault's status.
func faultEnvelope(w http.ResponseWriter, _ *http.Request, status int) {
	switch {
	case status == http.StatusTooManyRequests:
		apiError(w, status, "rate_limited", "Too many requests, try again later")
	case status >= 500:
		apiError(w, status, "internal_server_error", "An unexpected internal error occurred")
	default:
		apiError(w, status, "bad_request", "injected failure")
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Count(r)

	// Vercel's gateway rejects a missing or unknown token with 403 before routing.
	tok, ok := fakeprovider.Bearer(r)
	if !ok {
		apiError(w, http.StatusForbidden, "forbidden", "The request is missing an authentication token", "missingToken", true)
		return
	}
	if tok != s.opts.Token {
		apiError(w, http.StatusForbidden, "forbidden", "Not authorized", "invalidToken", true)
		return
	}
	if s.opts.TeamID != "" && r.URL.Query().Get("teamId") != s.opts.TeamID {
		apiError(w, http.StatusForbidden, "forbidden", "Not authorized")
		return
	}

	if f, ok := s.faults.Take(r.URL.Path); ok && fakeprovider.Apply(w, r, f, "", faultEnvelope) {
		return
	}

	p := strings.TrimPrefix(r.URL.Path, "/api")
	segs := strings.Split(strings.Trim(p, "/"), "/")
	if len(segs) < 2 || segs[1] != "sandboxes" {
		apiError(w, http.StatusNotFound, "not_found", "The requested endpoint was not found")
		return
	}
	version, rest := segs[0], segs[2:]
	if len(rest) == 1 && rest[0] == "" {
		rest = nil
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost && (version == "v2" || version == "v3"):
		s.createSandbox(w, r, version)
	case version != "v2":
		apiError(w, http.StatusNotFound, "not_found", "The requested endpoint was not found")
	case len(rest) == 0 && r.Method == http.MethodGet:
		s.listSandboxes(w, r)
	case rest[0] == "sessions" && len(rest) >= 2:
		s.sessionRoutes(w, r, rest[1], rest[2:])
	case rest[0] == "snapshots" && len(rest) == 2:
		s.snapshotRoutes(w, r, rest[1])
	case len(rest) == 1 && rest[0] != "sessions" && rest[0] != "snapshots":
		switch r.Method {
		case http.MethodGet:
			s.getSandbox(w, r, rest[0])
		case http.MethodPatch:
			s.updateSandbox(w, r, rest[0])
		case http.MethodDelete:
			s.deleteSandbox(w, r, rest[0])
		default:
			apiError(w, http.StatusMethodNotAllowed, "method_unknown", "This endpoint only responds to GET, PATCH, DELETE")
		}
	default:
		apiError(w, http.StatusNotFound, "not_found", "No route for "+r.Method+" "+r.URL.Path)
	}
}

// ---- payloads -----------------------------------------------------------------------

func (s *Server) sessionPayload(se *session) map[string]any {
	m := map[string]any{
		"id": se.id, "memory": se.sb.vcpus * 2048, "vcpus": se.sb.vcpus, "region": se.sb.region,
		"timeout": se.timeout, "status": se.status, "requestedAt": se.createdAt, "startedAt": se.createdAt,
		"createdAt": se.createdAt, "updatedAt": se.updatedAt, "cwd": se.cwd,
		"networkPolicy": map[string]any{"mode": networkMode(se.sb.network)},
	}
	if se.sb.runtime != "" {
		m["runtime"] = se.sb.runtime
	}
	if se.stoppedAt != 0 {
		m["stoppedAt"] = se.stoppedAt
		m["requestedStopAt"] = se.stoppedAt
		m["duration"] = se.stoppedAt - se.createdAt
	}
	if se.sourceSnap != "" {
		m["sourceSnapshotId"] = se.sourceSnap
	}
	if se.snapshotted != 0 {
		m["snapshottedAt"] = se.snapshotted
	}
	return m
}

func networkMode(n backend.NetworkMode) string {
	if n == backend.NetworkHost {
		return "allow-all"
	}
	return "deny-all"
}

func (s *Server) sandboxPayload(sb *sandbox) map[string]any {
	m := map[string]any{
		"name": sb.name, "persistent": sb.persistent, "region": sb.region, "vcpus": sb.vcpus,
		"memory": sb.vcpus * 2048, "timeout": sb.timeout, "createdAt": sb.createdAt,
		"updatedAt": sb.updatedAt, "currentSessionId": sb.session.id, "status": sb.session.status,
		"statusUpdatedAt": sb.session.updatedAt, "cwd": sb.session.cwd,
		"networkPolicy": map[string]any{"mode": networkMode(sb.network)},
	}
	if sb.runtime != "" {
		m["runtime"] = sb.runtime
	}
	if sb.image != "" {
		m["image"] = sb.image
	}
	if len(sb.tags) > 0 {
		m["tags"] = sb.tags
	}
	if sb.snapshotID != "" {
		m["currentSnapshotId"] = sb.snapshotID
	}
	return m
}

func routesPayload(sb *sandbox) []map[string]any {
	out := []map[string]any{}
	for _, p := range sb.ports {
		sub := fmt.Sprintf("%s-%d", strings.ToLower(sb.name), p)
		out = append(out, map[string]any{"url": "https://" + sub + ".vercel.run", "subdomain": sub, "port": p})
	}
	return out
}

func snapshotPayload(sn *snapshotRec) map[string]any {
	return map[string]any{"id": sn.id, "sourceSessionId": sn.sessionID, "region": "iad1",
		"regions": []string{"iad1"}, "status": sn.status, "sizeBytes": 0,
		"createdAt": sn.createdAt, "updatedAt": sn.updatedAt}
}

// ---- sandboxes ----------------------------------------------------------------------

type createBody struct {
	ProjectID     string               `json:"projectId"`
	Name          string               `json:"name"`
	Ports         []int                `json:"ports"`
	Timeout       int64                `json:"timeout"`
	Resources     *struct{ VCPUs int } `json:"resources"`
	Runtime       string               `json:"runtime"`
	Image         string               `json:"image"`
	Persistent    *bool                `json:"persistent"`
	NetworkPolicy map[string]any       `json:"networkPolicy"`
	Env           map[string]string    `json:"env"`
	Tags          map[string]string    `json:"tags"`
	Region        string               `json:"region"`
	Source        *struct {
		Type       string `json:"type"`
		URL        string `json:"url"`
		SnapshotID string `json:"snapshotId"`
	} `json:"source"`
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request, version string) {
	var body createBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "Invalid request body: "+err.Error())
		return
	}
	if body.ProjectID == "" {
		apiError(w, http.StatusBadRequest, "bad_request", "projectId is required")
		return
	}
	if version == "v2" && body.Runtime != "" && !slices.Contains(Runtimes, body.Runtime) {
		apiError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("Invalid runtime %q", body.Runtime))
		return
	}
	if body.Runtime != "" && body.Image != "" {
		apiError(w, http.StatusBadRequest, "bad_request", "runtime and image cannot be used together")
		return
	}
	vcpus := 2
	if body.Resources != nil && body.Resources.VCPUs != 0 {
		vcpus = body.Resources.VCPUs
		if vcpus != 1 && (vcpus%2 != 0 || vcpus > 8) {
			apiError(w, http.StatusBadRequest, "bad_request", "resources.vcpus must be 1 or an even number up to 8")
			return
		}
	}
	if len(body.Tags) > 5 {
		apiError(w, http.StatusBadRequest, "bad_request", "A sandbox can have at most 5 tags")
		return
	}
	if body.Source != nil && body.Source.Type != "snapshot" {
		// The fake cannot fetch anything from the network.
		apiError(w, http.StatusBadRequest, "bad_request", "source type "+body.Source.Type+" is not supported by the fake")
		return
	}
	name := body.Name
	if name == "" {
		name = "sandbox-" + newID("x")[2:]
	}
	region := body.Region
	if region == "" {
		region = "iad1"
	}
	timeout := body.Timeout
	if timeout == 0 {
		timeout = 300_000
	}
	network := backend.NetworkNone
	if mode, _ := body.NetworkPolicy["mode"].(string); mode == "allow-all" || body.NetworkPolicy == nil {
		network = backend.NetworkHost
	}
	sb := &sandbox{name: name, projectID: body.ProjectID, region: region, vcpus: vcpus, runtime: body.Runtime,
		image: body.Image, timeout: timeout, ports: slices.Clone(body.Ports), tags: body.Tags, env: body.Env,
		network: network, createdAt: now(), updatedAt: now()}
	if body.Persistent != nil {
		sb.persistent = *body.Persistent
	}
	if sb.ports == nil {
		sb.ports = []int{}
	}

	localImage := s.opts.Image
	if body.Source != nil {
		s.mu.Lock()
		sn := s.snapshots[body.Source.SnapshotID]
		s.mu.Unlock()
		if sn == nil || sn.status != "created" {
			apiError(w, http.StatusGone, "snapshot_not_found", "Snapshot not found: "+body.Source.SnapshotID)
			return
		}
		localImage = sn.image
	}

	s.mu.Lock()
	if _, dup := s.sandboxes[name]; dup {
		s.mu.Unlock()
		apiError(w, http.StatusConflict, "sandbox_already_exists", "A sandbox named "+name+" already exists")
		return
	}
	// Reserve the name while the local sandbox boots.
	s.sandboxes[name] = nil
	s.mu.Unlock()

	se, err := s.boot(r.Context(), sb, localImage)
	s.mu.Lock()
	if err != nil {
		delete(s.sandboxes, name)
		s.mu.Unlock()
		apiError(w, http.StatusInternalServerError, "internal_server_error", "Failed to start sandbox: "+err.Error())
		return
	}
	if body.Source != nil {
		se.sourceSnap = body.Source.SnapshotID
	}
	s.sandboxes[name] = sb
	out := map[string]any{"sandbox": s.sandboxPayload(sb), "session": s.sessionPayload(se), "routes": routesPayload(sb), "resumed": false}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// boot starts a new running session for sb on a new local sandbox made from image, or on
// sb.disk when it has one (a persistent sandbox's disk).
func (s *Server) boot(ctx context.Context, sb *sandbox, image string) (*session, error) {
	inst := sb.disk
	if inst == nil {
		var err error
		inst, err = s.opts.Backend.Create(ctx, &backend.CreateRequest{
			ID: sb.name, Name: sb.name, Image: image, Env: sb.env, Workdir: s.opts.Cwd, Network: sb.network,
			Labels: map[string]string{"vercelfake": "1"},
		})
		if err != nil {
			return nil, err
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	se := &session{id: newID("se"), sb: sb, status: "running", cwd: s.opts.Cwd, inst: inst,
		createdAt: now(), updatedAt: now(), timeout: sb.timeout, ctx: sctx, cancel: cancel}
	s.mu.Lock()
	s.sessions[se.id] = se
	sb.session = se
	if sb.persistent {
		sb.disk = inst
	}
	s.mu.Unlock()
	return se, nil
}

func (s *Server) lookupSandbox(w http.ResponseWriter, name string) *sandbox {
	s.mu.Lock()
	sb := s.sandboxes[name]
	s.mu.Unlock()
	if sb == nil {
		apiError(w, http.StatusNotFound, "not_found", "Sandbox not found: "+name)
	}
	return sb
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request, name string) {
	sb := s.lookupSandbox(w, name)
	if sb == nil {
		return
	}
	resumed := false
	s.mu.Lock()
	running := sb.session.status == "running"
	s.mu.Unlock()
	if r.URL.Query().Get("resume") == "true" && !running {
		image := s.opts.Image
		s.mu.Lock()
		if sn := s.snapshots[sb.snapshotID]; sn != nil && sn.status == "created" && sb.disk == nil {
			image = sn.image
		}
		s.mu.Unlock()
		if _, err := s.boot(r.Context(), sb, image); err != nil {
			apiError(w, http.StatusInternalServerError, "internal_server_error", "Failed to resume sandbox: "+err.Error())
			return
		}
		resumed = true
	}
	s.mu.Lock()
	out := map[string]any{"sandbox": s.sandboxPayload(sb), "session": s.sessionPayload(sb.session), "routes": routesPayload(sb), "resumed": resumed}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	project := q.Get("project")
	prefix := q.Get("namePrefix")
	tags := q["tags"]
	s.mu.Lock()
	var list []*sandbox
	for _, sb := range s.sandboxes {
		if sb == nil || (project != "" && sb.projectID != project) || !strings.HasPrefix(sb.name, prefix) {
			continue
		}
		match := true
		for _, t := range tags {
			k, v, _ := strings.Cut(t, ":")
			if sb.tags[k] != v {
				match = false
			}
		}
		if match {
			list = append(list, sb)
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].createdAt != list[j].createdAt {
			return list[i].createdAt > list[j].createdAt
		}
		return list[i].name < list[j].name
	})
	if q.Get("sortOrder") == "asc" {
		slices.Reverse(list)
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 {
			s.mu.Unlock()
			apiError(w, http.StatusBadRequest, "bad_request", "Invalid cursor")
			return
		}
		start = min(n, len(list))
	}
	limit := 50
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l > 0 {
		limit = min(l, 100)
	}
	end := min(start+limit, len(list))
	page := []map[string]any{}
	for _, sb := range list[start:end] {
		page = append(page, s.sandboxPayload(sb))
	}
	s.mu.Unlock()
	var next any
	if end < len(list) {
		next = strconv.Itoa(end)
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": page, "pagination": map[string]any{"count": len(page), "next": next}})
}

func (s *Server) updateSandbox(w http.ResponseWriter, r *http.Request, name string) {
	sb := s.lookupSandbox(w, name)
	if sb == nil {
		return
	}
	var body struct {
		Ports   []int             `json:"ports"`
		Timeout *int64            `json:"timeout"`
		Tags    map[string]string `json:"tags"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "Invalid request body: "+err.Error())
		return
	}
	s.mu.Lock()
	out := map[string]any{}
	if body.Ports != nil {
		sb.ports = slices.Clone(body.Ports)
		out["routes"] = routesPayload(sb)
	}
	if body.Timeout != nil {
		sb.timeout = *body.Timeout
	}
	if body.Tags != nil {
		sb.tags = body.Tags
	}
	sb.updatedAt = now()
	out["sandbox"] = s.sandboxPayload(sb)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request, name string) {
	sb := s.lookupSandbox(w, name)
	if sb == nil {
		return
	}
	s.mu.Lock()
	delete(s.sandboxes, name)
	se := sb.session
	insts := s.stopLocked(se)
	if sb.disk != nil && !slices.Contains(insts, sb.disk) {
		insts = append(insts, sb.disk)
	}
	sb.disk = nil
	out := map[string]any{"sandbox": s.sandboxPayload(sb)}
	s.mu.Unlock()
	destroyAll(insts)
	writeJSON(w, http.StatusOK, out)
}

// stopLocked stops a session and returns the local sandboxes to destroy (none for a
// persistent sandbox, whose disk outlives it).
func (s *Server) stopLocked(se *session) []backend.Instance {
	if se.status != "running" {
		return nil
	}
	se.status = "stopped"
	se.stoppedAt = now()
	se.updatedAt = se.stoppedAt
	se.cancel()
	if se.sb.disk == se.inst {
		return nil
	}
	return []backend.Instance{se.inst}
}

// ---- sessions -----------------------------------------------------------------------

func (s *Server) sessionRoutes(w http.ResponseWriter, r *http.Request, sid string, sub []string) {
	s.mu.Lock()
	se := s.sessions[sid]
	s.mu.Unlock()
	if se == nil {
		apiError(w, http.StatusNotFound, "not_found", "Session not found: "+sid)
		return
	}
	if len(sub) == 0 {
		if r.Method != http.MethodGet {
			apiError(w, http.StatusMethodNotAllowed, "method_unknown", "This endpoint only responds to GET")
			return
		}
		s.mu.Lock()
		out := map[string]any{"session": s.sessionPayload(se), "routes": routesPayload(se.sb)}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
		return
	}
	switch {
	case sub[0] == "stop" && r.Method == http.MethodPost:
		s.mu.Lock()
		insts := s.stopLocked(se)
		out := map[string]any{"session": s.sessionPayload(se)}
		if s.sandboxes[se.sb.name] == se.sb {
			out["sandbox"] = s.sandboxPayload(se.sb)
		}
		s.mu.Unlock()
		destroyAll(insts)
		writeJSON(w, http.StatusOK, out)
	case sub[0] == "extend-timeout" && r.Method == http.MethodPost:
		var body struct{ Duration int64 }
		_ = json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		se.timeout += body.Duration
		out := map[string]any{"session": s.sessionPayload(se)}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case sub[0] == "snapshot" && r.Method == http.MethodPost:
		s.snapshot(w, r, se)
	case sub[0] == "cmd":
		s.cmdRoutes(w, r, se, sub[1:])
	case sub[0] == "fs" && len(sub) == 2 && r.Method == http.MethodPost:
		if !s.running(w, se) {
			return
		}
		switch sub[1] {
		case "mkdir":
			s.mkdir(w, r, se)
		case "write":
			s.writeFiles(w, r, se)
		case "read":
			s.readFile(w, r, se)
		default:
			apiError(w, http.StatusNotFound, "not_found", "No filesystem op: "+sub[1])
		}
	default:
		apiError(w, http.StatusNotFound, "not_found", "No route for "+r.Method+" "+r.URL.Path)
	}
}

// running answers 410 sandbox_stopped (as Vercel does) unless se runs.
func (s *Server) running(w http.ResponseWriter, se *session) bool {
	s.mu.Lock()
	st := se.status
	s.mu.Unlock()
	if st != "running" {
		apiError(w, http.StatusGone, "sandbox_stopped", "Sandbox is stopped")
		return false
	}
	return true
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, se *session) {
	if !s.running(w, se) {
		return
	}
	sn, ok := se.inst.(backend.Snapshotter)
	if !ok {
		apiError(w, http.StatusBadRequest, "bad_request", "the fake's local backend cannot snapshot")
		return
	}
	local, err := sn.Snapshot(r.Context(), newID("snap"))
	if err != nil {
		apiError(w, http.StatusInternalServerError, "internal_server_error", "Snapshot failed: "+err.Error())
		return
	}
	rec := &snapshotRec{id: newID("snap"), sandboxName: se.sb.name, sessionID: se.id, image: local.Image,
		status: "created", createdAt: now(), updatedAt: now()}
	s.mu.Lock()
	s.snapshots[rec.id] = rec
	se.sb.snapshotID = rec.id
	se.snapshotted = now()
	// Snapshotting stops the session; the sandbox's disk now is the snapshot.
	insts := s.stopLocked(se)
	if se.sb.disk != nil {
		insts = append(insts, se.sb.disk)
		se.sb.disk = nil
	}
	out := map[string]any{"snapshot": snapshotPayload(rec), "session": s.sessionPayload(se)}
	s.mu.Unlock()
	destroyAll(insts)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) snapshotRoutes(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	rec := s.snapshots[id]
	if rec == nil {
		s.mu.Unlock()
		apiError(w, http.StatusNotFound, "not_found", "Snapshot not found: "+id)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodDelete:
		rec.status, rec.updatedAt = "deleted", now()
	default:
		s.mu.Unlock()
		apiError(w, http.StatusMethodNotAllowed, "method_unknown", "This endpoint only responds to GET, DELETE")
		return
	}
	out := map[string]any{"snapshot": snapshotPayload(rec)}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// ---- files --------------------------------------------------------------------------

func files(inst backend.Instance) backend.FileTransferer {
	if ft, ok := inst.(backend.FileTransferer); ok {
		return ft
	}
	return execfs.New(inst)
}

func resolve(cwd, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(cwd, p)
}

// pathArg reads a request body {"path", "cwd"} and returns the path it names, relative
// paths taken from cwd or else the session's working directory; it answers 400 itself
// when there is no path.
func (se *session) pathArg(w http.ResponseWriter, r *http.Request) (string, bool) {
	var body struct{ Path, Cwd string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Path == "" {
		apiError(w, http.StatusBadRequest, "bad_request", "path is required")
		return "", false
	}
	cwd := body.Cwd
	if cwd == "" {
		cwd = se.cwd
	}
	return resolve(cwd, body.Path), true
}

func (s *Server) mkdir(w http.ResponseWriter, r *http.Request, se *session) {
	p, ok := se.pathArg(w, r)
	if !ok {
		return
	}
	var stderr bytes.Buffer
	code, err := se.inst.Exec(r.Context(), &backend.ExecRequest{Argv: []string{"mkdir", "--", p},
		Workdir: "/", Stdout: io.Discard, Stderr: &stderr})
	if err != nil || code != 0 {
		apiError(w, http.StatusBadRequest, "bad_request", "mkdir failed: "+strings.TrimSpace(stderr.String()))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (s *Server) writeFiles(w http.ResponseWriter, r *http.Request, se *session) {
	extractDir := r.Header.Get("x-cwd")
	if extractDir == "" {
		extractDir = "/"
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "Invalid gzip body: "+err.Error())
		return
	}
	tr := tar.NewReader(zr)
	ft := files(se.inst)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", "Invalid tar body: "+err.Error())
			return
		}
		target := resolve(extractDir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			mode := fs.FileMode(hdr.Mode & 0o777)
			if hdr.Mode == 0 {
				mode = 0o644
			}
			if err := ft.WriteFile(r.Context(), target, tr, mode); err != nil {
				status, code := http.StatusInternalServerError, "internal_server_error"
				if errdefs.Is(err, errdefs.KindInvalidArgument) {
					status, code = http.StatusBadRequest, "bad_request"
				}
				apiError(w, status, code, "write "+target+": "+err.Error())
				return
			}
		case tar.TypeDir:
			code, err := se.inst.Exec(r.Context(), &backend.ExecRequest{Argv: []string{"mkdir", "-p", "--", target},
				Workdir: "/", Stdout: io.Discard, Stderr: io.Discard})
			if err != nil || code != 0 {
				apiError(w, http.StatusBadRequest, "bad_request", "mkdir "+target+" failed")
				return
			}
		default:
			apiError(w, http.StatusBadRequest, "bad_request", "unsupported tar entry type for "+hdr.Name)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// lazyOctets sends the octet-stream headers on the first write, so an error found before
// any byte can still be answered as JSON.
type lazyOctets struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyOctets) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", "application/octet-stream")
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request, se *session) {
	p, ok := se.pathArg(w, r)
	if !ok {
		return
	}
	out := &lazyOctets{w: w}
	err := files(se.inst).ReadFile(r.Context(), p, out)
	switch {
	case err == nil:
		if !out.started {
			out.Write(nil)
		}
	case out.started:
		// Too late for a status: cut the body short, as a dropped connection would.
		panic(http.ErrAbortHandler)
	case errdefs.Is(err, errdefs.KindNotFound):
		w.WriteHeader(http.StatusNotFound) // Vercel: 404 with an empty body
	case errdefs.Is(err, errdefs.KindInvalidArgument):
		apiError(w, http.StatusBadRequest, "bad_request", "Path is a directory: "+p)
	default:
		apiError(w, http.StatusInternalServerError, "internal_server_error", "read failed: "+err.Error())
	}
}

// ---- commands -----------------------------------------------------------------------

// command is one command and its buffered log, which streams read from the start.
type command struct {
	id, name, cwd, sessionID string
	args                     []string
	startedAt                int64

	mu       sync.Mutex
	cond     *sync.Cond
	chunks   []logChunk
	exitCode *int
	duration int64
	failure  string // set when the command could not run at all
	kill     context.CancelCauseFunc
	signal   int
}

type logChunk struct {
	stream string
	data   string
}

func (c *command) payload(finished bool) map[string]any {
	m := map[string]any{"id": c.id, "name": c.name, "args": c.args, "cwd": c.cwd,
		"sessionId": c.sessionID, "startedAt": c.startedAt, "exitCode": nil}
	if finished && c.exitCode != nil {
		m["exitCode"] = *c.exitCode
		m["durationMs"] = c.duration
	}
	return m
}

// logWriter appends a stream's output as text chunks. Vercel's log lines carry text, so
// an incomplete UTF-8 sequence at a write's end is held back for the next write.
type logWriter struct {
	c      *command
	stream string
	carry  []byte
}

func (l *logWriter) Write(p []byte) (int, error) {
	buf := append(l.carry, p...)
	cut := len(buf)
	for i := 1; i <= utf8.UTFMax && i <= len(buf); i++ {
		if utf8.RuneStart(buf[len(buf)-i]) {
			if !utf8.FullRune(buf[len(buf)-i:]) {
				cut = len(buf) - i
			}
			break
		}
	}
	l.carry = slices.Clone(buf[cut:])
	if cut > 0 {
		l.c.appendChunk(l.stream, string(buf[:cut]))
	}
	return len(p), nil
}

func (l *logWriter) flush() {
	if len(l.carry) > 0 {
		l.c.appendChunk(l.stream, string(l.carry))
		l.carry = nil
	}
}

func (c *command) appendChunk(stream, data string) {
	c.mu.Lock()
	c.chunks = append(c.chunks, logChunk{stream, data})
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (s *Server) cmdRoutes(w http.ResponseWriter, r *http.Request, se *session, sub []string) {
	if len(sub) == 0 && r.Method == http.MethodPost {
		s.runCommand(w, r, se)
		return
	}
	if len(sub) == 0 {
		apiError(w, http.StatusMethodNotAllowed, "method_unknown", "This endpoint only responds to POST")
		return
	}
	s.mu.Lock()
	c := s.commands[sub[0]]
	s.mu.Unlock()
	if c == nil || c.sessionID != se.id {
		apiError(w, http.StatusNotFound, "not_found", "Command not found: "+sub[0])
		return
	}
	switch {
	case len(sub) == 1 && r.Method == http.MethodGet:
		if r.URL.Query().Get("wait") == "true" {
			if !c.waitDone(r.Context()) {
				return
			}
		}
		c.mu.Lock()
		out := map[string]any{"command": c.payload(true)}
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case len(sub) == 2 && sub[1] == "logs" && r.Method == http.MethodGet:
		s.streamCommand(w, r, c, false, true)
	case len(sub) == 2 && sub[1] == "kill" && r.Method == http.MethodPost:
		var body struct{ Signal int }
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body.Signal == 0 {
			body.Signal = 15
		}
		c.mu.Lock()
		if c.exitCode == nil {
			c.signal = body.Signal
			c.kill(errKilled)
		}
		out := map[string]any{"command": c.payload(true)}
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	default:
		apiError(w, http.StatusNotFound, "not_found", "No route for "+r.Method+" "+r.URL.Path)
	}
}

var errKilled = errors.New("killed by the kill endpoint")

// waitDone blocks until c has finished or ctx ends; false when ctx ended.
func (c *command) waitDone(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, c.cond.Broadcast)
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.exitCode == nil && c.failure == "" && ctx.Err() == nil {
		c.cond.Wait()
	}
	return ctx.Err() == nil
}

func (s *Server) runCommand(w http.ResponseWriter, r *http.Request, se *session) {
	if !s.running(w, se) {
		return
	}
	var body struct {
		Command string            `json:"command"`
		Args    []string          `json:"args"`
		Cwd     string            `json:"cwd"`
		Env     map[string]string `json:"env"`
		Sudo    bool              `json:"sudo"`
		Wait    bool              `json:"wait"`
		Logs    bool              `json:"logs"`
		Timeout int64             `json:"timeout"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Command == "" {
		apiError(w, http.StatusBadRequest, "bad_request", "command is required")
		return
	}
	cwd := body.Cwd
	if cwd == "" {
		cwd = se.cwd
	}
	if body.Args == nil {
		body.Args = []string{}
	}
	c := &command{id: newID("cmd"), name: body.Command, args: body.Args, cwd: cwd, sessionID: se.id, startedAt: now()}
	c.cond = sync.NewCond(&c.mu)
	// Commands belong to the session, not to the request: they outlive a dropped stream.
	cctx, kill := context.WithCancelCause(se.ctx)
	c.kill = kill
	release := func() { kill(nil) }
	if body.Timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(cctx, time.Duration(body.Timeout)*time.Millisecond)
		release = func() { cancel(); kill(nil) }
	}
	s.mu.Lock()
	s.commands[c.id] = c
	s.mu.Unlock()

	env := map[string]string{}
	for k, v := range se.sb.env {
		env[k] = v
	}
	for k, v := range body.Env {
		env[k] = v
	}
	go s.execute(cctx, release, se, c, append([]string{body.Command}, body.Args...), env, cwd)

	if !body.Wait {
		c.mu.Lock()
		out := map[string]any{"command": c.payload(false)}
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
		return
	}
	s.streamCommand(w, r, c, true, body.Logs)
}

func (s *Server) execute(ctx context.Context, release func(), se *session, c *command, argv []string, env map[string]string, cwd string) {
	defer release()
	stdout, stderr := &logWriter{c: c, stream: "stdout"}, &logWriter{c: c, stream: "stderr"}
	start := time.Now()
	code, err := se.inst.Exec(ctx, &backend.ExecRequest{Argv: argv, Env: env, Workdir: cwd, Stdout: stdout, Stderr: stderr})
	stdout.flush()
	stderr.flush()
	c.mu.Lock()
	defer c.cond.Broadcast()
	defer c.mu.Unlock()
	c.duration = time.Since(start).Milliseconds()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// Killed (kill endpoint, timeout or the session stopping): a signal exit status.
		sig := c.signal
		if sig == 0 {
			sig = 9
		}
		code = 128 + sig
	case errdefs.Is(err, errdefs.KindNotFound):
		// Vercel spawns commands through a shell-like runner: a missing executable is
		// exit status 127 with the shell's message.
		c.chunks = append(c.chunks, logChunk{"stderr", fmt.Sprintf("sh: %s: not found\n", argv[0])})
		code = 127
	default:
		c.failure = err.Error()
		return
	}
	c.exitCode = &code
}

// streamCommand writes an NDJSON stream: with withCommand the started command first and
// the finished one last, log lines in between when logs is set.
func (s *Server) streamCommand(w http.ResponseWriter, r *http.Request, c *command, withCommand, logs bool) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	flush := func() {
		if fl != nil {
			fl.Flush()
		}
	}
	if withCommand {
		c.mu.Lock()
		first := map[string]any{"command": c.payload(false)}
		c.mu.Unlock()
		if enc.Encode(first) != nil {
			return
		}
		flush()
	}
	ctx := r.Context()
	stop := context.AfterFunc(ctx, c.cond.Broadcast)
	defer stop()
	next := 0
	for {
		c.mu.Lock()
		for next >= len(c.chunks) && c.exitCode == nil && c.failure == "" && ctx.Err() == nil {
			c.cond.Wait()
		}
		if ctx.Err() != nil {
			c.mu.Unlock()
			return
		}
		batch := c.chunks[next:]
		next = len(c.chunks)
		finished := c.exitCode != nil
		failure := c.failure
		final := map[string]any{"command": c.payload(true)}
		c.mu.Unlock()
		if logs {
			for _, ch := range batch {
				if enc.Encode(map[string]any{"stream": ch.stream, "data": ch.data}) != nil {
					return
				}
			}
			flush()
		}
		if len(batch) > 0 {
			continue // drain everything before reporting the end
		}
		if failure != "" {
			_ = enc.Encode(map[string]any{"stream": "error", "data": map[string]any{"code": "command_failed", "message": failure}})
			flush()
			return
		}
		if finished {
			if withCommand {
				_ = enc.Encode(final)
				flush()
			}
			return
		}
	}
}
