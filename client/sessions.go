package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// sessionRecordPath is the API path of session id's record.
func sessionRecordPath(id string) string { return "/v1/sessions/" + url.PathEscape(id) }

// Session returns the stored session id; NotFound when it has none.
func (c *Client) Session(ctx context.Context, id string) (moattype.Session, error) {
	var s moattype.Session
	if id == "" {
		return s, errdefs.InvalidArgumentf("client: empty session id")
	}
	err := c.doJSON(ctx, http.MethodGet, sessionRecordPath(id), nil, nil, &s)
	return s, err
}

// Sessions lists every stored session, by id.
func (c *Client) Sessions(ctx context.Context) ([]moattype.Session, error) {
	var out apitype.SessionList
	err := c.doJSON(ctx, http.MethodGet, "/v1/sessions", nil, nil, &out)
	return out.Sessions, err
}

// PutSession stores s, replacing the whole session s.ID.
func (c *Client) PutSession(ctx context.Context, s moattype.Session) (moattype.Session, error) {
	var out moattype.Session
	if s.ID == "" {
		return out, errdefs.InvalidArgumentf("client: empty session id")
	}
	err := c.doJSON(ctx, http.MethodPut, sessionRecordPath(s.ID), nil, s, &out)
	return out, err
}

// PatchSession changes the fields of session id that p sets.
func (c *Client) PatchSession(ctx context.Context, id string, p moattype.SessionPatch) (moattype.Session, error) {
	var out moattype.Session
	if id == "" {
		return out, errdefs.InvalidArgumentf("client: empty session id")
	}
	err := c.doJSON(ctx, http.MethodPatch, sessionRecordPath(id), nil, p, &out)
	return out, err
}

// DeleteSession removes session id's settings; its sandboxes stay.
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	if id == "" {
		return errdefs.InvalidArgumentf("client: empty session id")
	}
	return c.doJSON(ctx, http.MethodDelete, sessionRecordPath(id), nil, nil, nil)
}

// DestroySessionSandboxes destroys every live sandbox of session id. Like the library's,
// its error is nil when all were destroyed, else SessionTeardown.Err (the first failure's
// kind, naming each sandbox left); the teardown says which went and which did not.
func (c *Client) DestroySessionSandboxes(ctx context.Context, id string) (moattype.SessionTeardown, error) {
	td := moattype.SessionTeardown{Session: id}
	if id == "" {
		return td, errdefs.InvalidArgumentf("client: empty session id")
	}
	if err := c.doJSON(ctx, http.MethodDelete, sessionRecordPath(id)+"/sandboxes", nil, nil, &td); err != nil {
		return td, err
	}
	return td, td.Err()
}
