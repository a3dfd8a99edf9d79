package client

import (
	"context"
	"io"
	"io/fs"

	"github.com/moatsh/moat"
)

// API is what a front end (the CLI, the MCP server) needs of moat, whether it runs the
// library in-process (Local) or talks to moatd (Remote). Its methods mirror moat.Manager.
type API interface {
	Create(ctx context.Context, spec moat.Spec) (Handle, error)
	Get(ctx context.Context, idOrName string) (Handle, error)
	List(ctx context.Context, f moat.ListFilter) ([]moat.Info, error)
	Destroy(ctx context.Context, idOrName string) error
	Backends(ctx context.Context) (moat.BackendReport, error)
	SetSessionBackend(ctx context.Context, session, backend string) error
	SessionBackend(ctx context.Context, session string) (string, error)
	ClearSessionBackend(ctx context.Context, session string) error
}

// Handle is one sandbox through API. *moat.Sandbox and *Sandbox both implement it.
type Handle interface {
	ID() string
	Backend() string
	Info(ctx context.Context) (moat.Info, error)
	Exec(ctx context.Context, req moat.ExecRequest) (moat.ExitResult, error)
	Terminal(ctx context.Context, req moat.TerminalRequest) (moat.ExitResult, error)
	WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error
	ReadFile(ctx context.Context, path string, w io.Writer) error
	ListDir(ctx context.Context, path string) ([]moat.FileInfo, error)
	Remove(ctx context.Context, path string, recursive bool) error
	Mkdir(ctx context.Context, path string, mode fs.FileMode) error
	PutArchive(ctx context.Context, dir string, r io.Reader, lim moat.ArchiveLimits) (moat.ArchiveResult, error)
	GetArchive(ctx context.Context, dir string, w io.Writer, lim moat.ArchiveLimits) error
	Stop(ctx context.Context) error
	Start(ctx context.Context) error
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Snapshot(ctx context.Context, name string) (moat.Snapshot, error)
	ExposePort(ctx context.Context, port int) (string, error)
	Destroy(ctx context.Context) error
}

// Local serves API from a Manager in this process.
func Local(m *moat.Manager) API { return local{m} }

type local struct{ m *moat.Manager }

func (l local) Create(ctx context.Context, spec moat.Spec) (Handle, error) {
	sb, err := l.m.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (l local) Get(ctx context.Context, id string) (Handle, error) {
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

// Remote serves API from a moat server through c.
func Remote(c *Client) API { return remote{c} }

type remote struct{ *Client }

func (r remote) Create(ctx context.Context, spec moat.Spec) (Handle, error) {
	sb, err := r.Client.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (r remote) Get(ctx context.Context, id string) (Handle, error) {
	sb, err := r.Client.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return sb, nil
}

var (
	_ Handle = (*moat.Sandbox)(nil)
	_ Handle = (*Sandbox)(nil)
	_ API    = local{}
	_ API    = remote{}
)
