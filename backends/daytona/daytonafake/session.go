package daytonafake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// The daemon's stream labels: every output line in a command's log starts with one.
var (
	stdoutPrefix = []byte{1, 1, 1}
	stderrPrefix = []byte{2, 2, 2}
)

func fileMode(m uint64) fs.FileMode { return fs.FileMode(m) & fs.ModePerm }

// session is a toolbox process session. The real daemon runs one shell per session and
// feeds it one command at a time; the fake runs each command as sh -c in the local sandbox.
type session struct {
	id       string
	mu       sync.Mutex
	commands map[string]*command
	order    []string
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type command struct {
	id      string
	command string
	mu      sync.Mutex
	log     bytes.Buffer
	exit    *int
	stdin   *io.PipeWriter
	done    chan struct{}
}

func (c *command) exitCode() *int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exit
}

func (c *command) logBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.log.Bytes())
}

// labeler writes each complete line of one stream into the command log with the stream's
// prefix, like the daemon's "while IFS= read -r line; do printf PREFIX%s\n" loops: NUL
// bytes are lost, and an unterminated last line gets a newline (on flush).
type labeler struct {
	c      *command
	prefix []byte
	buf    []byte
}

func (l *labeler) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *labeler) emit(line []byte) {
	line = bytes.ReplaceAll(line, []byte{0}, nil)
	l.c.mu.Lock()
	l.c.log.Write(l.prefix)
	l.c.log.Write(line)
	l.c.log.WriteByte('\n')
	l.c.mu.Unlock()
}

func (l *labeler) flush() {
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (se *session) kill() {
	se.cancel()
	se.wg.Wait()
}

func (s *Server) getSess(w http.ResponseWriter, r *http.Request, sb *sbx) *session {
	s.mu.Lock()
	se := sb.sessions[r.PathValue("sid")]
	s.mu.Unlock()
	if se == nil {
		daemonError(w, r, http.StatusNotFound, "NOT_FOUND", "session not found")
	}
	return se
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request, sb *sbx) {
	var in struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.SessionID == "" {
		daemonError(w, r, http.StatusBadRequest, "INVALID_REQUEST_BODY", "invalid request body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := sb.sessions[in.SessionID]; ok {
		daemonError(w, r, http.StatusConflict, "CONFLICT", "session already exists")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	sb.sessions[in.SessionID] = &session{id: in.SessionID, commands: map[string]*command{}, ctx: ctx, cancel: cancel}
	w.WriteHeader(http.StatusCreated)
}

func sessionJSON(se *session) map[string]any {
	se.mu.Lock()
	defer se.mu.Unlock()
	cmds := make([]map[string]any, 0, len(se.order))
	for _, id := range se.order {
		cmds = append(cmds, commandJSON(se.commands[id]))
	}
	return map[string]any{"sessionId": se.id, "commands": cmds}
}

func commandJSON(c *command) map[string]any {
	m := map[string]any{"id": c.id, "command": c.command}
	if e := c.exitCode(); e != nil {
		m["exitCode"] = *e
	}
	return m
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request, sb *sbx) {
	s.mu.Lock()
	all := make([]*session, 0, len(sb.sessions))
	for _, se := range sb.sessions {
		all = append(all, se)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].id < all[j].id })
	out := make([]map[string]any, 0, len(all))
	for _, se := range all {
		out = append(out, sessionJSON(se))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request, sb *sbx) {
	if se := s.getSess(w, r, sb); se != nil {
		writeJSON(w, http.StatusOK, sessionJSON(se))
	}
}

// deleteSession kills everything the session runs (the daemon signals the session's
// process group) and forgets it.
func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, sb *sbx) {
	s.mu.Lock()
	se := sb.sessions[r.PathValue("sid")]
	delete(sb.sessions, r.PathValue("sid"))
	s.mu.Unlock()
	if se == nil {
		daemonError(w, r, http.StatusNotFound, "NOT_FOUND", "session not found")
		return
	}
	se.kill()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) sessionExec(w http.ResponseWriter, r *http.Request, sb *sbx) {
	se := s.getSess(w, r, sb)
	if se == nil {
		return
	}
	var in struct {
		Command  string `json:"command"`
		RunAsync bool   `json:"runAsync"`
		Async    bool   `json:"async"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "invalid request body: "+err.Error())
		return
	}
	if strings.TrimSpace(in.Command) == "" {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "command cannot be empty")
		return
	}
	async := in.RunAsync || in.Async
	c := &command{id: newID(), command: in.Command, done: make(chan struct{})}
	var stdin io.Reader = strings.NewReader("") // sync commands see EOF at once
	if async {
		pr, pw := io.Pipe()
		c.stdin, stdin = pw, pr
	}
	se.mu.Lock()
	if se.ctx.Err() != nil {
		se.mu.Unlock()
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "session cancelled")
		return
	}
	se.commands[c.id] = c
	se.order = append(se.order, c.id)
	se.wg.Add(1)
	se.mu.Unlock()
	s.mu.Lock()
	s.running++
	s.mu.Unlock()
	go func() {
		defer se.wg.Done()
		defer func() {
			s.mu.Lock()
			s.running--
			s.mu.Unlock()
		}()
		out := &labeler{c: c, prefix: stdoutPrefix}
		errw := &labeler{c: c, prefix: stderrPrefix}
		code, err := sb.inst.Exec(se.ctx, &backend.ExecRequest{
			Argv: []string{"sh", "-c", in.Command}, Env: mergeEnv(sb.env, nil), Workdir: s.opts.Workdir,
			Stdin: stdin, Stdout: out, Stderr: errw,
		})
		if c.stdin != nil {
			c.stdin.CloseWithError(io.ErrClosedPipe)
		}
		out.flush()
		errw.flush()
		switch {
		case se.ctx.Err() != nil:
			code = 143 // SIGTERM from the session's deletion
		case errdefs.Is(err, errdefs.KindNotFound):
			code = 127
		case err != nil:
			code = 1
		}
		c.mu.Lock()
		c.exit = &code
		c.mu.Unlock()
		close(c.done)
	}()
	if async {
		writeJSON(w, http.StatusAccepted, map[string]any{"cmdId": c.id})
		return
	}
	select {
	case <-c.done:
	case <-se.ctx.Done():
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "session cancelled")
		return
	}
	logs := c.logBytes()
	resp := map[string]any{"cmdId": c.id, "exitCode": *c.exitCode()}
	switch logFormat(r) {
	case "combined":
		resp["output"] = string(strip(logs))
	case "split":
		so, serr := demux(logs)
		resp["output"], resp["stdout"], resp["stderr"] = string(logs), string(so), string(serr)
	default:
		resp["output"] = string(logs)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) getCmd(w http.ResponseWriter, r *http.Request, sb *sbx) *command {
	se := s.getSess(w, r, sb)
	if se == nil {
		return nil
	}
	se.mu.Lock()
	c := se.commands[r.PathValue("cid")]
	se.mu.Unlock()
	if c == nil {
		daemonError(w, r, http.StatusNotFound, "NOT_FOUND", "command not found")
	}
	return c
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request, sb *sbx) {
	if c := s.getCmd(w, r, sb); c != nil {
		writeJSON(w, http.StatusOK, commandJSON(c))
	}
}

func (s *Server) sendInput(w http.ResponseWriter, r *http.Request, sb *sbx) {
	c := s.getCmd(w, r, sb)
	if c == nil {
		return
	}
	var in struct {
		Data string `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "invalid request body")
		return
	}
	if c.exitCode() != nil || c.stdin == nil {
		daemonError(w, r, http.StatusGone, "COMMAND_ALREADY_COMPLETED", "command has already completed")
		return
	}
	if _, err := io.WriteString(c.stdin, in.Data); err != nil {
		daemonError(w, r, http.StatusGone, "COMMAND_ALREADY_COMPLETED", "command has already completed")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// commandLogs answers as the daemon does for the SDK version in X-Daytona-SDK-Version:
// JSON {output, stdout, stderr} from 0.167.0 on, combined plain text without a version
// header (unless X-Daytona-Split-Output: true), the raw prefixed log otherwise. Follow mode
// (WebSocket) is not served.
func (s *Server) commandLogs(w http.ResponseWriter, r *http.Request, sb *sbx) {
	c := s.getCmd(w, r, sb)
	if c == nil {
		return
	}
	if r.URL.Query().Get("follow") == "true" {
		daemonError(w, r, http.StatusBadRequest, "BAD_REQUEST", "follow mode is not supported by daytonafake")
		return
	}
	logs := c.logBytes()
	switch logFormat(r) {
	case "split":
		so, se := demux(logs)
		writeJSON(w, http.StatusOK, map[string]string{"output": string(logs), "stdout": string(so), "stderr": string(se)})
	case "combined":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(strip(logs))
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(logs)
	}
}

// logFormat mirrors the daemon's IsCombinedOutput / SkipServerDemux decisions.
func logFormat(r *http.Request) string {
	v := strings.TrimPrefix(r.Header.Get("X-Daytona-SDK-Version"), "v")
	if v == "" {
		if r.Header.Get("X-Daytona-Split-Output") == "true" {
			return "raw"
		}
		return "combined"
	}
	if strings.Contains(v, "dev") {
		return "split"
	}
	switch {
	case versionLess(v, "0.27.0"):
		return "combined"
	case versionLess(v, "0.167.0"):
		return "raw"
	}
	return "split"
}

func versionLess(a, b string) bool {
	pa, pb := strings.SplitN(a, "-", 2)[0], strings.SplitN(b, "-", 2)[0]
	as, bs := strings.Split(pa, "."), strings.Split(pb, ".")
	for i := 0; i < 3; i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func strip(logs []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(logs, stdoutPrefix, nil), stderrPrefix, nil)
}

// demux splits a prefixed log into stdout and stderr, like the daemon's DemuxLogBytes.
func demux(data []byte) (stdout, stderr []byte) {
	const n = 3
	next := func(from int) int {
		for i := from; i+n <= len(data); i++ {
			if bytes.Equal(data[i:i+n], stdoutPrefix) || bytes.Equal(data[i:i+n], stderrPrefix) {
				return i
			}
		}
		return len(data)
	}
	for pos := 0; pos < len(data); {
		switch {
		case pos+n <= len(data) && bytes.Equal(data[pos:pos+n], stdoutPrefix):
			end := next(pos + n)
			stdout = append(stdout, data[pos+n:end]...)
			pos = end
		case pos+n <= len(data) && bytes.Equal(data[pos:pos+n], stderrPrefix):
			end := next(pos + n)
			stderr = append(stderr, data[pos+n:end]...)
			pos = end
		default:
			pos++
		}
	}
	return stdout, stderr
}
