package host

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/ptyrun"
	"github.com/moatsh/moat/errdefs"
)

// ExecPTY implements backend.PTYExecer: the command runs as Exec runs it (same workdir
// inside the sandbox root, clean environment, PATH lookup, limits, tracked so Destroy
// kills it), but as the leader of a new session on a fresh pseudo-terminal.
func (i *Instance) ExecPTY(ctx context.Context, req *backend.ExecRequest, size backend.WinSize, resize <-chan backend.WinSize) (int, error) {
	ctx, done, err := i.b.execs.Start(ctx, i.m.ID)
	if err != nil {
		return -1, errdefs.NotFoundf("host: sandbox %s is gone", i.m.ID)
	}
	defer done()
	if !i.exists() {
		return -1, errdefs.NotFoundf("host: sandbox %s is gone", i.m.ID)
	}
	// What follows mirrors Exec's preparation; keep the two in step.
	wd := req.Workdir
	if wd == "" {
		wd = "/"
	}
	if err := i.fs.MkdirAll(wd, 0o755); err != nil {
		return -1, err
	}
	cwd, err := i.fs.HostPath(wd)
	if err != nil {
		return -1, fmt.Errorf("host: workdir %s: %w", wd, err)
	}
	env := map[string]string{
		"PATH":   defaultPath,
		"HOME":   filepath.Join(i.m.Root, "home"),
		"TMPDIR": filepath.Join(i.m.Root, "tmp"),
	}
	for k, v := range req.Env {
		env[k] = v
	}
	envList := make([]string, 0, len(env))
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	sort.Strings(envList)
	resolved, err := lookPath(req.Argv[0], env["PATH"], cwd)
	if err != nil {
		return -1, err
	}
	code, err := ptyrun.Run(ctx, ptyrun.Cmd{
		Argv: req.Argv, Path: resolved, Dir: cwd, Env: envList,
		Stdin: req.Stdin, Stdout: req.Stdout, Group: i.group, Size: size, Resize: resize,
	})
	if err != nil {
		return code, fmt.Errorf("host: %w", err)
	}
	return code, nil
}

var _ backend.PTYExecer = (*Instance)(nil)
