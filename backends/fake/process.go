package fake

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/moatsh/moat/backend"
)

// CommandFunc runs a user-registered command inside a fake sandbox. req.Workdir is the
// current directory, req.Stdin is never nil, and ctx ends when the process is killed (exec
// ctx canceled, kill, Stop, Destroy). It returns the exit status. When it is the exec's
// argv[0], req.Detail is the exec's, so a command can play an OOM kill (req.SetOOMKilled).
type CommandFunc func(ctx context.Context, req *backend.ExecRequest) (int, error)

// errNotFoundCmd: no builtin or user command by that name.
var errNotFoundCmd = errors.New("command not found")

// signalError is the cancel cause of a process killed by a signal.
type signalError struct{ sig int }

func (e *signalError) Error() string { return "killed by signal" }

// runtime is what runs processes in one sandbox: its filesystem, commands and pid table.
type runtime struct {
	fs   *memfs
	cmds map[string]CommandFunc // user commands, by name; read-only after creation

	mu      sync.Mutex
	nextPID int
	procs   map[int]*process
}

func newRuntime(fs *memfs, cmds map[string]CommandFunc) *runtime {
	return &runtime{fs: fs, cmds: cmds, nextPID: 1, procs: map[int]*process{}}
}

// process is one running command. Its ctx ends when its parent's does or when it is
// killed; children inherit it, so killing a process kills what it started.
type process struct {
	rt     *runtime
	pid    int
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// call is one command invocation.
type call struct {
	p      *process
	argv   []string
	env    map[string]string
	cwd    string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	detail *backend.ExecDetail // the exec's, for the command that is its argv[0]
}

type toolFunc func(ctx context.Context, c *call) (int, error)

// binDirs are where a command given by path is looked for, as PATH would.
var binDirs = []string{"/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/", "/usr/local/bin/"}

// lookup finds a user command (first) or a builtin tool by name or by /bin-style path.
func (rt *runtime) lookup(argv0 string) (CommandFunc, toolFunc) {
	name := argv0
	if strings.Contains(argv0, "/") {
		if fn := rt.cmds[argv0]; fn != nil {
			return fn, nil
		}
		name = ""
		for _, d := range binDirs {
			if rest, ok := strings.CutPrefix(argv0, d); ok && !strings.Contains(rest, "/") {
				name = rest
			}
		}
		if name == "" {
			return nil, nil
		}
	}
	if fn := rt.cmds[name]; fn != nil {
		return fn, nil
	}
	return nil, tools[name]
}

// run runs c as a child of ctx's process and returns its exit status: 128+N when it was
// killed by signal N, ctx's error when ctx ended for another reason.
func (rt *runtime) run(ctx context.Context, c *call) (int, error) {
	user, tool := rt.lookup(c.argv[0])
	if user == nil && tool == nil {
		return 0, errNotFoundCmd
	}
	p := rt.spawn(ctx)
	defer rt.reap(p)
	c.p = p
	var code int
	var err error
	if user != nil {
		code, err = user(p.ctx, &backend.ExecRequest{
			Argv: c.argv, Env: c.env, Workdir: c.cwd, Stdin: c.stdin, Stdout: c.stdout, Stderr: c.stderr,
			Detail: c.detail,
		})
	} else {
		code, err = tool(p.ctx, c)
	}
	if p.ctx.Err() != nil {
		var sig *signalError
		if errors.As(context.Cause(p.ctx), &sig) {
			return 128 + sig.sig, nil
		}
		return 0, p.ctx.Err()
	}
	return code, err
}

func (rt *runtime) spawn(ctx context.Context) *process {
	pctx, cancel := context.WithCancelCause(ctx)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	p := &process{rt: rt, pid: rt.nextPID, ctx: pctx, cancel: cancel}
	rt.nextPID++
	rt.procs[p.pid] = p
	return p
}

func (rt *runtime) reap(p *process) {
	rt.mu.Lock()
	delete(rt.procs, p.pid)
	rt.mu.Unlock()
	p.cancel(nil)
}

// kill sends sig to pid; sig 0 only checks that it exists.
func (rt *runtime) kill(pid, sig int) bool {
	rt.mu.Lock()
	p := rt.procs[pid]
	rt.mu.Unlock()
	if p == nil {
		return false
	}
	if sig != 0 {
		p.cancel(&signalError{sig: sig})
	}
	return true
}

// killAll kills every process (Stop, Destroy).
func (rt *runtime) killAll(sig int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, p := range rt.procs {
		p.cancel(&signalError{sig: sig})
	}
}

// checkKilled returns, once p was killed or its ctx ended, what its shell must unwind with.
func (p *process) checkKilled() error {
	if p.ctx.Err() == nil {
		return nil
	}
	var sig *signalError
	if errors.As(context.Cause(p.ctx), &sig) {
		return &exitError{code: 128 + sig.sig}
	}
	return p.ctx.Err()
}
