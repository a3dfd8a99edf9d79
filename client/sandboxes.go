package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// Sandbox is a handle to one sandbox on the server, like *moattype.Sandbox. It is cheap and
// safe for concurrent use.
type Sandbox struct {
	c    *Client
	info moattype.Info // as of Create/Get
}

// sandboxPath is the API path of sandbox id. An empty id becomes "-", which no sandbox has,
// so the answer is NotFound rather than a different route.
func sandboxPath(id string) string {
	if id == "" {
		id = "-"
	}
	return "/v1/sandboxes/" + url.PathEscape(id)
}

// Create creates a sandbox from spec.
func (c *Client) Create(ctx context.Context, spec moattype.Spec) (*Sandbox, error) {
	var info moattype.Info
	if err := c.doJSON(ctx, http.MethodPost, "/v1/sandboxes", nil, spec, &info); err != nil {
		return nil, err
	}
	return &Sandbox{c: c, info: info}, nil
}

// Get finds a sandbox by id or name.
func (c *Client) Get(ctx context.Context, idOrName string) (*Sandbox, error) {
	if idOrName == "" {
		return nil, errdefs.InvalidArgumentf("client: empty sandbox id")
	}
	var info moattype.Info
	if err := c.doJSON(ctx, http.MethodGet, sandboxPath(idOrName), nil, nil, &info); err != nil {
		return nil, err
	}
	return &Sandbox{c: c, info: info}, nil
}

// List returns the sandboxes matching f.
func (c *Client) List(ctx context.Context, f moattype.ListFilter) ([]moattype.Info, error) {
	q := url.Values{}
	if f.Backend != "" {
		q.Set("backend", f.Backend)
	}
	if f.SessionID != "" {
		q.Set("session", f.SessionID)
	}
	if f.Name != "" {
		q.Set("name", f.Name)
	}
	if len(f.Status) > 0 {
		st := make([]string, len(f.Status))
		for i, s := range f.Status {
			st[i] = string(s)
		}
		q.Set("status", strings.Join(st, ","))
	}
	for k, v := range f.Labels {
		q.Add("label", k+"="+v)
	}
	if f.IncludeDestroyed {
		q.Set("include_destroyed", "1")
	}
	var out apitype.SandboxList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Sandboxes, nil
}

// Destroy destroys the sandbox with this id or name.
func (c *Client) Destroy(ctx context.Context, idOrName string) error {
	if idOrName == "" {
		return errdefs.InvalidArgumentf("client: empty sandbox id")
	}
	return c.doJSON(ctx, http.MethodDelete, sandboxPath(idOrName), nil, nil, nil)
}

// Backends reports every backend and what auto picks.
func (c *Client) Backends(ctx context.Context) (moattype.BackendReport, error) {
	var rep moattype.BackendReport
	err := c.doJSON(ctx, http.MethodGet, "/v1/backends", nil, nil, &rep)
	return rep, err
}

func sessionPath(session string) string {
	return "/v1/sessions/" + url.PathEscape(session) + "/backend"
}

// SetSessionBackend makes sandboxes created with this session id use backend name.
func (c *Client) SetSessionBackend(ctx context.Context, session, name string) error {
	if session == "" {
		return errdefs.InvalidArgumentf("client: empty session id")
	}
	return c.doJSON(ctx, http.MethodPut, sessionPath(session), nil, apitype.SessionBackend{Backend: name}, nil)
}

// SessionBackend returns the session's override; NotFound when it has none.
func (c *Client) SessionBackend(ctx context.Context, session string) (string, error) {
	if session == "" {
		return "", errdefs.InvalidArgumentf("client: empty session id")
	}
	var sb apitype.SessionBackend
	err := c.doJSON(ctx, http.MethodGet, sessionPath(session), nil, nil, &sb)
	return sb.Backend, err
}

// ClearSessionBackend removes the session's override.
func (c *Client) ClearSessionBackend(ctx context.Context, session string) error {
	if session == "" {
		return errdefs.InvalidArgumentf("client: empty session id")
	}
	return c.doJSON(ctx, http.MethodDelete, sessionPath(session), nil, nil, nil)
}

// BackendSettings lists every remote backend's settings (secrets as configured/from_env
// only).
func (c *Client) BackendSettings(ctx context.Context) ([]apitype.BackendSettings, error) {
	var out apitype.BackendSettingsList
	err := c.doJSON(ctx, http.MethodGet, "/v1/settings/backends", nil, nil, &out)
	return out.Backends, err
}

// PutBackendSettings sets (or, with a nil value, removes) settings of backend name.
func (c *Client) PutBackendSettings(ctx context.Context, name string, changes map[string]*string) (apitype.BackendSettings, error) {
	var out apitype.BackendSettings
	err := c.doJSON(ctx, http.MethodPut, "/v1/settings/backends/"+url.PathEscape(name), nil, apitype.PutBackendSettings(changes), &out)
	return out, err
}

// ID returns moat's id of the sandbox.
func (s *Sandbox) ID() string { return s.info.ID }

// Backend returns the backend the sandbox runs on.
func (s *Sandbox) Backend() string { return s.info.Backend }

// Info re-reads the sandbox's record.
func (s *Sandbox) Info(ctx context.Context) (moattype.Info, error) {
	var info moattype.Info
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.info.ID), nil, nil, &info); err != nil {
		return moattype.Info{}, err
	}
	return info, nil
}

// Stop stops the sandbox, keeping its filesystem (Unsupported when the backend cannot).
func (s *Sandbox) Stop(ctx context.Context) error {
	return s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.info.ID)+"/stop", nil, struct{}{}, nil)
}

// Start restarts a stopped sandbox.
func (s *Sandbox) Start(ctx context.Context) error {
	return s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.info.ID)+"/start", nil, struct{}{}, nil)
}

// Pause freezes the sandbox's processes (Unsupported when the backend cannot).
func (s *Sandbox) Pause(ctx context.Context) error {
	return s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.info.ID)+"/pause", nil, struct{}{}, nil)
}

// Resume thaws a paused sandbox.
func (s *Sandbox) Resume(ctx context.Context) error {
	return s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.info.ID)+"/resume", nil, struct{}{}, nil)
}

// Snapshot saves the sandbox's filesystem under name.
func (s *Sandbox) Snapshot(ctx context.Context, name string) (moattype.Snapshot, error) {
	var snap moattype.Snapshot
	err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.info.ID)+"/snapshots", nil, apitype.SnapshotRequest{Name: name}, &snap)
	return snap, err
}

// ExposePort returns the URL that reaches port inside the sandbox.
func (s *Sandbox) ExposePort(ctx context.Context, port int) (string, error) {
	var pr apitype.PortResponse
	err := s.c.doJSON(ctx, http.MethodPost, fmt.Sprintf("%s/ports/%d", sandboxPath(s.info.ID), port), nil, struct{}{}, &pr)
	return pr.URL, err
}

// Destroy destroys the sandbox.
func (s *Sandbox) Destroy(ctx context.Context) error {
	return s.c.Destroy(ctx, s.info.ID)
}
