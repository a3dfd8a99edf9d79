// Package docker answers "how does moat run a sandbox as a Docker container?": a backend on
// the Docker Engine API (the Go SDK, never the docker CLI). Each sandbox is one long-lived
// container named moat-<id> and labelled moat.id=<id>, moat.managed=true; commands run as
// execs inside it, files move through the archive endpoints.
//
// Exec is fast through moat-agent: on a local daemon, Create bind-mounts
// <StateDir>/agents/<id>/ at /.moat with the agent binary (read-only) and makes the agent
// the container's main process under docker-init; commands then start with a fork/exec
// inside the container, requested over the unix socket <StateDir>/agents/<id>/agent.sock
// (docs/agent-protocol.md), instead of an Engine API exec round trip (~1 ms instead of
// ~100 ms). The binary comes from Config.Agent, else next to the running executable
// (`make build` puts bin/moat-agent beside bin/moat), else moat-agent in $PATH; it is
// never downloaded. Whenever the agent cannot be used — no binary, a remote daemon, a
// container created without it (Version 1 handles), a paused container, a socket that does
// not answer — Exec takes the Engine API path with the same semantics.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Name is the name the backend registers under.
const Name = "docker"

// Labels put on every container the backend creates.
const (
	LabelID      = "moat.id"      // CreateRequest.ID
	LabelManaged = "moat.managed" // "true"
	LabelPrefix  = "moat.label."  // prefix of CreateRequest.Labels keys
)

// Pull policies.
const (
	PullNever   = "never"   // only local images; a missing image is NotFound
	PullMissing = "missing" // pull when the image is not present locally
	PullAlways  = "always"  // pull before every create
)

// DefaultImage is the image used when neither the request nor the config names one.
const DefaultImage = "debian:bookworm-slim"

// keepAlive is the container's main process: it idles until SIGTERM (forwarded by the
// docker-init PID 1, which also reaps orphaned exec children), so Stop is immediate. It
// relies on sh and sleep only, both in every Debian and busybox image.
var keepAlive = []string{"/bin/sh", "-c", `trap "exit 0" TERM; while :; do sleep 3600 & wait; done`}

// Config is the [backends.docker] section of moat.toml.
type Config struct {
	// Host is the Docker daemon address ("unix:///var/run/docker.sock", "tcp://host:2376").
	// Empty uses DOCKER_HOST (and DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), else the local socket.
	Host string `toml:"host" json:"host,omitempty"`
	// Image is the default image for sandboxes that do not name one (default
	// "debian:bookworm-slim"). It needs /bin/sh.
	Image string `toml:"image" json:"image,omitempty"`
	// Runtime is the OCI runtime for sandbox containers ("runsc" for gVisor); empty is the
	// daemon's default.
	Runtime string `toml:"runtime" json:"runtime,omitempty"`
	// Pull says when images are pulled: "never" (default: images must be present locally),
	// "missing" (pull when absent) or "always".
	Pull string `toml:"pull" json:"pull,omitempty"`
	// Network is the Docker network for sandboxes that ask for network access (default
	// "bridge"). Sandboxes without network access always get "none" (loopback only).
	Network string `toml:"network" json:"network,omitempty"`
	// Agent says where the moat-agent binary comes from: "" or "auto" looks next to the
	// running executable, then in $PATH; a path names it; "off" never uses the agent (every
	// exec goes through the Engine API). It must be a static binary for the daemon's
	// architecture; the agent is only used with a daemon on a local unix socket.
	Agent string `toml:"agent" json:"agent,omitempty"`
	// StateDir is where the backend keeps agent binaries and sockets; the registered
	// factory sets it to moat's state directory for the backend. "" uses a temporary
	// directory made on first use.
	StateDir string `toml:"-" json:"-"`
}

// settingHost is the daemon address: a socket path on the host, so only the operator sets
// it (moat.toml or DOCKER_HOST), never the settings API.
var settingHost = backend.Setting{Key: "host", Env: []string{"DOCKER_HOST"}, OperatorOnly: true,
	Doc: "Docker daemon address (default the local socket)"}

// Backend is the Docker backend. It is safe for concurrent use.
type Backend struct {
	cli     *client.Client
	cfg     Config
	host    string // daemon address, for messages
	hostPID bool   // test hook: false forces killing exec processes from inside the container
	// extraLabels is a test hook: labels added to every container, so tests can find and
	// remove what they made even when they fail half-way.
	extraLabels map[string]string

	stateOnce sync.Once
	state     string
	stateErr  error
	agentOnce sync.Once
	agentBin  string // installed agent binary; "" when the agent is not used
	agentWhy  string // why not
	logf      func(format string, args ...any)
	// noAgentExec is a test and benchmark hook: exec through the Engine API even when the
	// container has an agent.
	noAgentExec bool
}

func init() {
	backend.Register(Name, func(cfg backend.Config) (backend.Backend, error) {
		var c Config
		if cfg.Decode != nil {
			if err := cfg.Decode(&c); err != nil {
				return nil, errdefs.Newf(errdefs.ErrInvalidArgument, "docker: config: %w", err)
			}
		}
		// Explicit config wins over the DOCKER_HOST alias; the SDK reads the TLS variables
		// (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) from the process environment itself.
		cfg.Fill(settingHost, &c.Host)
		c.StateDir = cfg.StateDir
		b, err := New(c)
		if err == nil && cfg.Logger != nil {
			b.logf = func(format string, args ...any) { cfg.Logger.Warn(fmt.Sprintf(format, args...)) }
		}
		return b, err
	})
}

// New returns a Docker backend. It does no I/O: use Probe to learn whether the daemon is
// reachable.
func New(cfg Config) (*Backend, error) {
	if cfg.Image == "" {
		cfg.Image = DefaultImage
	}
	switch cfg.Pull {
	case "":
		cfg.Pull = PullNever
	case PullNever, PullMissing, PullAlways:
	default:
		return nil, errdefs.InvalidArgumentf("docker: config: pull must be %q, %q or %q, not %q",
			PullNever, PullMissing, PullAlways, cfg.Pull)
	}
	if cfg.Network == "" {
		cfg.Network = "bridge"
	}
	if cfg.Network == "none" || cfg.Network == "host" {
		// "host" would share the host's network stack, which is not what NetworkHost means.
		return nil, errdefs.InvalidArgumentf("docker: config: network %q is not allowed", cfg.Network)
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, errdefs.Newf(errdefs.ErrInvalidArgument, "docker: client: %w", err)
	}
	return &Backend{cli: cli, cfg: cfg, host: cli.DaemonHost(), hostPID: true,
		logf: func(string, ...any) {}}, nil
}

// Close releases the client's idle connections.
func (b *Backend) Close() error { return b.cli.Close() }

// Descriptor implements backend.Backend.
func (b *Backend) Descriptor() backend.Descriptor {
	return backend.Descriptor{
		Name:           Name,
		Isolation:      backend.IsolationContainer,
		PackageManager: "apt-get",
		DefaultImage:   b.cfg.Image,
		AutoRank:       backend.RankDocker,
		Summary:        "Engine API (Go SDK, never the CLI); network none; memory/CPU/pids limits; labels `moat.id`, `moat.managed`",
		Settings:       []backend.Setting{settingHost},
	}
}

// Probe implements backend.Prober: the daemon must answer a ping within a few seconds. A
// default image that is absent locally while pulling is off makes the backend degraded.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := b.cli.Ping(ctx); err != nil {
		return backend.Health{State: backend.Unavailable,
			Reason: fmt.Sprintf("docker: cannot reach %s: %v", b.host, err)}
	}
	if b.cfg.Pull == PullNever {
		if _, err := b.cli.ImageInspect(ctx, b.cfg.Image); err != nil {
			return backend.Health{State: backend.Degraded,
				Reason: fmt.Sprintf("docker: default image %s is not present locally and pull is %q", b.cfg.Image, b.cfg.Pull)}
		}
	}
	return backend.Health{State: backend.Ready}
}

// createOptions are the CreateRequest.Options the backend accepts.
type createOptions struct {
	// Runtime overrides Config.Runtime for one sandbox.
	Runtime string `json:"runtime"`
}

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	var opts createOptions
	if len(req.Options) > 0 && string(req.Options) != "null" {
		dec := json.NewDecoder(strings.NewReader(string(req.Options)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opts); err != nil {
			return nil, errdefs.Newf(errdefs.ErrInvalidArgument, "docker: options: %w", err)
		}
	}
	runtime := b.cfg.Runtime
	if opts.Runtime != "" {
		runtime = opts.Runtime
	}
	img := req.Image
	if img == "" {
		img = b.cfg.Image
	}
	if err := b.ensureImage(ctx, img); err != nil {
		return nil, err
	}

	inst, err := b.create(ctx, req, img, runtime, true)
	var retry *agentStartError
	if errors.As(err, &retry) {
		// The agent kept the container from starting or never answered: the sandbox works
		// without it, only slower.
		b.logf("docker: sandbox %s runs without the agent: %v", req.ID, retry.err)
		inst, err = b.create(ctx, req, img, runtime, false)
	}
	if err != nil {
		return nil, err // never a typed nil inside the interface
	}
	return inst, nil
}

// agentStartError says a create failed because of the agent; Create retries without it.
type agentStartError struct{ err error }

func (e *agentStartError) Error() string { return e.err.Error() }

// create makes and starts the container, with the agent as its main process when
// withAgent and the agent is usable here.
func (b *Backend) create(ctx context.Context, req *backend.CreateRequest, img, runtime string, withAgent bool) (*Instance, error) {
	var agentDir string
	var mounts []mount.Mount
	entrypoint := keepAlive
	if withAgent {
		var err error
		agentDir, mounts, err = b.agentDirFor(req.ID)
		if err != nil {
			b.logf("docker: sandbox %s runs without the agent: %v", req.ID, err)
			agentDir = ""
		} else if agentDir != "" {
			entrypoint = []string{agentBinIn, "serve", "-socket", agentSockIn}
		}
	}
	labels := map[string]string{LabelID: req.ID, LabelManaged: "true"}
	maps.Copy(labels, b.extraLabels)
	for k, v := range req.Labels {
		labels[LabelPrefix+k] = v
	}
	env := envList(req.Env)
	stopTimeout := 2
	cfg := &container.Config{
		Image:       img,
		Entrypoint:  entrypoint,
		Env:         env,
		WorkingDir:  req.Workdir, // the daemon creates it at start
		Labels:      labels,
		StopTimeout: &stopTimeout,
	}
	netMode := container.NetworkMode("none")
	if req.Network == backend.NetworkHost {
		netMode = container.NetworkMode(b.cfg.Network)
	}
	useInit := true
	hc := &container.HostConfig{
		NetworkMode: netMode,
		Init:        &useInit,
		Runtime:     runtime,
		SecurityOpt: []string{"no-new-privileges"},
		Mounts:      mounts,
		Resources: container.Resources{
			Memory:   req.Limits.MemoryBytes,
			NanoCPUs: int64(req.Limits.CPUs * 1e9),
		},
	}
	if req.Limits.MemoryBytes > 0 {
		hc.MemorySwap = req.Limits.MemoryBytes // no swap beyond the memory limit
	}
	if req.Limits.PIDs > 0 {
		pids := req.Limits.PIDs
		hc.PidsLimit = &pids
	}
	if req.Limits.DiskBytes > 0 {
		// Only some storage drivers (overlay2 on xfs with pquota) support this; the daemon
		// rejects it otherwise, which is the honest answer.
		hc.StorageOpt = map[string]string{"size": fmt.Sprint(req.Limits.DiskBytes)}
	}
	name := "moat-" + req.ID
	created, err := b.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		b.removeAgentDir(agentDir)
		if cerrdefs.IsConflict(err) {
			return nil, errdefs.AlreadyExistsf("docker: container %s already exists", name)
		}
		if req.Limits.DiskBytes > 0 && strings.Contains(err.Error(), "storage-opt") {
			return nil, errdefs.Newf(errdefs.ErrUnsupported, "docker: disk limit: %w", err)
		}
		return nil, b.mapErr(err, "docker: create container %s", name)
	}
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		b.removeQuietly(ctx, created.ID)
		b.removeAgentDir(agentDir)
		if agentDir != "" && strings.Contains(err.Error(), "moat-agent") && ctx.Err() == nil {
			return nil, &agentStartError{b.mapErr(err, "docker: start container %s", name)}
		}
		return nil, b.mapErr(err, "docker: start container %s", name)
	}
	inst := b.newInstance(created.ID, name, runtime, agentDir)
	if agentDir != "" {
		if err := inst.waitAgent(ctx); err != nil {
			b.removeQuietly(ctx, created.ID)
			b.removeAgentDir(agentDir)
			if ctx.Err() == nil {
				return nil, &agentStartError{fmt.Errorf("docker: agent in %s did not answer: %w", name, err)}
			}
		}
	}
	if ctx.Err() != nil { // started, but the caller gave up: leave nothing behind
		b.removeQuietly(ctx, created.ID)
		b.removeAgentDir(agentDir)
		return nil, fmt.Errorf("docker: create container %s: %w", name, ctx.Err())
	}
	return inst, nil
}

// removeQuietly force-removes a container, even when ctx has ended; used to undo a failed
// create. Failure to remove is not reported: the container carries moat.id so Lister finds it.
func (b *Backend) removeQuietly(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = b.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
}

// ensureImage makes sure img is present locally, pulling according to the pull policy.
func (b *Backend) ensureImage(ctx context.Context, img string) error {
	if b.cfg.Pull != PullAlways {
		_, err := b.cli.ImageInspect(ctx, img)
		if err == nil {
			return nil
		}
		if !cerrdefs.IsNotFound(err) {
			return b.mapErr(err, "docker: inspect image %s", img)
		}
		if b.cfg.Pull == PullNever {
			return errdefs.NotFoundf("docker: image %s is not present locally (pull policy %q)", img, b.cfg.Pull)
		}
	}
	rc, err := b.cli.ImagePull(ctx, img, image.PullOptions{})
	if err != nil {
		return b.mapErr(err, "docker: pull image %s", img)
	}
	defer rc.Close()
	// The pull's outcome is in its progress stream: a message with an error field fails it.
	dec := json.NewDecoder(rc)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err != nil {
			if err == io.EOF {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("docker: pull image %s: %w", img, ctx.Err())
			}
			return errdefs.Newf(errdefs.ErrUnavailable, "docker: pull image %s: %w", img, err)
		}
		if m.Error != "" {
			return errdefs.NotFoundf("docker: pull image %s: %s", img, m.Error)
		}
	}
}

// handleVersion is the current Handle.Version. Version 1 (no agent) is still accepted.
const handleVersion = 2

// handleState is Handle.State: Version 1 has the first two fields, Version 2 adds the
// agent directory ("" for a container made without the agent).
type handleState struct {
	ContainerID string `json:"container_id"`
	Name        string `json:"name"`
	AgentDir    string `json:"agent_dir,omitempty"`
}

// Attach implements backend.Backend.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	if h.Backend != "" && h.Backend != Name {
		return nil, errdefs.InvalidArgumentf("docker: handle belongs to backend %q", h.Backend)
	}
	if h.Version != 1 && h.Version != handleVersion {
		return nil, errdefs.InvalidArgumentf("docker: unknown handle version %d", h.Version)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil || st.ContainerID == "" {
		return nil, errdefs.InvalidArgumentf("docker: malformed handle state")
	}
	info, err := b.cli.ContainerInspect(ctx, st.ContainerID)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			// The container vanished out of band: nothing will ever Destroy this
			// instance (the manager sees NotFound as already gone), so its agent
			// directory goes now, and a recreate under the same id can make it again.
			b.removeAgentDir(st.AgentDir)
		}
		return nil, b.mapErr(err, "docker: container %s", st.ContainerID)
	}
	runtime := ""
	if info.HostConfig != nil {
		runtime = info.HostConfig.Runtime
	}
	// The container's own mounts say whether it has an agent; the handle may predate it.
	return b.newInstance(info.ID, st.Name, runtime, agentDirOf(info.Mounts)), nil
}

// List implements backend.Lister: every container (running or not) labelled moat.managed.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	cs, err := b.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelManaged+"=true")),
	})
	if err != nil {
		return nil, b.mapErr(err, "docker: list containers")
	}
	out := make([]backend.Listed, 0, len(cs))
	for _, c := range cs {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		inst := b.newInstance(c.ID, name, "", agentDirOf(c.Mounts))
		out = append(out, backend.Listed{ID: c.Labels[LabelID], Handle: inst.Handle()})
	}
	return out, nil
}

// agentDirOf returns the host directory mounted at /.moat, or "".
func agentDirOf(mounts []container.MountPoint) string {
	for _, m := range mounts {
		if m.Destination == agentMount && m.Type == mount.TypeBind {
			return m.Source
		}
	}
	return ""
}

// mapErr gives an SDK error an errdefs kind and a "docker: ..." message.
func (b *Backend) mapErr(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	var kind error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	case client.IsErrConnectionFailed(err), isDialError(err):
		return errdefs.Newf(errdefs.ErrUnavailable, "%s: cannot reach %s: %w", msg, b.host, err)
	case cerrdefs.IsNotFound(err):
		kind = errdefs.ErrNotFound
	case cerrdefs.IsConflict(err):
		kind = errdefs.ErrConflict
	case cerrdefs.IsAlreadyExists(err):
		kind = errdefs.ErrAlreadyExists
	case cerrdefs.IsInvalidArgument(err):
		kind = errdefs.ErrInvalidArgument
	case cerrdefs.IsUnavailable(err):
		kind = errdefs.ErrUnavailable
	case cerrdefs.IsPermissionDenied(err):
		kind = errdefs.ErrPermissionDenied
	case cerrdefs.IsUnauthorized(err):
		kind = errdefs.ErrUnauthenticated
	case cerrdefs.IsNotImplemented(err):
		kind = errdefs.ErrUnsupported
	case cerrdefs.IsResourceExhausted(err):
		kind = errdefs.ErrResourceExhausted
	case cerrdefs.IsFailedPrecondition(err):
		kind = errdefs.ErrFailedPrecondition
	default:
		return fmt.Errorf("%s: %w", msg, err)
	}
	return errdefs.Newf(kind, "%s: %w", msg, err)
}

// isDialError reports errors of a daemon that is not there at all (socket missing, nothing
// listening), which the SDK does not always classify as connection failures.
func isDialError(err error) bool {
	var pe *os.SyscallError
	if errors.As(err, &pe) && (pe.Syscall == "connect" || pe.Syscall == "dial") {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "Cannot connect to the Docker daemon") ||
		strings.Contains(s, "connect: no such file or directory") ||
		strings.Contains(s, "connect: connection refused")
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Prober  = (*Backend)(nil)
	_ backend.Lister  = (*Backend)(nil)
)
