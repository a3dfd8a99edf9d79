package e2bfake

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// envdPort is envd's port; the edge proxy routes <port>-<id>.<domain> or the
// E2b-Sandbox-Port header to it.
const envdPort = "49983"

// proxyGone is the edge proxy's answer for a sandbox it cannot route to.
func proxyGone(w http.ResponseWriter, id string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusBadGateway)
	_ = json.NewEncoder(w).Encode(map[string]any{"sandboxId": id, "message": "The sandbox was not found", "code": 502})
}

// envdError is envd's plain-HTTP error body {code:int, message}.
func envdError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": status, "message": msg})
}

// routeSandbox finds the target sandbox id the way the edge proxy does.
func routeSandbox(r *http.Request) (id string, ok bool) {
	if id := r.Header.Get("E2b-Sandbox-Id"); id != "" {
		if p := r.Header.Get("E2b-Sandbox-Port"); p != "" && p != envdPort {
			return id, false
		}
		return id, true
	}
	host := r.Host
	if i := strings.IndexByte(host, '.'); i > 0 {
		if port, id, found := strings.Cut(host[:i], "-"); found && port == envdPort {
			return id, true
		}
	}
	return "", false
}

func (s *Server) serveEnvd(w http.ResponseWriter, r *http.Request) {
	id, ok := routeSandbox(r)
	if !ok {
		envdError(w, http.StatusBadRequest, "missing sandbox routing (E2b-Sandbox-Id header or <port>-<id> host)")
		return
	}
	sb := s.lookup(id)
	if sb == nil {
		proxyGone(w, id)
		return
	}
	s.mu.Lock()
	paused := sb.paused
	s.mu.Unlock()
	if paused {
		proxyGone(w, id)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/health" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Header.Get("X-Access-Token") != sb.accessToken {
		envdError(w, http.StatusUnauthorized, "unauthorized access, please provide a valid access token or method signing if supported")
		return
	}
	switch {
	case r.URL.Path == "/files" && r.Method == http.MethodGet:
		s.download(w, r, sb)
	case r.URL.Path == "/files" && r.Method == http.MethodPost:
		s.upload(w, r, sb)
	case r.URL.Path == "/envs" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, sb.envVars)
	case strings.HasPrefix(r.URL.Path, "/process.Process/"), strings.HasPrefix(r.URL.Path, "/filesystem.Filesystem/"):
		if r.Method != http.MethodPost {
			writeUnaryError(w, rpcErr("unimplemented", "only POST is supported"))
			return
		}
		s.serveRPC(w, r, sb)
	default:
		envdError(w, http.StatusNotFound, "not found")
	}
}

// user resolves the envd user: the Authorization Basic user for RPCs, the username query
// for /files, else envd's default "user".
func envdUser(r *http.Request) (string, error) {
	u := r.URL.Query().Get("username")
	if a := r.Header.Get("Authorization"); u == "" && a != "" {
		raw, ok := strings.CutPrefix(a, "Basic ")
		if !ok {
			return "", errors.New("invalid authorization header")
		}
		dec, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			return "", errors.New("invalid authorization header")
		}
		u, _, _ = strings.Cut(string(dec), ":")
	}
	switch u {
	case "":
		return "user", nil
	case "root", "user":
		return u, nil
	}
	return "", fmt.Errorf("error looking up user '%s': user: unknown user %s", u, u)
}

func homeOf(user string) string {
	if user == "root" {
		return "/root"
	}
	return "/home/" + user
}

// resolvePath makes p absolute against the user's home, like envd.
func resolvePath(p, user string) string {
	if p == "" {
		return homeOf(user)
	}
	if strings.HasPrefix(p, "~/") || p == "~" {
		p = homeOf(user) + strings.TrimPrefix(p, "~")
	}
	if !path.IsAbs(p) {
		p = path.Join(homeOf(user), p)
	}
	return path.Clean(p)
}

// ---- /files ----

// firstWriter sends headers on the first byte so an error before any byte can still be a
// JSON error.
type firstWriter struct {
	w       http.ResponseWriter
	started bool
}

func (f *firstWriter) Write(p []byte) (int, error) {
	if !f.started {
		f.started = true
		f.w.Header().Set("Content-Type", "application/octet-stream")
		f.w.WriteHeader(http.StatusOK)
	}
	return f.w.Write(p)
}

func (s *Server) download(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	user, err := envdUser(r)
	if err != nil {
		envdError(w, http.StatusUnauthorized, err.Error())
		return
	}
	p := resolvePath(r.URL.Query().Get("path"), user)
	fw := &firstWriter{w: w}
	if err := sb.ft.ReadFile(r.Context(), p, fw); err != nil {
		if fw.started {
			panic(http.ErrAbortHandler) // cut the body short: the client sees a broken transfer
		}
		switch {
		case errdefs.Is(err, errdefs.KindNotFound):
			envdError(w, http.StatusNotFound, fmt.Sprintf("path '%s' does not exist", p))
		case errdefs.Is(err, errdefs.KindInvalidArgument):
			envdError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is a directory", p))
		default:
			envdError(w, http.StatusInternalServerError, "error reading file: "+err.Error())
		}
		return
	}
	if !fw.started {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}
}

type entryJSON struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	user, err := envdUser(r)
	if err != nil {
		envdError(w, http.StatusUnauthorized, err.Error())
		return
	}
	qpath := r.URL.Query().Get("path")
	var written []entryJSON
	write := func(p string, body io.Reader) bool {
		if err := sb.ft.WriteFile(r.Context(), p, body, 0o644); err != nil {
			switch {
			case errdefs.Is(err, errdefs.KindInvalidArgument):
				envdError(w, http.StatusBadRequest, fmt.Sprintf("error opening file '%s': %v", p, err))
			case errdefs.Is(err, errdefs.KindResourceExhausted):
				envdError(w, http.StatusInsufficientStorage, "not enough disk space")
			default:
				envdError(w, http.StatusInternalServerError, fmt.Sprintf("error writing file '%s': %v", p, err))
			}
			return false
		}
		written = append(written, entryJSON{Path: p, Name: path.Base(p), Type: "file"})
		return true
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				envdError(w, http.StatusBadRequest, "error parsing multipart form: "+err.Error())
				return
			}
			if part.FormName() != "file" {
				continue
			}
			p := qpath
			if p == "" {
				p = part.FileName()
			}
			if p == "" {
				envdError(w, http.StatusBadRequest, "cannot upload file without a path")
				return
			}
			if !write(resolvePath(p, user), part) {
				return
			}
		}
	case "application/octet-stream":
		if qpath == "" {
			envdError(w, http.StatusBadRequest, "path query parameter is required for raw body upload")
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				envdError(w, http.StatusBadRequest, "invalid gzip body: "+err.Error())
				return
			}
			body = gz
		}
		if !write(resolvePath(qpath, user), body) {
			return
		}
	default:
		envdError(w, http.StatusBadRequest, fmt.Sprintf("unsupported content type %q", mt))
		return
	}
	if len(written) == 0 {
		envdError(w, http.StatusBadRequest, "no file uploaded")
		return
	}
	writeJSON(w, http.StatusOK, written)
}

// ---- Connect RPCs ----

func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	method := strings.TrimPrefix(r.URL.Path, "/")
	ct := r.Header.Get("Content-Type")
	if method == "process.Process/Start" || method == "process.Process/Connect" || method == "filesystem.Filesystem/WatchDir" {
		if !strings.HasPrefix(ct, "application/connect+json") {
			writeUnaryError(w, rpcErr("unimplemented", "streaming calls need application/connect+json (got %q)", ct))
			return
		}
		flags, payload, err := readEnvelope(r.Body, 4<<20)
		if err != nil || flags != 0 {
			writeUnaryError(w, rpcErr("invalid_argument", "bad request envelope"))
			return
		}
		if method != "process.Process/Start" {
			ss := newStreamSender(w)
			_ = ss.end(rpcErr("unimplemented", "%s is not implemented by the fake", method))
			return
		}
		s.startProcess(w, r, sb, payload)
		return
	}
	if !strings.HasPrefix(ct, "application/json") {
		writeUnaryError(w, rpcErr("unimplemented", "unary calls need application/json (got %q)", ct))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		writeUnaryError(w, rpcErr("invalid_argument", "read body: %v", err))
		return
	}
	user, uerr := envdUser(r)
	if uerr != nil {
		writeUnaryError(w, rpcErr("unauthenticated", "%v", uerr))
		return
	}
	var out any
	var rerr *rpcError
	switch method {
	case "process.Process/SendInput":
		out, rerr = s.sendInput(r.Context(), sb, body)
	case "process.Process/CloseStdin":
		out, rerr = s.closeStdin(sb, body)
	case "process.Process/SendSignal":
		out, rerr = s.sendSignal(sb, body)
	case "process.Process/List":
		out, rerr = s.listProcs(sb)
	case "filesystem.Filesystem/ListDir":
		out, rerr = s.listDir(r.Context(), sb, user, body)
	case "filesystem.Filesystem/MakeDir":
		out, rerr = s.makeDir(r.Context(), sb, user, body)
	case "filesystem.Filesystem/Stat":
		out, rerr = s.stat(r.Context(), sb, user, body)
	case "filesystem.Filesystem/Remove":
		out, rerr = s.remove(r.Context(), sb, user, body)
	default:
		rerr = rpcErr("unimplemented", "%s is not implemented", method)
	}
	if rerr != nil {
		writeUnaryError(w, rerr)
		return
	}
	writeUnary(w, out)
}

// process is one command started through process.Process/Start.
type process struct {
	pid    uint32
	tag    string
	cfg    processConfig
	cancel context.CancelFunc

	mu      sync.Mutex
	stdin   *io.PipeWriter // nil when started without stdin
	killed  bool
	stdinMu sync.Mutex // orders SendInput calls
}

func (p *process) kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.cancel()
}

type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args"`
	Envs map[string]string `json:"envs"`
	Cwd  *string           `json:"cwd"`
}

type selector struct {
	Pid *uint32 `json:"pid"`
	Tag *string `json:"tag"`
}

func (sb *sandbox) find(sel selector) *process {
	sb.pmu.Lock()
	defer sb.pmu.Unlock()
	for _, p := range sb.procs {
		if sel.Pid != nil && p.pid == *sel.Pid || sel.Pid == nil && sel.Tag != nil && p.tag == *sel.Tag {
			return p
		}
	}
	return nil
}

// outWriter turns a local command's output into data events, at most 32 KiB each.
type outWriter struct {
	ss     *streamSender
	field  string
	onSend func()
}

func (o *outWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += 32 << 10 {
		end := min(off+32<<10, len(p))
		// A failed send means the client is gone: keep draining, like envd.
		_ = o.ss.message(map[string]any{"event": map[string]any{"data": map[string]any{o.field: p[off:end]}}})
		if o.onSend != nil {
			o.onSend()
		}
	}
	return len(p), nil
}

func (s *Server) startProcess(w http.ResponseWriter, r *http.Request, sb *sandbox, payload []byte) {
	var req struct {
		Process *processConfig `json:"process"`
		Tag     *string        `json:"tag"`
		Stdin   *bool          `json:"stdin"`
		Pty     json.RawMessage
	}
	user, uerr := envdUser(r)
	ss := newStreamSender(w)
	defer ss.close()
	if uerr != nil {
		_ = ss.end(rpcErr("unauthenticated", "%v", uerr))
		return
	}
	if err := json.Unmarshal(payload, &req); err != nil || req.Process == nil || req.Process.Cmd == "" {
		_ = ss.end(rpcErr("invalid_argument", "invalid start request"))
		return
	}
	if len(req.Pty) > 0 && string(req.Pty) != "null" {
		_ = ss.end(rpcErr("unimplemented", "pty is not supported by the fake"))
		return
	}
	cwd := homeOf(user)
	if req.Process.Cwd != nil && *req.Process.Cwd != "" {
		cwd = resolvePath(*req.Process.Cwd, user)
	}
	if _, err := sb.ft.ListDir(r.Context(), cwd); err != nil {
		_ = ss.end(rpcErr("invalid_argument", "cwd '%s' does not exist", cwd))
		return
	}
	// envd's default for requests that do not say is stdin on.
	withStdin := req.Stdin == nil || *req.Stdin

	// The process outlives the request: only SendSignal, the Connect-Timeout-Ms deadline
	// or the sandbox's end stop it.
	procCtx, cancel := context.WithCancel(context.Background())
	if ms, err := strconv.Atoi(r.Header.Get("Connect-Timeout-Ms")); err == nil && ms > 0 {
		procCtx, cancel = context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond)
	}
	p := &process{cfg: *req.Process, cancel: cancel}
	if req.Tag != nil {
		p.tag = *req.Tag
	}
	var stdinR *io.PipeReader
	if withStdin {
		stdinR, p.stdin = io.Pipe()
	}
	sb.pmu.Lock()
	sb.nextPid++
	p.pid = sb.nextPid
	sb.procs[p.pid] = p
	sb.pmu.Unlock()

	env := map[string]string{}
	for k, v := range sb.envVars {
		env[k] = v
	}
	for k, v := range req.Process.Envs {
		env[k] = v
	}
	// envd runs every command under `/bin/sh -c '... exec "${@}"' -- cmd args...`, which is
	// why a missing executable is exit status 127 rather than a failed start.
	argv := append([]string{"/bin/sh", "-c", `exec "$@"`, "--", req.Process.Cmd}, req.Process.Args...)

	_ = ss.message(map[string]any{"event": map[string]any{"start": map[string]any{"pid": p.pid}}})

	activity := make(chan struct{}, 1)
	poke := func() {
		select {
		case activity <- struct{}{}:
		default:
		}
	}
	done := make(chan struct{})
	var code int
	var execErr error
	go func() {
		defer close(done)
		er := &backend.ExecRequest{
			Argv: argv, Env: env, Workdir: cwd,
			Stdout: &outWriter{ss: ss, field: "stdout", onSend: poke},
			Stderr: &outWriter{ss: ss, field: "stderr", onSend: poke},
		}
		if stdinR != nil {
			er.Stdin = stdinR
		}
		code, execErr = sb.inst.Exec(procCtx, er)
		if stdinR != nil {
			stdinR.CloseWithError(io.ErrClosedPipe)
		}
		sb.pmu.Lock()
		delete(sb.procs, p.pid)
		sb.pmu.Unlock()
		cancel()
	}()

	interval := s.opts.KeepaliveInterval
	if interval <= 0 {
		interval = 50 * time.Second
		if n, err := strconv.Atoi(r.Header.Get("Keepalive-Ping-Interval")); err == nil && n > 0 {
			interval = time.Duration(n) * time.Second
		}
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			p.mu.Lock()
			killed := p.killed
			p.mu.Unlock()
			end := map[string]any{}
			switch {
			case killed || errors.Is(execErr, context.DeadlineExceeded) || errors.Is(execErr, context.Canceled):
				end = map[string]any{"exitCode": -1, "status": "signal: killed", "error": "signal: killed"}
			case execErr != nil:
				_ = ss.end(rpcErr("invalid_argument", "error starting process: %v", execErr))
				return
			default:
				end["exited"] = true
				end["status"] = fmt.Sprintf("exit status %d", code)
				if code != 0 { // proto3 JSON leaves out zero values
					end["exitCode"] = code
					end["error"] = end["status"]
				}
			}
			_ = ss.message(map[string]any{"event": map[string]any{"end": end}})
			_ = ss.end(nil)
			return
		case <-r.Context().Done():
			return // the client went away; the process keeps running
		case <-activity:
			ticker.Reset(interval)
		case <-ticker.C:
			_ = ss.message(map[string]any{"event": map[string]any{"keepalive": map[string]any{}}})
		}
	}
}

func (s *Server) sendInput(ctx context.Context, sb *sandbox, body []byte) (any, *rpcError) {
	var req struct {
		Process selector `json:"process"`
		Input   struct {
			Stdin []byte `json:"stdin"`
			Pty   []byte `json:"pty"`
		} `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	p := sb.find(req.Process)
	if p == nil {
		return nil, rpcErr("not_found", "process not found")
	}
	if p.stdin == nil {
		return nil, rpcErr("failed_precondition", "stdin not enabled or closed")
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	done := make(chan error, 1)
	go func() { _, err := p.stdin.Write(req.Input.Stdin); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			return nil, rpcErr("internal", "error writing to stdin: %v", err)
		}
	case <-ctx.Done():
		return nil, rpcErr("canceled", "request canceled")
	}
	return map[string]any{}, nil
}

func (s *Server) closeStdin(sb *sandbox, body []byte) (any, *rpcError) {
	var req struct {
		Process selector `json:"process"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	p := sb.find(req.Process)
	if p == nil {
		return nil, rpcErr("not_found", "process not found")
	}
	if p.stdin == nil {
		return nil, rpcErr("failed_precondition", "stdin not enabled")
	}
	p.stdinMu.Lock()
	_ = p.stdin.Close()
	p.stdinMu.Unlock()
	return map[string]any{}, nil
}

func (s *Server) sendSignal(sb *sandbox, body []byte) (any, *rpcError) {
	var req struct {
		Process selector        `json:"process"`
		Signal  json.RawMessage `json:"signal"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	// Enums arrive as names in proto3 JSON; parsers also accept numbers.
	switch strings.Trim(string(req.Signal), `"`) {
	case "SIGNAL_SIGKILL", "9", "SIGNAL_SIGTERM", "15":
	default:
		return nil, rpcErr("invalid_argument", "invalid signal: %s", req.Signal)
	}
	p := sb.find(req.Process)
	if p == nil {
		return nil, rpcErr("not_found", "process not found")
	}
	p.kill()
	return map[string]any{}, nil
}

func (s *Server) listProcs(sb *sandbox) (any, *rpcError) {
	sb.pmu.Lock()
	defer sb.pmu.Unlock()
	list := []map[string]any{}
	for _, p := range sb.procs {
		e := map[string]any{"pid": p.pid, "config": p.cfg}
		if p.tag != "" {
			e["tag"] = p.tag
		}
		list = append(list, e)
	}
	return map[string]any{"processes": list}, nil
}

// ---- filesystem.Filesystem ----

func entryOf(dir string, fi backend.FileInfo) map[string]any {
	typ := "FILE_TYPE_FILE"
	switch {
	case fi.IsDir || fi.Mode.IsDir():
		typ = "FILE_TYPE_DIRECTORY"
	case fi.Mode&fs.ModeSymlink != 0:
		typ = "FILE_TYPE_SYMLINK"
	}
	e := map[string]any{
		"name":         fi.Name,
		"type":         typ,
		"path":         path.Join(dir, fi.Name),
		"mode":         uint32(fi.Mode),
		"permissions":  fi.Mode.String(),
		"owner":        "root",
		"group":        "root",
		"modifiedTime": fi.ModTime.UTC().Format(time.RFC3339Nano),
	}
	if fi.Size != 0 {
		e["size"] = strconv.FormatInt(fi.Size, 10) // int64 is a JSON string in proto3
	}
	return e
}

func fsErr(err error, p string) *rpcError {
	switch {
	case errdefs.Is(err, errdefs.KindNotFound):
		return rpcErr("not_found", "directory not found: %s", p)
	case errdefs.Is(err, errdefs.KindInvalidArgument):
		return rpcErr("invalid_argument", "path is not a directory: %s", p)
	}
	return rpcErr("internal", "error reading directory %s: %v", p, err)
}

func (s *Server) listDir(ctx context.Context, sb *sandbox, user string, body []byte) (any, *rpcError) {
	var req struct {
		Path  string `json:"path"`
		Depth uint32 `json:"depth"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	depth := req.Depth
	if depth == 0 {
		depth = 1
	}
	root := resolvePath(req.Path, user)
	entries := []map[string]any{}
	var walk func(dir string, level uint32) *rpcError
	walk = func(dir string, level uint32) *rpcError {
		list, err := sb.ft.ListDir(ctx, dir)
		if err != nil {
			return fsErr(err, dir)
		}
		for _, fi := range list {
			entries = append(entries, entryOf(dir, fi))
			if fi.IsDir && level < depth {
				if e := walk(path.Join(dir, fi.Name), level+1); e != nil {
					return e
				}
			}
		}
		return nil
	}
	if e := walk(root, 1); e != nil {
		return nil, e
	}
	return map[string]any{"entries": entries}, nil
}

// statEntry finds p through its parent's listing (the local FileTransferer has no stat).
func (s *Server) statEntry(ctx context.Context, sb *sandbox, p string) (map[string]any, *rpcError) {
	if p == "/" {
		return map[string]any{"name": "/", "type": "FILE_TYPE_DIRECTORY", "path": "/"}, nil
	}
	dir, name := path.Split(p)
	dir = path.Clean(dir)
	list, err := sb.ft.ListDir(ctx, dir)
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) {
			return nil, rpcErr("not_found", "path not found: %s", p)
		}
		return nil, fsErr(err, dir)
	}
	for _, fi := range list {
		if fi.Name == name {
			return entryOf(dir, fi), nil
		}
	}
	return nil, rpcErr("not_found", "path not found: %s", p)
}

func (s *Server) stat(ctx context.Context, sb *sandbox, user string, body []byte) (any, *rpcError) {
	var req struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	e, rerr := s.statEntry(ctx, sb, resolvePath(req.Path, user))
	if rerr != nil {
		return nil, rerr
	}
	return map[string]any{"entry": e}, nil
}

// runFixed runs a fixed script with positional arguments in the sandbox.
func runFixed(ctx context.Context, sb *sandbox, script string, args ...string) (int, string, error) {
	var stderr bytes.Buffer
	code, err := sb.inst.Exec(ctx, &backend.ExecRequest{
		Argv:   append([]string{"sh", "-c", script, "sh"}, args...),
		Stdout: io.Discard, Stderr: &stderr,
	})
	return code, strings.TrimSpace(stderr.String()), err
}

func (s *Server) makeDir(ctx context.Context, sb *sandbox, user string, body []byte) (any, *rpcError) {
	var req struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	p := resolvePath(req.Path, user)
	code, msg, err := runFixed(ctx, sb, `[ -d "$1" ] && exit 3; [ -e "$1" ] && exit 4; mkdir -p -- "$1"`, p)
	switch {
	case err != nil:
		return nil, rpcErr("internal", "error creating directory: %v", err)
	case code == 3:
		return nil, rpcErr("already_exists", "directory already exists: %s", p)
	case code == 4:
		return nil, rpcErr("invalid_argument", "path already exists but it is not a directory: %s", p)
	case code != 0:
		return nil, rpcErr("internal", "error creating directory: %s", msg)
	}
	e, rerr := s.statEntry(ctx, sb, p)
	if rerr != nil {
		return nil, rerr
	}
	return map[string]any{"entry": e}, nil
}

func (s *Server) remove(ctx context.Context, sb *sandbox, user string, body []byte) (any, *rpcError) {
	var req struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr("invalid_argument", "invalid request: %v", err)
	}
	p := resolvePath(req.Path, user)
	code, msg, err := runFixed(ctx, sb, `[ -e "$1" ] || [ -L "$1" ] || exit 3; rm -rf -- "$1"`, p)
	switch {
	case err != nil:
		return nil, rpcErr("internal", "error removing: %v", err)
	case code == 3:
		return nil, rpcErr("not_found", "path not found: %s", p)
	case code != 0:
		return nil, rpcErr("internal", "error removing: %s", msg)
	}
	return map[string]any{}, nil
}
