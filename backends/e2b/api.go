package e2b

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The control-plane wire types (E2B OpenAPI "spec/openapi.yml" and the JS SDK's schema).

// newSandbox is the body of POST /v2/sandboxes (NewSandboxV2). Everything is secured by
// default on v2: the answer carries an envdAccessToken.
type newSandbox struct {
	TemplateID          string            `json:"templateID"`
	Timeout             int               `json:"timeout,omitempty"` // seconds
	Metadata            map[string]string `json:"metadata,omitempty"`
	EnvVars             map[string]string `json:"envVars,omitempty"`
	AllowInternetAccess *bool             `json:"allow_internet_access,omitempty"` // snake_case on the wire
	AutoPause           *bool             `json:"autoPause,omitempty"`
	AutoResume          *autoResume       `json:"autoResume,omitempty"`
}

type autoResume struct {
	Enabled bool `json:"enabled"`
}

// sandbox is the answer of create and connect.
type sandbox struct {
	TemplateID         string  `json:"templateID"`
	SandboxID          string  `json:"sandboxID"`
	Alias              string  `json:"alias,omitempty"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    string  `json:"envdAccessToken,omitempty"`
	TrafficAccessToken *string `json:"trafficAccessToken,omitempty"`
	Domain             *string `json:"domain,omitempty"`
}

// sandboxDetail is the answer of GET /sandboxes/{id}; listedSandbox of the list endpoints.
type sandboxDetail struct {
	TemplateID      string            `json:"templateID"`
	SandboxID       string            `json:"sandboxID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	State           string            `json:"state"` // running | paused
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain,omitempty"`
}

type snapshotInfo struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

func (c *client) createSandbox(ctx context.Context, body *newSandbox) (*sandbox, error) {
	var out sandbox
	// Not idempotent: a retried create could leave a second sandbox behind.
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v2/sandboxes", body: body}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) getSandbox(ctx context.Context, id string) (*sandboxDetail, error) {
	var out sandboxDetail
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/sandboxes/" + url.PathEscape(id), idempotent: true}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) killSandbox(ctx context.Context, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/sandboxes/" + url.PathEscape(id), idempotent: true}, nil)
	return err
}

func (c *client) pauseSandbox(ctx context.Context, id string) error {
	// Pausing twice answers 409, so a retry after a lost answer is detectable: idempotent.
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/sandboxes/" + url.PathEscape(id) + "/pause",
		body: struct{}{}, idempotent: true}, nil)
	return err
}

// connectSandbox resumes a paused sandbox (or just returns a running one), extending its
// timeout to timeoutSec from now.
func (c *client) connectSandbox(ctx context.Context, id string, timeoutSec int) (*sandbox, error) {
	var out sandbox
	body := map[string]any{}
	if timeoutSec > 0 {
		body["timeout"] = timeoutSec
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v2/sandboxes/" + url.PathEscape(id) + "/connect",
		body: body, idempotent: true}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *client) snapshotSandbox(ctx context.Context, id, name string) (*snapshotInfo, error) {
	var out snapshotInfo
	body := map[string]any{}
	if name != "" {
		body["name"] = name
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/sandboxes/" + url.PathEscape(id) + "/snapshots",
		body: body}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// listSandboxes pages through GET /v2/sandboxes filtered by metadata, following X-Next-Token.
func (c *client) listSandboxes(ctx context.Context, metadata map[string]string, limit int) ([]sandboxDetail, error) {
	var all []sandboxDetail
	next := ""
	for {
		q := url.Values{}
		if len(metadata) > 0 {
			md := url.Values{}
			for k, v := range metadata {
				md.Set(k, v)
			}
			q.Set("metadata", md.Encode())
		}
		q.Set("state", "running,paused")
		if limit > 0 {
			q.Set("limit", itoa(limit))
		}
		if next != "" {
			q.Set("nextToken", next)
		}
		var page []sandboxDetail
		h, err := c.do(ctx, request{method: http.MethodGet, path: "/v2/sandboxes", query: q, idempotent: true}, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next = strings.TrimSpace(h.Get("X-Next-Token"))
		if next == "" || len(page) == 0 {
			return all, nil
		}
	}
}
