package daytona

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// Labels moat puts on every sandbox it creates, so List finds them.
const (
	LabelManaged = "moat.managed"
	LabelID      = "moat.id"
)

// snapshotPrefix marks a CreateRequest.Image that names a Daytona snapshot rather than an
// OCI image: "snapshot:<name>". Snapshot returns images of this form.
const snapshotPrefix = "snapshot:"

// Backend is the Daytona backend. It is safe for concurrent use.
type Backend struct {
	cfg          Config
	c            *client
	startTimeout time.Duration
	pollMin      time.Duration
	pollMax      time.Duration
}

// Descriptor implements backend.Backend.
func (b *Backend) Descriptor() backend.Descriptor {
	return backend.Descriptor{
		Name:           Name,
		Isolation:      backend.IsolationRemote,
		Remote:         true,
		PackageManager: "apt-get",
		AutoRank:       backend.RankDaytona,
		Summary:        "Daytona, managed or self-hosted",
		Settings:       Settings,
	}
}

// Options are Daytona-specific create options (CreateRequest.Options). Unknown keys are
// rejected.
type Options struct {
	// Snapshot starts the sandbox from this Daytona snapshot (name or id).
	Snapshot string `json:"snapshot,omitempty"`
	// Image builds the sandbox from this OCI image (declarative build, "FROM <image>").
	Image string `json:"image,omitempty"`
	// EnvVars are extra environment variables set on the sandbox.
	EnvVars map[string]string `json:"env_vars,omitempty"`
	// Labels are extra Daytona labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Public makes port previews reachable without a token.
	Public *bool `json:"public,omitempty"`
	// Ephemeral deletes the sandbox as soon as it stops (autoDeleteInterval 0).
	Ephemeral bool `json:"ephemeral,omitempty"`
	// AutoStopInterval, AutoArchiveInterval and AutoDeleteInterval are minutes.
	AutoStopInterval    *int `json:"auto_stop_interval,omitempty"`
	AutoArchiveInterval *int `json:"auto_archive_interval,omitempty"`
	AutoDeleteInterval  *int `json:"auto_delete_interval,omitempty"`
	// User runs commands as this user.
	User string `json:"user,omitempty"`
	// Volumes mount Daytona volumes.
	Volumes []VolumeOption `json:"volumes,omitempty"`
	// Resources override the spec's limits in Daytona units.
	Resources *ResourceOptions `json:"resources,omitempty"`
	// Target overrides the configured region.
	Target string `json:"target,omitempty"`
}

// VolumeOption mounts a Daytona volume.
type VolumeOption struct {
	VolumeID  string `json:"volume_id"`
	MountPath string `json:"mount_path"`
	Subpath   string `json:"subpath,omitempty"`
}

// ResourceOptions are Daytona resources: vCPUs, memory GB, disk GB.
type ResourceOptions struct {
	CPU    int `json:"cpu,omitempty"`
	Memory int `json:"memory,omitempty"`
	Disk   int `json:"disk,omitempty"`
}

func decodeOptions(raw json.RawMessage) (Options, error) {
	var o Options
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return o, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return o, errdefs.InvalidArgumentf("daytona: options: %v", err)
	}
	if dec.More() {
		return o, errdefs.InvalidArgumentf("daytona: options: trailing data")
	}
	if o.Snapshot != "" && o.Image != "" {
		return o, errdefs.InvalidArgumentf("daytona: options: snapshot and image are mutually exclusive")
	}
	for _, v := range o.Volumes {
		if v.VolumeID == "" || v.MountPath == "" {
			return o, errdefs.InvalidArgumentf("daytona: options: volumes need volume_id and mount_path")
		}
	}
	return o, nil
}

// handleState is Handle.State, version 1. It holds no secret.
type handleState struct {
	ID              string `json:"id"`
	ToolboxProxyURL string `json:"toolbox_proxy_url,omitempty"`
	// APIURL is the platform API the sandbox was created on (or listed from): the
	// instance keeps talking to it whatever api_url is configured later. Handles written
	// before it was recorded have none and use the configured one.
	APIURL string `json:"api_url,omitempty"`
	// EndpointFromAPI says APIURL was set through the settings API: the token is sent there
	// only while it too comes from the settings API.
	EndpointFromAPI bool `json:"endpoint_from_api,omitempty"`
}

// clientFor returns the client for a sandbox on the platform API at apiURL: the backend's
// own when apiURL is empty or the configured one, else a copy aimed at apiURL (same token,
// organization, headers, retry policy and HTTP client).
func (b *Backend) clientFor(apiURL string, fromAPI bool) (*client, error) {
	apiURL = strings.TrimRight(apiURL, "/")
	if apiURL == "" || apiURL == b.c.apiURL {
		return b.c, nil
	}
	if u, err := url.Parse(apiURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errdefs.InvalidArgumentf("daytona: handle's api_url %q is not an http(s) URL", apiURL)
	}
	if fromAPI && !b.cfg.tokenFromAPI {
		return nil, errdefs.FailedPreconditionf("daytona: the sandbox is on %s, an api_url set through the settings API, and the token now comes from the operator's configuration, which is never sent to an API-chosen URL; save that endpoint's token through the settings API to reach the sandbox", apiURL)
	}
	return b.c.withAPIURL(apiURL, fromAPI), nil
}

const handleVersion = 1

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	if b.c.token == "" {
		return nil, errdefs.Newf(errdefs.ErrUnauthenticated, "daytona: no API key configured (set DAYTONA_API_KEY or [backends.daytona] token)")
	}
	opts, err := decodeOptions(req.Options)
	if err != nil {
		return nil, err
	}
	in := b.createBody(req, opts)
	sb, err := b.c.createSandbox(ctx, in)
	if err != nil {
		return nil, err
	}
	inst := b.instance(b.c, sb)
	ok := false
	defer func() {
		if !ok {
			// Leave nothing behind: the sandbox exists remotely but cannot be handed out.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = b.c.deleteSandbox(cctx, sb.ID)
		}
	}()
	if sb, err = b.waitState(ctx, b.c, sb, "started"); err != nil {
		return nil, err
	}
	inst.setProxy(sb.ToolboxProxyURL)
	if req.Workdir != "" && req.Workdir != "/" {
		if err := inst.tb().createFolder(ctx, req.Workdir, 0o755); err != nil {
			return nil, fmt.Errorf("daytona: create workdir: %w", err)
		}
	}
	ok = true
	return inst, nil
}

func (b *Backend) createBody(req *backend.CreateRequest, o Options) *createSandbox {
	in := &createSandbox{
		Snapshot: b.cfg.Snapshot,
		User:     b.cfg.User,
		Target:   b.cfg.Target,
		Env:      map[string]string{},
		Labels:   map[string]string{},
	}
	image := req.Image
	if o.Image != "" {
		image = o.Image
	}
	switch {
	case o.Snapshot != "":
		in.Snapshot = o.Snapshot
	case strings.HasPrefix(image, snapshotPrefix):
		in.Snapshot = strings.TrimPrefix(image, snapshotPrefix)
	case image != "":
		in.Snapshot = ""
		in.BuildInfo = &buildInfo{DockerfileContent: "FROM " + image + "\n"}
	}
	for k, v := range req.Env {
		in.Env[k] = v
	}
	for k, v := range o.EnvVars {
		in.Env[k] = v
	}
	for k, v := range req.Labels {
		in.Labels[k] = v
	}
	for k, v := range o.Labels {
		in.Labels[k] = v
	}
	in.Labels[LabelManaged] = "true"
	if req.ID != "" {
		in.Labels[LabelID] = req.ID
	}
	if req.Limits.CPUs > 0 {
		in.CPU = int(math.Ceil(req.Limits.CPUs))
	}
	const gb = 1 << 30
	if req.Limits.MemoryBytes > 0 {
		in.Memory = int((req.Limits.MemoryBytes + gb - 1) / gb)
	}
	if req.Limits.DiskBytes > 0 {
		in.Disk = int((req.Limits.DiskBytes + gb - 1) / gb)
	}
	if r := o.Resources; r != nil {
		if r.CPU > 0 {
			in.CPU = r.CPU
		}
		if r.Memory > 0 {
			in.Memory = r.Memory
		}
		if r.Disk > 0 {
			in.Disk = r.Disk
		}
	}
	if req.Network == backend.NetworkNone || req.Network == "" {
		t := true
		in.NetworkBlockAll = &t
	}
	if req.TTL > 0 {
		m := int(math.Ceil(req.TTL.Minutes()))
		in.TTLMinutes = &m
	}
	switch {
	case b.cfg.AutoStopMinutes > 0:
		in.AutoStopInterval = &b.cfg.AutoStopMinutes
	case b.cfg.AutoStopMinutes == -1:
		zero := 0
		in.AutoStopInterval = &zero
	}
	if o.AutoStopInterval != nil {
		in.AutoStopInterval = o.AutoStopInterval
	}
	in.AutoArchiveInterval = o.AutoArchiveInterval
	in.AutoDeleteInterval = o.AutoDeleteInterval
	if o.Ephemeral {
		zero := 0
		in.AutoDeleteInterval = &zero
	}
	in.Public = o.Public
	if o.User != "" {
		in.User = o.User
	}
	if o.Target != "" {
		in.Target = o.Target
	}
	for _, v := range o.Volumes {
		in.Volumes = append(in.Volumes, volumeMount{VolumeID: v.VolumeID, MountPath: v.MountPath, Subpath: v.Subpath})
	}
	return in
}

// waitState polls the sandbox through c until it reaches want, like the SDK (100 ms
// growing by 1.1 up to 1 s), bounded by ctx and the start timeout.
func (b *Backend) waitState(ctx context.Context, c *client, sb *sandbox, want string) (*sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, b.startTimeout)
	defer cancel()
	delay := b.pollMin * 10
	for {
		switch sb.State {
		case want:
			return sb, nil
		case "error", "build_failed":
			reason := sb.ErrorReason
			if reason == "" {
				reason = "no reason given"
			}
			return nil, errdefs.Unavailablef("daytona: sandbox %s is in state %s: %s", sb.ID, sb.State, reason)
		case "destroyed", "destroying":
			return nil, errdefs.NotFoundf("daytona: sandbox %s was destroyed", sb.ID)
		}
		if err := restapi.Sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("daytona: sandbox %s did not reach %s (state %s): %w", sb.ID, want, sb.State, err)
		}
		delay = min(time.Duration(float64(delay)*1.1), time.Second)
		next, err := c.getSandbox(ctx, sb.ID)
		if err != nil {
			return nil, err
		}
		sb = next
	}
}

func (b *Backend) instance(c *client, sb *sandbox) *Instance {
	return &Instance{b: b, c: c, id: sb.ID, proxy: sb.ToolboxProxyURL}
}

// Attach implements backend.Backend.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	if h.Backend != "" && h.Backend != Name {
		return nil, errdefs.InvalidArgumentf("daytona: handle belongs to backend %q", h.Backend)
	}
	if h.Version != handleVersion {
		return nil, errdefs.InvalidArgumentf("daytona: unsupported handle version %d", h.Version)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil || st.ID == "" {
		return nil, errdefs.InvalidArgumentf("daytona: malformed handle state")
	}
	c, err := b.clientFor(st.APIURL, st.EndpointFromAPI)
	if err != nil {
		return nil, err
	}
	sb, err := c.getSandbox(ctx, st.ID)
	if err != nil {
		return nil, err
	}
	if sb.State == "destroyed" || sb.State == "destroying" {
		return nil, errdefs.NotFoundf("daytona: sandbox %s is %s", sb.ID, sb.State)
	}
	inst := b.instance(c, sb)
	if inst.proxy == "" {
		inst.proxy = st.ToolboxProxyURL
	}
	return inst, nil
}

// List implements backend.Lister: every sandbox carrying the moat.managed label.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	var out []backend.Listed
	cursor := ""
	for {
		page, err := b.c.listSandboxes(ctx, map[string]string{LabelManaged: "true"}, cursor)
		if err != nil {
			return nil, err
		}
		for i := range page.Items {
			sb := &page.Items[i]
			if sb.Labels[LabelManaged] != "true" || sb.State == "destroyed" || sb.State == "destroying" {
				continue
			}
			out = append(out, backend.Listed{ID: sb.Labels[LabelID], Handle: b.instance(b.c, sb).Handle()})
		}
		if page.NextCursor == nil || *page.NextCursor == "" || *page.NextCursor == cursor {
			return out, nil
		}
		cursor = *page.NextCursor
	}
}

// Probe implements backend.Prober with one cheap authenticated call.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	if b.c.token == "" {
		return backend.Health{State: backend.Unavailable, Reason: "daytona: no API key configured (set DAYTONA_API_KEY or [backends.daytona] token)"}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out sandboxList
	r := request{method: http.MethodGet, url: b.c.apiPath("/sandbox?limit=1"), idempotent: true, noRetry: true}
	resp, err := b.c.do(ctx, r)
	if err == nil {
		defer drainClose(resp.Body)
		if derr := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); derr != nil {
			return backend.Health{State: backend.Degraded, Reason: "daytona: API answered with an undecodable sandbox list"}
		}
		return backend.Health{State: backend.Ready}
	}
	if errdefs.Is(err, errdefs.KindResourceExhausted) {
		return backend.Health{State: backend.Degraded, Reason: err.Error()}
	}
	return backend.Health{State: backend.Unavailable, Reason: err.Error()}
}

// Instance is one Daytona sandbox.
type Instance struct {
	b *Backend
	// c is the client of the platform API the sandbox was created on: the backend's own,
	// or a copy aimed at the API URL the handle recorded.
	c  *client
	id string

	mu    sync.Mutex
	proxy string // toolboxProxyUrl, refreshed from every sandbox answer
}

func (i *Instance) setProxy(p string) {
	if p == "" {
		return
	}
	i.mu.Lock()
	i.proxy = p
	i.mu.Unlock()
}

func (i *Instance) tb() *toolbox {
	return i.c.toolbox(i.proxyURL(), i.id)
}

func (i *Instance) proxyURL() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.proxy
}

// ID returns the Daytona sandbox id.
func (i *Instance) ID() string { return i.id }

// Handle implements backend.Instance.
func (i *Instance) Handle() backend.Handle {
	st, _ := json.Marshal(handleState{ID: i.id, ToolboxProxyURL: i.proxyURL(), APIURL: i.c.apiURL, EndpointFromAPI: i.c.endpointFromAPI})
	return backend.Handle{Backend: Name, Version: handleVersion, State: st}
}

// Status implements backend.Instance.
func (i *Instance) Status(ctx context.Context) (backend.Status, error) {
	sb, err := i.c.getSandbox(ctx, i.id)
	if errdefs.Is(err, errdefs.KindNotFound) {
		return backend.StatusGone, nil
	}
	if err != nil {
		return "", err
	}
	i.setProxy(sb.ToolboxProxyURL)
	switch sb.State {
	case "destroyed", "destroying":
		return backend.StatusGone, nil
	case "stopped", "stopping", "archived", "archiving", "error", "build_failed":
		return backend.StatusStopped, nil
	case "paused", "pausing":
		return backend.StatusPaused, nil
	}
	return backend.StatusRunning, nil
}

// Destroy implements backend.Instance; a sandbox already gone counts as destroyed.
func (i *Instance) Destroy(ctx context.Context) error {
	err := i.c.deleteSandbox(ctx, i.id)
	if errdefs.Is(err, errdefs.KindNotFound) {
		return nil
	}
	return err
}

// Stop implements backend.Stopper: the sandbox keeps its disk.
func (i *Instance) Stop(ctx context.Context) error {
	sb, err := i.c.sandboxAction(ctx, i.id, "stop")
	if err != nil {
		return err
	}
	_, err = i.b.waitState(ctx, i.c, sb, "stopped")
	return err
}

// Start implements backend.Stopper.
func (i *Instance) Start(ctx context.Context) error {
	sb, err := i.c.sandboxAction(ctx, i.id, "start")
	if err != nil {
		return err
	}
	sb, err = i.b.waitState(ctx, i.c, sb, "started")
	if err != nil {
		return err
	}
	i.setProxy(sb.ToolboxProxyURL)
	return nil
}

// Snapshot implements backend.Snapshotter with Daytona's sandbox snapshot
// (POST /sandbox/{id}/snapshot). The result's Image is "snapshot:<name>".
func (i *Instance) Snapshot(ctx context.Context, name string) (backend.Snapshot, error) {
	if name == "" {
		name = "moat-" + randomID()[:12]
	}
	sb, err := i.c.snapshotSandbox(ctx, i.id, name)
	if err != nil {
		return backend.Snapshot{}, err
	}
	ctx2, cancel := context.WithTimeout(ctx, i.b.startTimeout)
	defer cancel()
	delay := i.b.pollMin * 10
	for sb.State == "snapshotting" {
		if err := restapi.Sleep(ctx2, delay); err != nil {
			return backend.Snapshot{}, fmt.Errorf("daytona: snapshot %s of %s: %w", name, i.id, err)
		}
		delay = min(time.Duration(float64(delay)*1.1), time.Second)
		if sb, err = i.c.getSandbox(ctx2, i.id); err != nil {
			return backend.Snapshot{}, err
		}
	}
	if sb.State == "error" || sb.State == "build_failed" {
		return backend.Snapshot{}, errdefs.Unavailablef("daytona: snapshot %s of %s failed: %s", name, i.id, sb.ErrorReason)
	}
	return backend.Snapshot{ID: name, Image: snapshotPrefix + name, CreatedAt: time.Now().UTC()}, nil
}

// ExposePort implements backend.PortExposer with a signed preview URL, which needs no
// token header (private sandboxes too). It expires after an hour.
func (i *Instance) ExposePort(ctx context.Context, port int) (string, error) {
	if port <= 0 || port > 65535 {
		return "", errdefs.InvalidArgumentf("daytona: port %d out of range", port)
	}
	var out struct {
		URL string `json:"url"`
	}
	u := i.c.apiPath("/sandbox/%s/ports/%d/signed-preview-url?expiresInSeconds=3600", i.id, port)
	if err := i.c.doJSON(ctx, http.MethodGet, u, nil, &out, true); err != nil {
		return "", err
	}
	if out.URL == "" {
		return "", errdefs.Unavailablef("daytona: preview url for port %d is empty", port)
	}
	return out.URL, nil
}

// WriteFile implements backend.FileTransferer: bulk-upload, then chmod.
func (i *Instance) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	var data []byte
	if r != nil {
		var err error
		if data, err = io.ReadAll(r); err != nil {
			return fmt.Errorf("daytona: write %s: read input: %w", path, err)
		}
	}
	t := i.tb()
	if info, err := t.fileInfo(ctx, path); err == nil && info.IsDir {
		return errdefs.InvalidArgumentf("daytona: write %s: is a directory", path)
	}
	if err := t.upload(ctx, path, data); err != nil {
		return err
	}
	return t.setMode(ctx, path, uint32(mode.Perm()))
}

// ReadFile implements backend.FileTransferer.
func (i *Instance) ReadFile(ctx context.Context, path string, w io.Writer) error {
	err := i.tb().download(ctx, path, w)
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == "INVALID_FILE_PATH" {
		return errdefs.InvalidArgumentf("daytona: read %s: is a directory", path)
	}
	return err
}

// ListDir implements backend.FileTransferer.
func (i *Instance) ListDir(ctx context.Context, path string) ([]backend.FileInfo, error) {
	infos, err := i.tb().listFiles(ctx, path)
	if err != nil {
		return nil, err
	}
	out := make([]backend.FileInfo, 0, len(infos))
	for _, fi := range infos {
		out = append(out, convertInfo(fi))
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// convertInfo maps the daemon's FileInfo (mode = Go's FileMode.String(), permissions =
// "%04o") to backend.FileInfo.
func convertInfo(fi fileInfo) backend.FileInfo {
	var mode fs.FileMode
	var perm uint64
	if _, err := fmt.Sscanf(fi.Permissions, "%o", &perm); err == nil {
		mode = fs.FileMode(perm) & fs.ModePerm
	}
	switch {
	case fi.IsDir:
		mode |= fs.ModeDir
	case strings.HasPrefix(fi.Mode, "L"):
		mode |= fs.ModeSymlink
	}
	t, _ := time.Parse(time.RFC3339Nano, fi.ModifiedAt)
	return backend.FileInfo{Name: fi.Name, Size: fi.Size, Mode: mode, ModTime: t, IsDir: fi.IsDir}
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Lister         = (*Backend)(nil)
	_ backend.Prober         = (*Backend)(nil)
	_ backend.Instance       = (*Instance)(nil)
	_ backend.FileTransferer = (*Instance)(nil)
	_ backend.Stopper        = (*Instance)(nil)
	_ backend.Snapshotter    = (*Instance)(nil)
	_ backend.PortExposer    = (*Instance)(nil)
)
