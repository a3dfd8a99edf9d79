package client

import (
	"context"
	"io"
	"io/fs"

	"github.com/moatsh/moat/moattype"
)

// API is what a front end (the CLI, the MCP server) needs of moat, whether it runs the
// library in-process (Local) or talks to moatd (Remote). Its methods mirror moat.Manager; client/local serves it from a Manager in this process.
type API interface {
	Create(ctx context.Context, spec moattype.Spec) (Handle, error)
	Get(ctx context.Context, idOrName string) (Handle, error)
	List(ctx context.Context, f moattype.ListFilter) ([]moattype.Info, error)
	Destroy(ctx context.Context, idOrName string) error
	Backends(ctx context.Context) (moattype.BackendReport, error)
	SetSessionBackend(ctx context.Context, session, backend string) error
	SessionBackend(ctx context.Context, session string) (string, error)
	ClearSessionBackend(ctx context.Context, session string) error
	Session(ctx context.Context, id string) (moattype.Session, error)
	Sessions(ctx context.Context) ([]moattype.Session, error)
	PutSession(ctx context.Context, s moattype.Session) (moattype.Session, error)
	PatchSession(ctx context.Context, id string, p moattype.SessionPatch) (moattype.Session, error)
	DeleteSession(ctx context.Context, id string) error
	DestroySessionSandboxes(ctx context.Context, id string) (moattype.SessionTeardown, error)
}

// Handle is one sandbox through API. *moattype.Sandbox and *Sandbox both implement it.
type Handle interface {
	ID() string
	Backend() string
	Info(ctx context.Context) (moattype.Info, error)
	Exec(ctx context.Context, req moattype.ExecRequest) (moattype.ExitResult, error)
	Terminal(ctx context.Context, req moattype.TerminalRequest) (moattype.ExitResult, error)
	WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error
	ReadFile(ctx context.Context, path string, w io.Writer) error
	ListDir(ctx context.Context, path string) ([]moattype.FileInfo, error)
	Remove(ctx context.Context, path string, recursive bool) error
	Mkdir(ctx context.Context, path string, mode fs.FileMode) error
	PutArchive(ctx context.Context, dir string, r io.Reader, lim moattype.ArchiveLimits) (moattype.ArchiveResult, error)
	GetArchive(ctx context.Context, dir string, w io.Writer, lim moattype.ArchiveLimits) error
	Stop(ctx context.Context) error
	Start(ctx context.Context) error
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Snapshot(ctx context.Context, name string) (moattype.Snapshot, error)
	ExposePort(ctx context.Context, port int) (string, error)
	Destroy(ctx context.Context) error
}

// Remote serves API from a moat server through c.
func Remote(c *Client) API { return remote{c} }

type remote struct{ *Client }

func (r remote) Create(ctx context.Context, spec moattype.Spec) (Handle, error) {
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
	_ Handle = (*Sandbox)(nil)
	_ API    = remote{}
)
