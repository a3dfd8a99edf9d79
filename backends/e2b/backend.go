package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Metadata keys moat puts on every sandbox it creates, so List finds them.
const (
	metaManaged = "moat.managed"
	metaID      = "moat.id"
)

// handleVersion is the version of the Handle state below.
const handleVersion = 1

// handleState is Handle.State. It holds no secret: Attach fetches the envd access token from
// the control plane again.
type handleState struct {
	SandboxID string `json:"sandbox_id"`
	Domain    string `json:"domain,omitempty"`
	Timeout   int    `json:"timeout,omitempty"` // seconds, reused when resuming
	// APIURL and SandboxURL are the endpoint the sandbox was created on (or listed from):
	// the control plane and the envd base URL override ("" = derived from the domain).
	// The instance keeps talking to them whatever is configured later. Handles written
	// before they were recorded have no APIURL and use the configured endpoint.
	APIURL     string `json:"api_url,omitempty"`
	SandboxURL string `json:"sandbox_url,omitempty"`
	// EndpointFromAPI says the endpoint was set through the settings API: the key is sent
	// there only while it too comes from the settings API.
	EndpointFromAPI bool `json:"endpoint_from_api,omitempty"`
}

// endpoint is where an instance sends its calls: the control plane's client and the envd
// base URL override.
type endpoint struct {
	c          *client
	sandboxURL string
}

// configured is the endpoint of the configuration: what Create and List use.
func (b *Backend) configured() endpoint { return endpoint{c: b.c, sandboxURL: b.cfg.SandboxURL} }

// endpointOf returns the endpoint a handle recorded: the configured one for a handle
// without one (written before it was recorded), else the handle's api_url (a copy of the
// backend's client when it differs from the configured one: same key, retry policy and
// HTTP client) and sandbox_url.
func (b *Backend) endpointOf(st handleState) (endpoint, error) {
	apiURL := strings.TrimRight(st.APIURL, "/")
	if apiURL == "" {
		return b.configured(), nil
	}
	sandboxURL := strings.TrimRight(st.SandboxURL, "/")
	if !httpURL(apiURL) || !httpURL(sandboxURL) {
		return endpoint{}, errdefs.InvalidArgumentf("e2b: handle's endpoint (%q, %q) is not an http(s) URL", apiURL, sandboxURL)
	}
	ep := endpoint{c: b.c, sandboxURL: sandboxURL}
	if apiURL == b.c.apiURL && sandboxURL == b.cfg.SandboxURL && st.Domain == b.cfg.Domain {
		return ep, nil
	}
	if st.EndpointFromAPI && !b.cfg.tokenFromAPI {
		return endpoint{}, errdefs.FailedPreconditionf("e2b: the sandbox is on %s, an endpoint set through the settings API, and the key now comes from the operator's configuration, which is never sent to an API-chosen endpoint; save that endpoint's key through the settings API to reach the sandbox", apiURL)
	}
	ep.c = b.c.withAPIURL(apiURL, st.EndpointFromAPI)
	return ep, nil
}

// CreateOptions are the E2B-specific create options (the spec's "options" object). Unknown
// keys are rejected.
type CreateOptions struct {
	// Template overrides the spec's image as the E2B template id or alias.
	Template string `json:"template,omitempty"`
	// Metadata is merged into the sandbox's E2B metadata.
	Metadata map[string]string `json:"metadata,omitempty"`
	// AutoPause pauses instead of killing the sandbox when its timeout hits.
	AutoPause *bool `json:"auto_pause,omitempty"`
	// AutoResume lets traffic wake an auto-paused sandbox (needs auto_pause).
	AutoResume *bool `json:"auto_resume,omitempty"`
}

// Backend is the E2B backend.
type Backend struct {
	cfg Config
	log *slog.Logger
	c   *client
}

// Descriptor implements backend.Backend.
func (b *Backend) Descriptor() backend.Descriptor {
	return backend.Descriptor{
		Name:           Name,
		Isolation:      backend.IsolationRemote,
		Remote:         true,
		PackageManager: "apt-get", // E2B templates are Debian based
		DefaultImage:   b.cfg.Template,
		AutoRank:       backend.RankE2B,
		Summary:        "E2B (Firecracker microVMs)",
		Settings:       Settings,
	}
}

// callCtx bounds a control-plane call by the configured request timeout.
func (b *Backend) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.requestTimeout)
}

func (b *Backend) needToken() error {
	if b.cfg.Token == "" {
		return errdefs.New(errdefs.ErrUnauthenticated, "e2b: no API key configured (set E2B_API_KEY or [backends.e2b] token)")
	}
	return nil
}

func decodeOptions(raw json.RawMessage) (CreateOptions, error) {
	var o CreateOptions
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return o, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return o, errdefs.InvalidArgumentf("e2b: create options: %v", err)
	}
	if dec.More() {
		return o, errdefs.InvalidArgumentf("e2b: create options: trailing data")
	}
	if o.AutoResume != nil && *o.AutoResume && (o.AutoPause == nil || !*o.AutoPause) {
		return o, errdefs.InvalidArgumentf("e2b: create options: auto_resume needs auto_pause")
	}
	return o, nil
}

// Create implements backend.Backend: POST /v2/sandboxes, then envd MakeDir for the workdir.
// CPU and memory come from the template (E2B has no per-sandbox resource fields), so
// req.Limits is not sent.
func (b *Backend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	if err := b.needToken(); err != nil {
		return nil, err
	}
	opts, err := decodeOptions(req.Options)
	if err != nil {
		return nil, err
	}
	body := &newSandbox{
		TemplateID: b.cfg.Template,
		Timeout:    int(b.cfg.timeout / time.Second),
		Metadata:   map[string]string{},
		AutoPause:  opts.AutoPause,
	}
	if req.Image != "" {
		body.TemplateID = req.Image
	}
	if opts.Template != "" {
		body.TemplateID = opts.Template
	}
	if req.TTL > 0 {
		body.Timeout = int((req.TTL + time.Second - 1) / time.Second)
	}
	for _, m := range []map[string]string{b.cfg.Metadata, req.Labels, opts.Metadata} {
		for k, v := range m {
			body.Metadata[k] = v
		}
	}
	body.Metadata[metaManaged] = "true"
	if req.ID != "" {
		body.Metadata[metaID] = req.ID
	}
	if len(b.cfg.Envs)+len(req.Env) > 0 {
		body.EnvVars = map[string]string{}
		for k, v := range b.cfg.Envs {
			body.EnvVars[k] = v
		}
		for k, v := range req.Env {
			body.EnvVars[k] = v
		}
	}
	internet := req.Network == backend.NetworkHost
	body.AllowInternetAccess = &internet
	if opts.AutoResume != nil && *opts.AutoResume {
		body.AutoResume = &autoResume{Enabled: true}
	}
	if (req.Limits != backend.Limits{}) {
		b.log.Debug("limits are set by the e2b template, not per sandbox", "id", req.ID)
	}

	cctx, cancel := b.callCtx(ctx)
	sb, err := b.c.createSandbox(cctx, body)
	cancel()
	if err != nil {
		return nil, err
	}
	inst := b.newInstance(b.configured(), sb.SandboxID, deref(sb.Domain), body.Timeout, sb.EnvdVersion, sb.EnvdAccessToken)
	if req.Workdir != "" && req.Workdir != "/" {
		if err := inst.envd().makeDir(ctx, req.Workdir); err != nil {
			// Leave nothing behind: the sandbox is useless without its workdir.
			kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer kcancel()
			if kerr := b.c.killSandbox(kctx, sb.SandboxID); kerr != nil && !errdefs.Is(kerr, errdefs.KindNotFound) {
				b.log.Warn("kill after failed create", "sandbox", sb.SandboxID, "err", kerr)
			}
			return nil, err
		}
	}
	return inst, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Attach implements backend.Backend: it reads the sandbox (and its envd access token) from
// the control plane.
func (b *Backend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	if h.Backend != "" && h.Backend != Name {
		return nil, errdefs.InvalidArgumentf("e2b: handle belongs to backend %q", h.Backend)
	}
	if h.Version != handleVersion {
		return nil, errdefs.InvalidArgumentf("e2b: unsupported handle version %d", h.Version)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil || st.SandboxID == "" {
		return nil, errdefs.InvalidArgumentf("e2b: bad handle state")
	}
	ep, err := b.endpointOf(st)
	if err != nil {
		return nil, err
	}
	if err := b.needToken(); err != nil {
		return nil, err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	d, err := ep.c.getSandbox(cctx, st.SandboxID)
	if err != nil {
		return nil, err
	}
	domain := deref(d.Domain)
	if domain == "" {
		domain = st.Domain
	}
	return b.newInstance(ep, d.SandboxID, domain, st.Timeout, d.EnvdVersion, d.EnvdAccessToken), nil
}

// List implements backend.Lister: the running and paused sandboxes carrying moat's metadata.
func (b *Backend) List(ctx context.Context) ([]backend.Listed, error) {
	if err := b.needToken(); err != nil {
		return nil, err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	sbs, err := b.c.listSandboxes(cctx, map[string]string{metaManaged: "true"}, 100)
	if err != nil {
		return nil, err
	}
	out := make([]backend.Listed, 0, len(sbs))
	for _, s := range sbs {
		out = append(out, backend.Listed{
			ID:     s.Metadata[metaID],
			Handle: b.newInstance(b.configured(), s.SandboxID, deref(s.Domain), 0, "", "").Handle(),
		})
	}
	return out, nil
}

// Probe implements backend.Prober with one cheap authenticated call.
func (b *Backend) Probe(ctx context.Context) backend.Health {
	if b.cfg.Token == "" {
		return backend.Health{State: backend.Unavailable,
			Reason: "e2b: no API key configured (set E2B_API_KEY or [backends.e2b] token)"}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q := map[string][]string{"limit": {"1"}}
	_, err := b.c.do(ctx, request{method: http.MethodGet, path: "/v2/sandboxes", query: q, noRetry: true}, nil)
	switch {
	case err == nil:
		return backend.Health{State: backend.Ready}
	case errdefs.Is(err, errdefs.KindResourceExhausted):
		return backend.Health{State: backend.Degraded, Reason: err.Error()}
	default:
		return backend.Health{State: backend.Unavailable, Reason: err.Error()}
	}
}

func makeHandle(st handleState) backend.Handle {
	raw, _ := json.Marshal(st)
	return backend.Handle{Backend: Name, Version: handleVersion, State: raw}
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Lister  = (*Backend)(nil)
	_ backend.Prober  = (*Backend)(nil)
)
