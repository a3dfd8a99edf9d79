package vercel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Tag keys moat puts on every sandbox it creates, so List finds them (Vercel allows 5 tags).
const (
	tagID   = "moat-id"
	maxTags = 5
	// namePrefix starts the name of every sandbox moat creates.
	namePrefix = "moat-"
	// handleVersion is the version of handleState.
	handleVersion = 1
	// probeTimeout bounds Probe's API call.
	probeTimeout = 5 * time.Second
)

// Backend creates Vercel sandboxes. It is safe for concurrent use.
type Backend struct {
	cfg    Config
	client *Client
	log    *slog.Logger
}

// New returns a Backend for c (after Fill). It does no I/O.
func New(c Config, logger *slog.Logger) (*Backend, error) {
	logger = nopLogger(logger)
	if err := c.resolveKeys(logger); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if team, project, ok := oidcClaims(c.Token); ok {
		if c.TeamID == "" {
			c.TeamID = team
		}
		if c.ProjectID == "" {
			c.ProjectID = project
		}
	}
	cl := NewClient(c.APIURL, c.Token, c.TeamID, nil)
	cl.endpointFromAPI = c.endpointFromAPI
	return &Backend{cfg: c, client: cl, log: logger}, nil
}

// Client returns the backend's API client (tests tune its retry timing).
func (b *Backend) Client() *Client { return b.client }

// Descriptor implements backend.Backend.
func (b *Backend) Descriptor() backend.Descriptor {
	return backend.Descriptor{
		Name:           Name,
		Isolation:      backend.IsolationRemote,
		Remote:         true,
		PackageManager: "dnf", // Vercel sandboxes run Amazon Linux 2023
		DefaultImage:   b.defaultRuntime(),
		AutoRank:       backend.RankVercel,
		Summary:        "Vercel Sandbox (Firecracker microVMs)",
		Settings:       Settings,
	}
}

func (b *Backend) defaultRuntime() string {
	if b.cfg.Runtime != "" {
		return b.cfg.Runtime
	}
	return DefaultRuntime
}

// CreateOptions are the provider-specific create options (CreateRequest.Options).
type CreateOptions struct {
	// Ports to expose at creation, in addition to the configured ones.
	Ports []int `json:"ports,omitempty"`
	// VCPUs overrides the vCPU count derived from the limits.
	VCPUs int `json:"vcpus,omitempty"`
	// Region overrides the configured region.
	Region string `json:"region,omitempty"`
	// Persistent overrides the configured persistence.
	Persistent *bool `json:"persistent,omitempty"`
	// AllowDomains gives the sandbox outbound network to these domains only (wildcards
	// such as "*.npmjs.org" allowed), whatever the spec's network mode.
	AllowDomains []string `json:"allow_domains,omitempty"`
	// Git clones a repository into the sandbox's working directory at creation.
	Git *GitSource `json:"git,omitempty"`
	// Tarball extracts the tarball at this URL into the working directory at creation.
	Tarball string `json:"tarball,omitempty"`
}

// GitSource is a repository to clone at creation.
type GitSource struct {
	URL      string `json:"url"`
	Depth    int    `json:"depth,omitempty"`
	Revision string `json:"revision,omitempty"`
}

func decodeOptions(raw json.RawMessage) (CreateOptions, error) {
	var o CreateOptions
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return o, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return o, errdefs.InvalidArgumentf("vercel: create options: %v", err)
	}
	if dec.More() {
		return o, errdefs.InvalidArgumentf("vercel: create options: trailing data")
	}
	if o.VCPUs != 0 && !validVCPUs(o.VCPUs) {
		return o, errdefs.InvalidArgumentf("vercel: create options: vcpus must be 1 or an even number up to 8, not %d", o.VCPUs)
	}
	for _, p := range o.Ports {
		if p < 1 || p > 65535 {
			return o, errdefs.InvalidArgumentf("vercel: create options: port %d out of range", p)
		}
	}
	if o.Git != nil && o.Tarball != "" {
		return o, errdefs.InvalidArgumentf("vercel: create options: git and tarball are exclusive")
	}
	if o.Git != nil && o.Git.URL == "" {
		return o, errdefs.InvalidArgumentf("vercel: create options: git.url is required")
	}
	return o, nil
}

// SnapshotImagePrefix starts a CreateRequest.Image that restores a Vercel snapshot.
const SnapshotImagePrefix = "vercel-snapshot:"

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	if err := b.credentials(); err != nil {
		return nil, err
	}
	opts, err := decodeOptions(req.Options)
	if err != nil {
		return nil, err
	}
	body := &CreateSandboxRequest{
		ProjectID: b.cfg.ProjectID,
		Name:      sandboxName(req.ID),
		Ports:     slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(b.cfg.Ports), opts.Ports...)))),
		Env:       req.Env,
		Region:    b.cfg.Region,
	}
	if body.Ports == nil {
		body.Ports = []int{}
	}
	if opts.Region != "" {
		body.Region = opts.Region
	}
	persistent := b.cfg.Persistent
	if opts.Persistent != nil {
		persistent = *opts.Persistent
	}
	body.Persistent = &persistent

	switch img := req.Image; {
	case strings.HasPrefix(img, SnapshotImagePrefix):
		body.Source = &Source{Type: "snapshot", SnapshotID: strings.TrimPrefix(img, SnapshotImagePrefix)}
	case img == "":
		body.Runtime = b.defaultRuntime()
	case slices.Contains(Runtimes, img):
		body.Runtime = img
	case looksLikeRuntime(img):
		return nil, errdefs.InvalidArgumentf("vercel: unknown runtime %q (want one of %s)", img, strings.Join(Runtimes, ", "))
	default:
		body.Image = img // a managed image ("vercel/sandbox/node:24") or any image ref
	}
	switch {
	case opts.Git != nil && body.Source == nil:
		body.Source = &Source{Type: "git", URL: opts.Git.URL, Depth: opts.Git.Depth, Revision: opts.Git.Revision}
	case opts.Tarball != "" && body.Source == nil:
		body.Source = &Source{Type: "tarball", URL: opts.Tarball}
	case opts.Git != nil || opts.Tarball != "":
		return nil, errdefs.InvalidArgumentf("vercel: create options: git/tarball cannot be combined with a snapshot image")
	}

	switch {
	case req.TTL > 0:
		body.Timeout = req.TTL.Milliseconds()
	case b.cfg.timeout > 0:
		body.Timeout = b.cfg.timeout.Milliseconds()
	}
	if v := vcpusFor(req.Limits, opts.VCPUs, b.cfg.VCPUs); v > 0 {
		body.Resources = &Resources{VCPUs: v}
	}
	switch {
	case len(opts.AllowDomains) > 0:
		body.NetworkPolicy = &NetworkPolicy{Allow: opts.AllowDomains}
	case req.Network == backend.NetworkHost:
		body.NetworkPolicy = &NetworkPolicy{Mode: "allow-all"}
	default:
		body.NetworkPolicy = &NetworkPolicy{Mode: "deny-all"}
	}
	body.Tags = b.tags(req)

	resp, err := b.client.CreateSandbox(ctx, body)
	if err != nil {
		return nil, err
	}
	inst := b.newInstance(b.client, resp.Sandbox.Name, resp.Session.ID, persistent, resp.Routes, body.Ports)
	if req.Workdir != "" {
		// Vercel has no create-time working directory: make it so exec can cd into it.
		if err := inst.mkdirAll(ctx, req.Workdir); err != nil {
			_ = inst.Destroy(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return inst.ability(), nil
}

// looksLikeRuntime tells a mistyped runtime ("node18", "python3.9") from an image ref,
// which always has a "/" or ":".
func looksLikeRuntime(img string) bool {
	if strings.ContainsAny(img, "/:") {
		return false
	}
	return strings.HasPrefix(img, "node") || strings.HasPrefix(img, "python")
}

// vcpusFor picks a valid vCPU count: the option, else what the CPU and memory limits need
// (2048 MB per vCPU), else the configured default; 0 leaves Vercel's default.
func vcpusFor(l backend.Limits, opt, def int) int {
	if opt > 0 {
		return opt
	}
	need := 0
	if l.CPUs > 0 {
		need = int(math.Ceil(l.CPUs))
	}
	if l.MemoryBytes > 0 {
		need = max(need, int((l.MemoryBytes+(2048<<20)-1)/(2048<<20)))
	}
	if need == 0 {
		return def
	}
	if need > 1 && need%2 == 1 {
		need++
	}
	return min(need, 8)
}

// tags carries the moat id plus as many labels as fit in Vercel's tag limit, in key order.
func (b *Backend) tags(req *backend.CreateRequest) map[string]string {
	tags := map[string]string{}
	if req.ID != "" {
		tags[tagID] = req.ID
	}
	keys := make([]string, 0, len(req.Labels))
	for k := range req.Labels {
		if k != tagID {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(tags) >= maxTags {
			b.log.Warn("vercel: label not stored as a tag (Vercel allows 5 tags)", "label", k)
			continue
		}
		tags[k] = req.Labels[k]
	}
	return tags
}

// sandboxName derives a valid, recognisable sandbox name from the moat id.
func sandboxName(id string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(id) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '_' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
	}
	s := sb.String()
	if s == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		s = hex.EncodeToString(b[:])
	}
	if len(s) > 58 {
		s = s[:58]
	}
	return namePrefix + s
}

// credentials reports what is missing for API calls.
func (b *Backend) credentials() error {
	if b.cfg.Token == "" {
		return errdefs.New(errdefs.ErrUnauthenticated, "vercel: no API key configured (set VERCEL_TOKEN or [backends.vercel] token)")
	}
	if b.cfg.ProjectID == "" {
		return errdefs.New(errdefs.ErrFailedPrecondition, "vercel: no project configured (set VERCEL_PROJECT_ID or [backends.vercel] project_id)")
	}
	return nil
}

// handleState is what a Handle's State holds (Version 1). It holds no secret.
type handleState struct {
	Name       string `json:"name"`
	SessionID  string `json:"session_id"`
	ProjectID  string `json:"project_id"`
	Persistent bool   `json:"persistent,omitempty"`
	// APIURL is the API base URL the sandbox was created on (or listed from): the
	// instance keeps talking to it whatever api_url is configured later. Handles written
	// before it was recorded have none and use the configured one.
	APIURL string `json:"api_url,omitempty"`
	// EndpointFromAPI says APIURL was set through the settings API: the token is sent there
	// only while it too comes from the settings API.
	EndpointFromAPI bool `json:"endpoint_from_api,omitempty"`
}

// clientFor returns the client for a sandbox on the API at baseURL: the backend's own
// when baseURL is empty or the configured one, else a copy aimed at baseURL (same token,
// team, retry policy and HTTP client).
func (b *Backend) clientFor(baseURL string, fromAPI bool) (*Client, error) {
	baseURL = strings.TrimRight(baseURL, "/")
	if baseURL == "" || baseURL == b.client.baseURL {
		return b.client, nil
	}
	if u, err := url.Parse(baseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errdefs.InvalidArgumentf("vercel: handle's api_url %q is not an http(s) URL", baseURL)
	}
	if fromAPI && !b.cfg.tokenFromAPI {
		return nil, errdefs.FailedPreconditionf("vercel: the sandbox is on %s, an api_url set through the settings API, and the token now comes from the operator's configuration, which is never sent to an API-chosen URL; save that endpoint's token through the settings API to reach the sandbox", baseURL)
	}
	return b.client.withBaseURL(baseURL, fromAPI), nil
}

// Attach implements backend.Backend: NotFound when the sandbox no longer exists.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	if h.Backend != Name {
		return nil, errdefs.InvalidArgumentf("vercel: handle is for backend %q", h.Backend)
	}
	if h.Version != handleVersion {
		return nil, errdefs.InvalidArgumentf("vercel: unsupported handle version %d", h.Version)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil || st.Name == "" {
		return nil, errdefs.InvalidArgumentf("vercel: malformed handle state")
	}
	c, err := b.clientFor(st.APIURL, st.EndpointFromAPI)
	if err != nil {
		return nil, err
	}
	if err := b.credentials(); err != nil {
		return nil, err
	}
	if st.ProjectID == "" {
		st.ProjectID = b.cfg.ProjectID
	}
	resp, err := c.GetSandbox(ctx, st.ProjectID, st.Name, false)
	if err != nil {
		return nil, err
	}
	sid := st.SessionID
	if resp.Sandbox.CurrentSessionID != "" {
		sid = resp.Sandbox.CurrentSessionID
	}
	inst := b.newInstance(c, st.Name, sid, st.Persistent || resp.Sandbox.Persistent, resp.Routes, nil)
	inst.projectID = st.ProjectID
	for _, r := range resp.Routes {
		inst.ports = append(inst.ports, r.Port)
	}
	return inst.ability(), nil
}

// Probe implements backend.Prober with a cheap authenticated list call.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	if b.cfg.Token == "" {
		return backend.Health{State: backend.Unavailable, Reason: "vercel: no API key configured (set VERCEL_TOKEN or [backends.vercel] token)"}
	}
	if b.cfg.ProjectID == "" {
		return backend.Health{State: backend.Unavailable, Reason: "vercel: no project configured (set VERCEL_PROJECT_ID or [backends.vercel] project_id)"}
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c := *b.client
	c.Policy.MaxAttempts = 1 // a probe reports, it does not insist
	if _, err := c.ListSandboxes(ctx, b.cfg.ProjectID, "", "", 1); err != nil {
		switch errdefs.KindOf(err) {
		case errdefs.KindUnavailable, errdefs.KindResourceExhausted:
			return backend.Health{State: backend.Degraded, Reason: err.Error()}
		}
		return backend.Health{State: backend.Unavailable, Reason: err.Error()}
	}
	return backend.Health{State: backend.Ready}
}

// List implements backend.Lister: the sandboxes carrying moat's id tag.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	if err := b.credentials(); err != nil {
		return nil, err
	}
	var out []backend.Listed
	cursor := ""
	for range 1000 { // bounded: a server that never ends paging cannot hang us
		page, err := b.client.ListSandboxes(ctx, b.cfg.ProjectID, namePrefix, cursor, 100)
		if err != nil {
			return nil, err
		}
		for _, s := range page.Sandboxes {
			id, ok := s.Tags[tagID]
			if !ok {
				continue
			}
			st, _ := json.Marshal(handleState{Name: s.Name, SessionID: s.CurrentSessionID, ProjectID: b.cfg.ProjectID, Persistent: s.Persistent, APIURL: b.client.baseURL, EndpointFromAPI: b.client.endpointFromAPI})
			out = append(out, backend.Listed{ID: id, Handle: backend.Handle{Backend: Name, Version: handleVersion, State: st}})
		}
		if page.Pagination.Next == nil || *page.Pagination.Next == "" || *page.Pagination.Next == cursor {
			return out, nil
		}
		cursor = *page.Pagination.Next
	}
	return out, nil
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Prober  = (*Backend)(nil)
	_ backend.Lister  = (*Backend)(nil)
)
