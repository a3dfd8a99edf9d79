package e2b

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// instance is one E2B sandbox.
type instance struct {
	b *Backend
	// c is the client of the control plane the sandbox was created on (the backend's own,
	// or a copy aimed at the api_url the handle recorded); sandboxURL and domain are the
	// envd endpoint it was created with.
	c          *client
	sandboxURL string
	id         string
	domain     string
	timeout    int // seconds

	mu          sync.Mutex
	accessToken string // envd access token; a secret, never in Handle or errors
	version     string // envd version

	destroyed atomic.Bool
}

// newInstance returns the instance of sandbox id on the endpoint ep; an empty domain is
// the configured one.
func (b *Backend) newInstance(ep endpoint, id, domain string, timeout int, version, token string) *instance {
	if domain == "" {
		domain = b.cfg.Domain
	}
	return &instance{b: b, c: ep.c, sandboxURL: ep.sandboxURL, id: id, domain: domain, timeout: timeout,
		version: version, accessToken: token}
}

// envd returns a client for this sandbox's envd with the current access token.
func (i *instance) envd() *envd {
	i.mu.Lock()
	defer i.mu.Unlock()
	return &envd{
		c:           i.c,
		base:        envdBase(i.sandboxURL, i.id, i.domain),
		sandboxID:   i.id,
		accessToken: i.accessToken,
		user:        i.b.cfg.User,
		version:     i.version,
	}
}

// Handle implements backend.Instance.
func (i *instance) Handle() backend.Handle {
	return makeHandle(handleState{SandboxID: i.id, Domain: i.domain, Timeout: i.timeout,
		APIURL: i.c.apiURL, SandboxURL: i.sandboxURL, EndpointFromAPI: i.c.endpointFromAPI})
}

func (i *instance) notFound() error {
	return errdefs.NotFoundf("e2b: sandbox %s not found", i.id)
}

// envdErr refines an envd error: the edge proxy's 502 means "no such sandbox" only when the
// control plane agrees; a paused sandbox is FailedPrecondition.
func (i *instance) envdErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if i.destroyed.Load() {
		return i.notFound()
	}
	var g *goneError
	if !errors.As(err, &g) {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	d, gerr := i.c.getSandbox(cctx, i.id)
	switch {
	case errdefs.Is(gerr, errdefs.KindNotFound):
		return errdefs.Newf(errdefs.ErrNotFound, "e2b: sandbox %s not found: %w", i.id, err)
	case gerr == nil && d.State == "paused":
		return errdefs.Newf(errdefs.ErrFailedPrecondition, "e2b: sandbox %s is paused", i.id)
	}
	return err
}

// execWrapper runs argv through a fixed script so that a missing executable is told apart
// from a command that exits 127: the script prints an unmistakable marker to stderr and the
// client turns it into NotFound. envd itself wraps every command in "/bin/sh -c ... exec",
// so without this a missing binary would only ever be exit status 127.
const (
	execWrapper    = `command -v "$1" >/dev/null 2>&1 || { printf '\036moat-e2b:enoent\036' >&2; exit 127; }; exec "$@"`
	notFoundMarker = "\x1emoat-e2b:enoent\x1e"
)

// Exec implements backend.Instance through envd's process.Process/Start stream. Stdin goes
// through SendInput/CloseStdin; when ctx ends the process is killed remotely with
// SendSignal(SIGKILL), because envd keeps a process running when its stream is dropped.
func (i *instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	if i.destroyed.Load() {
		return -1, i.notFound()
	}
	e := i.envd()
	tag := newTag()
	start := startRequest{
		Process: processConfig{
			Cmd:  "/bin/sh",
			Args: append([]string{"-c", execWrapper, "moat-e2b"}, req.Argv...),
			Envs: req.Env,
			Cwd:  req.Workdir,
		},
		Tag:   tag,
		Stdin: req.Stdin != nil,
	}
	hdr := http.Header{"Keepalive-Ping-Interval": {"50"}}
	setConnectTimeout(ctx, hdr)

	streamCtx, cancelStream := context.WithCancel(ctx)
	defer cancelStream()
	sr, err := e.stream(streamCtx, "process.Process/Start", start, hdr)
	if err != nil {
		if ctx.Err() != nil {
			i.kill(ctx, e, processSelector{Tag: tag})
			return -1, errdefs.Wrap(kindOfCtx(ctx.Err()), fmt.Errorf("e2b: exec: %w", ctx.Err()))
		}
		return -1, i.envdErr(ctx, err)
	}
	defer sr.Close()

	stderr := &markerFilter{w: req.Stderr}
	var (
		pid      uint32
		end      *endInfo
		stdinErr = make(chan error, 1)
	)
	for {
		var ev processEvent
		err := sr.next(&ev)
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				i.kill(ctx, e, selectorFor(pid, tag))
				return -1, errdefs.Wrap(kindOfCtx(ctx.Err()), fmt.Errorf("e2b: exec: %w", ctx.Err()))
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = errdefs.Unavailablef("e2b: exec: process stream ended early: %v", err)
			}
			if pid == 0 && errdefs.Is(err, errdefs.KindInvalidArgument) && strings.Contains(err.Error(), "does not exist") {
				// envd refuses a missing cwd before starting anything.
				return -1, err
			}
			return -1, i.envdErr(ctx, err)
		}
		switch ev := ev.Event; {
		case ev.Start != nil:
			pid = ev.Start.Pid
			if req.Stdin != nil {
				go func(sel processSelector) {
					err := i.pumpStdin(streamCtx, e, sel, req.Stdin)
					if err != nil && streamCtx.Err() == nil && !errdefs.Is(err, errdefs.KindNotFound) {
						// The process would wait for input forever: end it and say why.
						stdinErr <- err
						i.kill(ctx, e, sel)
					}
				}(processSelector{Pid: pid})
			}
		case ev.Data != nil:
			var werr error
			if len(ev.Data.Stdout) > 0 {
				_, werr = req.Stdout.Write(ev.Data.Stdout)
			}
			if len(ev.Data.Stderr) > 0 && werr == nil {
				_, werr = stderr.Write(ev.Data.Stderr)
			}
			if len(ev.Data.Pty) > 0 && werr == nil {
				_, werr = req.Stdout.Write(ev.Data.Pty)
			}
			if werr != nil {
				i.kill(ctx, e, selectorFor(pid, tag))
				return -1, fmt.Errorf("e2b: exec: write output: %w", werr)
			}
		case ev.End != nil:
			end = &endInfo{code: ev.End.ExitCode, exited: ev.End.Exited, status: ev.End.Status}
		}
	}
	select {
	case err := <-stdinErr:
		return -1, fmt.Errorf("e2b: exec: stdin: %w", err)
	default:
	}
	if end == nil {
		return -1, errdefs.Unavailablef("e2b: exec: process stream ended without an end event")
	}
	code, err := end.exitCode()
	if err != nil {
		return -1, err
	}
	if code == 127 && stderr.isMarker() {
		return -1, errdefs.NotFoundf("e2b: exec: executable %q not found", req.Argv[0])
	}
	if err := stderr.flush(); err != nil {
		return -1, fmt.Errorf("e2b: exec: write output: %w", err)
	}
	return code, nil
}

func selectorFor(pid uint32, tag string) processSelector {
	if pid != 0 {
		return processSelector{Pid: pid}
	}
	return processSelector{Tag: tag}
}

// kill sends SIGKILL to the process on a context that outlives the caller's.
func (i *instance) kill(ctx context.Context, e *envd, sel processSelector) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := e.sendSignal(kctx, sel, "SIGNAL_SIGKILL"); err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
		i.b.log.Warn("kill remote process", "sandbox", i.id, "err", err)
	}
}

// pumpStdin copies r to the process in chunks, then closes its stdin (EOF). A NotFound
// answer means the process ended without reading everything, which is not an error.
func (i *instance) pumpStdin(ctx context.Context, e *envd, sel processSelector, r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := e.sendInput(ctx, sel, buf[:n]); err != nil {
				return err // the process may have exited without reading: not our error
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read stdin: %w", rerr)
		}
	}
	if !versionAtLeast(e.version, envdCloseStdin) {
		return errdefs.Unsupportedf("e2b: envd %s cannot close stdin", e.version)
	}
	return e.closeStdin(ctx, sel)
}

type endInfo struct {
	code   int32
	exited bool
	status string
}

// signalNumbers maps Go's (os.ProcessState) Linux signal descriptions, which envd puts in
// the end event's status ("signal: killed"), to numbers.
var signalNumbers = map[string]int{
	"hangup": 1, "interrupt": 2, "quit": 3, "illegal instruction": 4, "trace/breakpoint trap": 5,
	"aborted": 6, "bus error": 7, "floating point exception": 8, "killed": 9,
	"user defined signal 1": 10, "segmentation fault": 11, "user defined signal 2": 12,
	"broken pipe": 13, "alarm clock": 14, "terminated": 15,
}

// exitCode returns the exit code, 128+signal for a signalled process.
func (e *endInfo) exitCode() (int, error) {
	if e.exited || e.code >= 0 && !strings.HasPrefix(e.status, "signal: ") {
		return int(e.code), nil
	}
	s := strings.TrimPrefix(e.status, "signal: ")
	s = strings.TrimSuffix(s, " (core dumped)")
	if n, ok := signalNumbers[s]; ok {
		return 128 + n, nil
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "signal ")); err == nil {
		return 128 + n, nil
	}
	return -1, errdefs.Unavailablef("e2b: exec: process ended abnormally: %q", e.status)
}

// markerFilter passes stderr through, holding back only bytes that could still be the
// not-found marker (at most len(marker) bytes at the very start).
type markerFilter struct {
	w           io.Writer
	held        []byte
	passthrough bool
}

func (m *markerFilter) Write(p []byte) (int, error) {
	if m.passthrough {
		return m.w.Write(p)
	}
	m.held = append(m.held, p...)
	if len(m.held) <= len(notFoundMarker) && strings.HasPrefix(notFoundMarker, string(m.held)) {
		return len(p), nil
	}
	m.passthrough = true
	held := m.held
	m.held = nil
	if _, err := m.w.Write(held); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (m *markerFilter) isMarker() bool { return !m.passthrough && string(m.held) == notFoundMarker }

func (m *markerFilter) flush() error {
	if m.passthrough || len(m.held) == 0 {
		return nil
	}
	m.passthrough = true
	_, err := m.w.Write(m.held)
	m.held = nil
	return err
}

func newTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "moat-" + hex.EncodeToString(b[:])
}

// Status implements backend.Instance.
func (i *instance) Status(ctx context.Context) (backend.Status, error) {
	if i.destroyed.Load() {
		return backend.StatusGone, nil
	}
	cctx, cancel := i.b.callCtx(ctx)
	defer cancel()
	d, err := i.c.getSandbox(cctx, i.id)
	if errdefs.Is(err, errdefs.KindNotFound) {
		return backend.StatusGone, nil
	}
	if err != nil {
		return "", err
	}
	switch d.State {
	case "running":
		return backend.StatusRunning, nil
	case "paused", "pausing":
		return backend.StatusPaused, nil
	}
	return backend.StatusStopped, nil
}

// Destroy implements backend.Instance: DELETE /sandboxes/{id} (kill). Already gone is success.
func (i *instance) Destroy(ctx context.Context) error {
	cctx, cancel := i.b.callCtx(ctx)
	defer cancel()
	err := i.c.killSandbox(cctx, i.id)
	if err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
		return err
	}
	i.destroyed.Store(true)
	return nil
}

// WriteFile implements backend.FileTransferer: POST /files (which creates parents and
// overwrites), then chmod, since envd's upload has no mode.
func (i *instance) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	if i.destroyed.Load() {
		return i.notFound()
	}
	e := i.envd()
	if err := e.upload(ctx, path, r); err != nil {
		return i.envdErr(ctx, err)
	}
	perm := mode.Perm()
	if perm == 0 && mode == 0 {
		perm = 0o644
	}
	var stderr bytes.Buffer
	code, err := i.Exec(ctx, &backend.ExecRequest{
		Argv:   []string{"chmod", strconv.FormatUint(uint64(perm), 8), path},
		Stdout: io.Discard, Stderr: &stderr,
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("e2b: chmod %s: exit %d: %s", path, code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ReadFile implements backend.FileTransferer: GET /files.
func (i *instance) ReadFile(ctx context.Context, path string, w io.Writer) error {
	if i.destroyed.Load() {
		return i.notFound()
	}
	return i.envdErr(ctx, i.envd().download(ctx, path, w))
}

// ListDir implements backend.FileTransferer: filesystem.Filesystem/ListDir with depth 1.
func (i *instance) ListDir(ctx context.Context, path string) ([]backend.FileInfo, error) {
	if i.destroyed.Load() {
		return nil, i.notFound()
	}
	entries, err := i.envd().listDir(ctx, path)
	if err != nil {
		return nil, i.envdErr(ctx, err)
	}
	out := make([]backend.FileInfo, 0, len(entries))
	for _, en := range entries {
		mode := fs.FileMode(en.Mode)
		switch en.Type {
		case "FILE_TYPE_DIRECTORY":
			mode |= fs.ModeDir
		case "FILE_TYPE_SYMLINK":
			mode |= fs.ModeSymlink
		}
		out = append(out, backend.FileInfo{
			Name:    en.Name,
			Size:    en.Size,
			Mode:    mode,
			ModTime: en.ModifiedTime,
			IsDir:   mode.IsDir(),
		})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// Pause implements backend.Pauser: POST /sandboxes/{id}/pause (memory snapshot).
func (i *instance) Pause(ctx context.Context) error {
	if i.destroyed.Load() {
		return i.notFound()
	}
	cctx, cancel := i.b.callCtx(ctx)
	defer cancel()
	err := i.c.pauseSandbox(cctx, i.id)
	if errdefs.Is(err, errdefs.KindConflict) {
		return nil // already paused
	}
	return err
}

// Resume implements backend.Pauser: POST /v2/sandboxes/{id}/connect resumes a paused sandbox
// and may hand out a new envd access token.
func (i *instance) Resume(ctx context.Context) error {
	if i.destroyed.Load() {
		return i.notFound()
	}
	cctx, cancel := i.b.callCtx(ctx)
	defer cancel()
	sb, err := i.c.connectSandbox(cctx, i.id, i.timeout)
	if err != nil {
		return err
	}
	i.mu.Lock()
	if sb.EnvdAccessToken != "" {
		i.accessToken = sb.EnvdAccessToken
	}
	if sb.EnvdVersion != "" {
		i.version = sb.EnvdVersion
	}
	i.mu.Unlock()
	return nil
}

// ExposePort implements backend.PortExposer: E2B serves every sandbox port at
// https://<port>-<id>.<domain> (public unless the template restricts traffic).
func (i *instance) ExposePort(ctx context.Context, port int) (string, error) {
	if port < 1 || port > 65535 {
		return "", errdefs.InvalidArgumentf("e2b: port %d out of range", port)
	}
	if i.destroyed.Load() {
		return "", i.notFound()
	}
	return fmt.Sprintf("https://%d-%s.%s", port, i.id, i.domain), nil
}

// Snapshot implements backend.Snapshotter: POST /sandboxes/{id}/snapshots. E2B briefly
// pauses the sandbox; the snapshot id is a template id, so it is also the Image to create
// from.
func (i *instance) Snapshot(ctx context.Context, name string) (backend.Snapshot, error) {
	if i.destroyed.Load() {
		return backend.Snapshot{}, i.notFound()
	}
	cctx, cancel := i.b.callCtx(ctx)
	defer cancel()
	sn, err := i.c.snapshotSandbox(cctx, i.id, name)
	if err != nil {
		return backend.Snapshot{}, err
	}
	if sn.SnapshotID == "" {
		return backend.Snapshot{}, errdefs.Unavailablef("e2b: snapshot of %s: answer without snapshotID", i.id)
	}
	return backend.Snapshot{ID: sn.SnapshotID, Image: sn.SnapshotID, CreatedAt: time.Now().UTC()}, nil
}

var (
	_ backend.Snapshotter    = (*instance)(nil)
	_ backend.Instance       = (*instance)(nil)
	_ backend.FileTransferer = (*instance)(nil)
	_ backend.Pauser         = (*instance)(nil)
	_ backend.PortExposer    = (*instance)(nil)
)
