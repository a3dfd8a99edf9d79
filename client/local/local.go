// Package local answers "how does a front end use an in-process Manager through client.API?":
// the adapter the CLI and the manager suite use when no moatd is involved. It lives apart from
// package client so that importing the HTTP client never compiles the manager, router, stores
// or backends.
package local

import (
	"context"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
)

// New serves client.API from a Manager in this process.
func New(m *moat.Manager) client.API { return local{m} }

type local struct{ m *moat.Manager }

func (l local) Create(ctx context.Context, spec moat.Spec) (client.Handle, error) {
	sb, err := l.m.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (l local) Get(ctx context.Context, id string) (client.Handle, error) {
	sb, err := l.m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (l local) List(ctx context.Context, f moat.ListFilter) ([]moat.Info, error) {
	return l.m.List(ctx, f)
}

func (l local) Destroy(ctx context.Context, id string) error { return l.m.Destroy(ctx, id) }

func (l local) Backends(ctx context.Context) (moat.BackendReport, error) {
	return l.m.Backends(ctx), nil
}

func (l local) SetSessionBackend(ctx context.Context, session, name string) error {
	return l.m.SetSessionBackend(ctx, session, name)
}

func (l local) SessionBackend(ctx context.Context, session string) (string, error) {
	return l.m.SessionBackend(ctx, session)
}

func (l local) ClearSessionBackend(ctx context.Context, session string) error {
	return l.m.ClearSessionBackend(ctx, session)
}

func (l local) Session(ctx context.Context, id string) (moat.Session, error) {
	return l.m.Session(ctx, id)
}

func (l local) Sessions(ctx context.Context) ([]moat.Session, error) { return l.m.Sessions(ctx) }

func (l local) PutSession(ctx context.Context, s moat.Session) (moat.Session, error) {
	return l.m.PutSession(ctx, s)
}

func (l local) PatchSession(ctx context.Context, id string, p moat.SessionPatch) (moat.Session, error) {
	return l.m.PatchSession(ctx, id, p)
}

func (l local) DeleteSession(ctx context.Context, id string) error {
	return l.m.DeleteSession(ctx, id)
}

func (l local) DestroySessionSandboxes(ctx context.Context, id string) (moat.SessionTeardown, error) {
	return l.m.DestroySessionSandboxes(ctx, id)
}

var (
	_ client.Handle = (*moat.Sandbox)(nil)
	_ client.API    = local{}
)
