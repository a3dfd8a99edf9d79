package vercel

import (
	"archive/tar"
	"bufio"
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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

const (
	// sigkill is sent to a command whose Exec ctx ended.
	sigkill = 9
	// killGrace bounds the clean-up calls made after ctx ended (kill, learning the
	// command id).
	killGrace = 10 * time.Second
	// stdinScript feeds a file uploaded beforehand to the command as stdin:
	// sh -c stdinScript FILE ARGV... ($0 is the file, so no shift is needed and the script
	// stays within the plainest POSIX sh).
	stdinScript = `exec "$@" <"$0"`
	// lookScript exits 0 when $0 names an executable on PATH: sh -c lookScript NAME.
	lookScript = `command -v "$0" >/dev/null 2>&1`
	// maxStreamLine bounds one NDJSON record of a command stream. Vercel sends logs in
	// small chunks; a longer line is a broken or hostile peer, and without a bound it
	// would be buffered whole.
	maxStreamLine = 4 << 20
)

// Instance is one Vercel sandbox. It is safe for concurrent use.
type Instance struct {
	b *Backend
	// c is the client of the API the sandbox was created on: the backend's own, or a copy
	// aimed at the base URL the handle recorded.
	c          *Client
	name       string
	projectID  string
	persistent bool

	mu        sync.Mutex
	sessionID string
	routes    []Route
	ports     []int
	destroyed bool
}

// PersistentInstance is an Instance of a persistent sandbox: Vercel snapshots its
// filesystem on stop and restores it on start, so it is a backend.Stopper.
type PersistentInstance struct{ *Instance }

func (b *Backend) newInstance(c *Client, name, sessionID string, persistent bool, routes []Route, ports []int) *Instance {
	return &Instance{b: b, c: c, name: name, projectID: b.cfg.ProjectID, persistent: persistent,
		sessionID: sessionID, routes: routes, ports: ports}
}

// ability returns the instance with the optional abilities its sandbox really has.
func (i *Instance) ability() backend.Instance {
	if i.persistent {
		return &PersistentInstance{i}
	}
	return i
}

func (i *Instance) session() (string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.destroyed {
		return "", errdefs.NotFoundf("vercel: sandbox %s was destroyed", i.name)
	}
	return i.sessionID, nil
}

// Handle implements backend.Instance.
func (i *Instance) Handle() backend.Handle {
	i.mu.Lock()
	st, _ := json.Marshal(handleState{Name: i.name, SessionID: i.sessionID, ProjectID: i.projectID, Persistent: i.persistent, APIURL: i.c.baseURL, EndpointFromAPI: i.c.endpointFromAPI})
	i.mu.Unlock()
	return backend.Handle{Backend: Name, Version: handleVersion, State: st}
}

// Name returns the Vercel sandbox name.
func (i *Instance) Name() string { return i.name }

// gone turns a session-level failure into NotFound when the sandbox itself no longer
// exists (deleted here or on Vercel's side); other errors pass through.
func (i *Instance) gone(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	k := errdefs.KindOf(err)
	if k != errdefs.KindFailedPrecondition && k != errdefs.KindNotFound {
		return err
	}
	if _, gerr := i.c.GetSandbox(ctx, i.projectID, i.name, false); errdefs.Is(gerr, errdefs.KindNotFound) {
		return errdefs.NotFoundf("vercel: sandbox %s no longer exists", i.name)
	}
	return err
}

// Exec implements backend.Instance. Vercel's command API has no stdin: a non-nil Stdin is
// read to its end, uploaded to a temporary file and redirected into the command, so
// interactive input is not possible.
func (i *Instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	sid, err := i.session()
	if err != nil {
		return 0, err
	}
	argv := req.Argv
	if req.Stdin != nil {
		data, err := io.ReadAll(req.Stdin)
		if err != nil {
			return 0, fmt.Errorf("vercel: exec: reading stdin: %w", err)
		}
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		tmp := "/tmp/.moat-stdin-" + hex.EncodeToString(rnd[:])
		if err := i.upload(ctx, sid, tmp, data, 0o600); err != nil {
			return 0, i.gone(ctx, err)
		}
		argv = append([]string{"sh", "-c", stdinScript, tmp}, argv...)
		defer func() {
			// The file is removed after the command (with a fresh bound: ctx may be over).
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killGrace)
			defer cancel()
			_, _ = i.run(cctx, sid, []string{"rm", "-f", "--", tmp}, nil, "/", io.Discard, io.Discard)
		}()
	}
	code, err := i.run(ctx, sid, argv, req.Env, req.Workdir, req.Stdout, req.Stderr)
	if err != nil {
		return 0, i.gone(ctx, err)
	}
	if code == 127 {
		// 127 is how Vercel's runner (like a shell) reports a missing executable; ask the
		// sandbox whether argv[0] exists to tell that from a command that merely exits 127.
		probe := []string{"sh", "-c", lookScript, req.Argv[0]}
		if strings.Contains(req.Argv[0], "/") {
			probe = []string{"test", "-e", req.Argv[0]}
		}
		found, lerr := i.run(ctx, sid, probe, req.Env, req.Workdir, io.Discard, io.Discard)
		if lerr == nil && found != 0 {
			return 0, errdefs.NotFoundf("vercel: exec: executable %q not found", req.Argv[0])
		}
	}
	return code, nil
}

// run starts argv with the command API in streaming mode and copies its logs until the
// final record. When ctx ends the remote command is killed.
func (i *Instance) run(ctx context.Context, sid string, argv []string, env map[string]string, cwd string, stdout, stderr io.Writer) (int, error) {
	if env == nil {
		env = map[string]string{}
	}
	body := &RunCommandRequest{Command: argv[0], Args: argv[1:], Cwd: cwd, Env: env}
	if body.Args == nil {
		body.Args = []string{}
	}
	// The request outlives ctx on purpose: after ctx ends the command is killed first
	// and the stream is cut only then, so nothing keeps running remotely.
	reqCtx, cancelReq := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReq()
	idCh := make(chan string, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		defer cancelReq()
		timer := time.NewTimer(killGrace)
		defer timer.Stop()
		select {
		case id := <-idCh:
			kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), killGrace)
			defer kcancel()
			if err := i.c.KillCommand(kctx, sid, id, sigkill); err != nil {
				i.b.log.Warn("vercel: kill after cancel failed", "sandbox", i.name, "command", id, "err", err)
			}
		case <-timer.C:
		case <-done:
		}
	}()

	stream, err := i.c.RunCommandStream(reqCtx, sid, body)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("vercel: exec: %w", ctx.Err())
		}
		return 0, err
	}
	defer stream.Close()
	code, err := readCommandStream(stream, idCh, stdout, stderr)
	if ctx.Err() != nil {
		return 0, fmt.Errorf("vercel: exec: %w", ctx.Err())
	}
	return code, err
}

// readCommandStream reads an NDJSON command stream: the started command (its id is sent
// on idCh), log chunks, then the finished command with its exit code.
func readCommandStream(r io.Reader, idCh chan<- string, stdout, stderr io.Writer) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	started := false
	var line []byte
	for {
		var rerr error
		line, rerr = readLine(br, line[:0])
		if errors.Is(rerr, errLineTooLong) {
			return 0, errdefs.Unavailablef("vercel: exec: stream line too long (over %d bytes)", maxStreamLine)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			var ll LogLine
			if err := json.Unmarshal(line, &ll); err != nil {
				return 0, errdefs.Unavailablef("vercel: exec: malformed stream line: %q", restapi.Prefix(line, 80))
			}
			switch {
			case ll.Command != nil && !started:
				started = true
				select {
				case idCh <- ll.Command.ID:
				default:
				}
			case ll.Command != nil:
				if ll.Command.ExitCode == nil {
					return 0, errdefs.Unavailablef("vercel: exec: final command record has no exit code")
				}
				return *ll.Command.ExitCode, nil
			case ll.Stream == "stdout" || ll.Stream == "stderr":
				var s string
				if err := json.Unmarshal(ll.Data, &s); err != nil {
					return 0, errdefs.Unavailablef("vercel: exec: malformed log data: %q", restapi.Prefix(ll.Data, 80))
				}
				w := stdout
				if ll.Stream == "stderr" {
					w = stderr
				}
				if _, err := io.WriteString(w, s); err != nil {
					return 0, fmt.Errorf("vercel: exec: writing %s: %w", ll.Stream, err)
				}
			case ll.Stream == "error":
				var e struct{ Code, Message string }
				_ = json.Unmarshal(ll.Data, &e)
				return 0, errdefs.Newf(kindFor(0, e.Code), "vercel: exec: %w", &APIError{Code: e.Code, Message: e.Message})
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return 0, errdefs.Unavailablef("vercel: exec: stream ended before the command finished")
			}
			return 0, errdefs.Unavailablef("vercel: exec: reading stream: %v", rerr)
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine appends the next line of br (with its newline, if any) to buf, failing with
// errLineTooLong once it grows past maxStreamLine. Errors are bufio.Reader.ReadSlice's.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > maxStreamLine {
			return nil, errLineTooLong
		}
		buf = append(buf, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
}

// Status implements backend.Instance.
func (i *Instance) Status(ctx context.Context) (backend.Status, error) {
	i.mu.Lock()
	destroyed := i.destroyed
	i.mu.Unlock()
	if destroyed {
		return backend.StatusGone, nil
	}
	resp, err := i.c.GetSandbox(ctx, i.projectID, i.name, false)
	if errdefs.Is(err, errdefs.KindNotFound) {
		return backend.StatusGone, nil
	}
	if err != nil {
		return "", err
	}
	switch resp.Sandbox.Status {
	case "running", "pending":
		if sid := resp.Sandbox.CurrentSessionID; sid != "" {
			i.mu.Lock()
			i.sessionID = sid // someone (another moat, the SDK) may have resumed it
			i.mu.Unlock()
		}
		return backend.StatusRunning, nil
	}
	return backend.StatusStopped, nil
}

// Destroy implements backend.Instance: deleting a deleted sandbox succeeds.
func (i *Instance) Destroy(ctx context.Context) error {
	err := i.c.DeleteSandbox(ctx, i.projectID, i.name)
	if err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
		return err
	}
	i.mu.Lock()
	i.destroyed = true
	i.mu.Unlock()
	return nil
}

// ---- files ----------------------------------------------------------------------------

// WriteFile implements backend.FileTransferer with the gzipped-tar upload; Vercel creates
// missing parent directories.
func (i *Instance) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	sid, err := i.session()
	if err != nil {
		return err
	}
	var data []byte
	if r != nil {
		// The tar header needs the size before the bytes.
		if data, err = io.ReadAll(r); err != nil {
			return fmt.Errorf("vercel: write %s: reading input: %w", path, err)
		}
	}
	return i.gone(ctx, i.upload(ctx, sid, path, data, mode))
}

func (i *Instance) upload(ctx context.Context, sid, path string, data []byte, mode fs.FileMode) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(path, "/"), // relative to the x-cwd "/" as the SDK does
		Size:     int64(len(data)),
		Mode:     int64(execfs.ToUnixMode(mode) & 0o7777),
		ModTime:  time.Now(),
		Format:   tar.FormatPAX, // long and UTF-8 names
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return errdefs.InvalidArgumentf("vercel: write %s: %v", path, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("vercel: write %s: %w", path, err)
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return fmt.Errorf("vercel: write %s: %w", path, err)
	}
	return i.c.WriteFiles(ctx, sid, "/", buf.Bytes())
}

// ReadFile implements backend.FileTransferer with the raw read endpoint.
func (i *Instance) ReadFile(ctx context.Context, path string, w io.Writer) error {
	sid, err := i.session()
	if err != nil {
		return err
	}
	rc, err := i.c.ReadFile(ctx, sid, path)
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) && apiCode(err) == "" {
			return err // the file is missing, the sandbox is fine
		}
		return i.gone(ctx, err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("vercel: read %s: %w", path, ctx.Err())
		}
		return errdefs.Unavailablef("vercel: read %s: %v", path, err)
	}
	return nil
}

// ListDir implements backend.FileTransferer. Vercel has no listing endpoint (its SDK runs
// ls/find too), so this runs execfs's fixed find+stat script through Exec.
func (i *Instance) ListDir(ctx context.Context, path string) ([]backend.FileInfo, error) {
	return execfs.New(i).ListDir(ctx, path)
}

func (i *Instance) mkdirAll(ctx context.Context, dir string) error {
	sid, err := i.session()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	code, err := i.run(ctx, sid, []string{"mkdir", "-p", "--", dir}, nil, "/", io.Discard, &stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return errdefs.InvalidArgumentf("vercel: create workdir %s: mkdir exited %d: %s", dir, code, restapi.Prefix(stderr.Bytes(), 200))
	}
	return nil
}

// ---- optional abilities ---------------------------------------------------------------

// Snapshot implements backend.Snapshotter. Vercel stops a session to snapshot it; the
// sandbox is resumed at once (from that snapshot) so the instance stays usable.
func (i *Instance) Snapshot(ctx context.Context, name string) (backend.Snapshot, error) {
	sid, err := i.session()
	if err != nil {
		return backend.Snapshot{}, err
	}
	resp, err := i.c.CreateSnapshot(ctx, sid)
	if err != nil {
		return backend.Snapshot{}, i.gone(ctx, err)
	}
	if err := i.resume(ctx); err != nil {
		return backend.Snapshot{}, fmt.Errorf("vercel: resume after snapshot: %w", err)
	}
	created := time.UnixMilli(resp.Snapshot.CreatedAt).UTC()
	if resp.Snapshot.CreatedAt == 0 {
		created = time.Now().UTC()
	}
	return backend.Snapshot{ID: resp.Snapshot.ID, Image: SnapshotImagePrefix + resp.Snapshot.ID, CreatedAt: created}, nil
}

// resume boots a new session (the sandbox's current snapshot restored) and adopts it.
func (i *Instance) resume(ctx context.Context) error {
	resp, err := i.c.GetSandbox(ctx, i.projectID, i.name, true)
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.sessionID = resp.Session.ID
	if resp.Routes != nil {
		i.routes = resp.Routes
	}
	i.mu.Unlock()
	return nil
}

// ExposePort implements backend.PortExposer: the sandbox route's public https URL, adding
// the port to the sandbox's exposed ports when needed.
func (i *Instance) ExposePort(ctx context.Context, port int) (string, error) {
	if port < 1 || port > 65535 {
		return "", errdefs.InvalidArgumentf("vercel: port %d out of range", port)
	}
	if _, err := i.session(); err != nil {
		return "", err
	}
	i.mu.Lock()
	for _, r := range i.routes {
		if r.Port == port {
			i.mu.Unlock()
			return r.URL, nil
		}
	}
	ports := slices.Clone(i.ports)
	i.mu.Unlock()
	if !slices.Contains(ports, port) {
		ports = append(ports, port)
		slices.Sort(ports)
	}
	routes, err := i.c.UpdatePorts(ctx, i.projectID, i.name, ports)
	if err != nil {
		return "", err
	}
	i.mu.Lock()
	i.routes, i.ports = routes, ports
	i.mu.Unlock()
	for _, r := range routes {
		if r.Port == port {
			return r.URL, nil
		}
	}
	return "", errdefs.Unavailablef("vercel: no route for port %d after exposing it", port)
}

// Stop implements backend.Stopper: Vercel snapshots a persistent sandbox as it stops.
func (p *PersistentInstance) Stop(ctx context.Context) error {
	sid, err := p.session()
	if err != nil {
		return err
	}
	if _, err := p.c.StopSession(ctx, sid); err != nil {
		return p.gone(ctx, err)
	}
	return nil
}

// Start implements backend.Stopper: it resumes the sandbox from its last snapshot.
func (p *PersistentInstance) Start(ctx context.Context) error {
	if _, err := p.session(); err != nil {
		return err
	}
	return p.resume(ctx)
}

var (
	_ backend.Instance       = (*Instance)(nil)
	_ backend.FileTransferer = (*Instance)(nil)
	_ backend.Snapshotter    = (*Instance)(nil)
	_ backend.PortExposer    = (*Instance)(nil)
	_ backend.Stopper        = (*PersistentInstance)(nil)
)
