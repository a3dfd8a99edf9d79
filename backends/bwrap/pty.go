package bwrap

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/ptyrun"
	"github.com/moatsh/moat/errdefs"
)

// ExecPTY implements backend.PTYExecer: one bwrap process as for Exec (same namespaces,
// binds, limits, clean environment, workdir, lookup of the program, tracked so Destroy
// kills it), started as the leader of a new session on a fresh pseudo-terminal.
//
// Exec passes --new-session so a sandboxed process cannot push input into moat's terminal
// with TIOCSTI (CVE-2017-5226). Here that flag would take the controlling terminal away,
// and it is not needed: the terminal belongs to the sandbox alone, and its only input is
// req.Stdin. The terminal's session is made inside the sandbox when it can be (see below).
// bwrap makes the terminal visible as /dev/console inside (the sandbox's
// /dev/pts is its own devpts instance), so `tty` prints /dev/console.
func (i *Instance) ExecPTY(ctx context.Context, req *backend.ExecRequest, size backend.WinSize, resize <-chan backend.WinSize) (int, error) {
	p, err := i.prepare(ctx, req)
	if err != nil {
		return -1, err
	}
	defer p.done()
	ctx, bw, wd, env := p.ctx, p.bw, p.wd, p.env
	// The terminal's session and its foreground process group should live inside the
	// sandbox's pid namespace: a shell records the foreground group at start and restores
	// it at exit, and the group of a session started outside reads as 0 inside, so dash
	// fails that restore ("Cannot set tty process group") and exits 2. When the sandbox
	// has setsid(1) (busybox and util-linux both take -c), the command starts through
	// `setsid -c`, which makes a session inside and takes the terminal as its controlling
	// terminal; bwrap is then started without one. Otherwise bwrap's own session gets the
	// terminal: everything works except that restore.
	cmdArgv, viaSetsid := req.Argv, false
	if i.lookPath("setsid", env["PATH"], wd) == nil {
		cmdArgv = append([]string{"setsid", "-c", "--"}, req.Argv...)
		viaSetsid = true
	}
	argv, err := withoutNewSession(i.args(bw, wd, env, cmdArgv))
	if err != nil {
		return -1, err
	}
	out := &sniffer{w: req.Stdout}
	code, err := ptyrun.Run(ctx, ptyrun.Cmd{
		Argv: argv, Path: bw, Env: []string{}, Dir: "/", NoCtty: viaSetsid,
		Stdin: req.Stdin, Stdout: out, Group: i.sb.Group(), Size: size, Resize: resize,
	})
	if err != nil {
		return code, fmt.Errorf("bwrap: %w", err)
	}
	// As in Exec: bwrap (or setsid) reports an exec failure lookPath could not foresee
	// (a missing ELF interpreter); on a terminal that message is the first output.
	if (code == 1 && out.execFailed()) || (viaSetsid && (code == 1 || code == 126 || code == 127) && out.setsidFailed()) {
		return -1, errdefs.NotFoundf("bwrap: executable %s could not be started in the sandbox", req.Argv[0])
	}
	return code, nil
}

// setsidFailed recognises setsid's own report that it could not execute the command:
// util-linux "setsid: failed to execute X: No such file or directory" and busybox
// "setsid: can't execute 'X': No such file or directory".
func (s *sniffer) setsidFailed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := string(s.head)
	return strings.HasPrefix(h, "setsid: ") && strings.Contains(h, "No such file or directory")
}

// withoutNewSession removes bwrap's --new-session flag from an argv built by args. Only
// the flag itself is removed: the first occurrence before the "--" that ends bwrap's
// options, where args puts it ahead of any user-supplied value.
func withoutNewSession(argv []string) ([]string, error) {
	end := slices.Index(argv, "--")
	j := slices.Index(argv, "--new-session")
	if end < 0 || j < 0 || j > end {
		return nil, fmt.Errorf("bwrap: internal error: no --new-session among bwrap's options")
	}
	return slices.Delete(slices.Clone(argv), j, j+1), nil
}

var _ backend.PTYExecer = (*Instance)(nil)
