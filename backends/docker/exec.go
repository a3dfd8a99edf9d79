package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/moatsh/moat/agent"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/proctree"
)

// ociFailure starts the message the daemon writes into the exec stream (with exit code 126)
// when the runtime could not start the process at all: missing binary, missing workdir,
// permission denied. Such an exec is an error, not an exit code.
const ociFailure = "OCI runtime exec failed"

// markerEnv marks an exec's process tree when it must be killed from inside the container
// (remote daemon, sandboxed runtime): children inherit the variable, the kill script finds them.
const markerEnv = "MOAT_EXEC_ID"

// killScript kills every process in the container whose environment carries the marker $1.
// It first stops them all (twice, to catch children forked meanwhile), so none runs on after
// a relative dies (the /proc glob is in lexical, not pid, order), then kills them.
const killScript = `for sig in STOP STOP KILL; do
for p in /proc/[0-9]*; do
  grep -qzxF "` + markerEnv + `=$1" "$p/environ" 2>/dev/null && kill -"$sig" "${p#/proc/}" 2>/dev/null
done
done
exit 0`

// Exec implements backend.Instance: through the agent when the container has one that
// answers, else through the Engine API.
func (i *Instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("docker: exec %s: %w", req.Argv[0], err)
	}
	if i.agent != nil && !i.b.noAgentExec {
		code, err := i.execAgent(ctx, req)
		if err == nil || !errors.Is(err, agent.ErrUnreachable) {
			return code, err
		}
		// The command was never sent: run it the slow way.
	}
	return i.execEngine(ctx, req)
}

// execAgent runs req through the container's agent.
func (i *Instance) execAgent(ctx context.Context, req *backend.ExecRequest) (int, error) {
	var oom bool
	code, err := i.agent.Exec(ctx, &agent.ExecRequest{Argv: req.Argv, Env: envList(req.Env),
		Workdir: req.Workdir, Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, OOMKilled: &oom})
	if err == nil && oom {
		req.SetOOMKilled()
	}
	return code, i.agentErr(ctx, err)
}

// agentErr explains an agent connection that broke mid-operation by what became of the
// container: gone is NotFound, stopped or paused FailedPrecondition.
func (i *Instance) agentErr(ctx context.Context, err error) error {
	if err != nil && errors.Is(err, agent.ErrConnectionLost) && ctx.Err() == nil {
		// The agent vanished mid-command: say what became of the container. The daemon
		// may still report it running for a moment after its processes were killed.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		for sctx.Err() == nil {
			st, serr := i.Status(sctx)
			if serr != nil {
				break
			}
			switch st {
			case backend.StatusGone:
				return errdefs.NotFoundf("docker: container %s not found", i.name)
			case backend.StatusStopped, backend.StatusPaused:
				return errdefs.FailedPreconditionf("docker: container %s is %s: %v", i.name, st, err)
			}
			select {
			case <-sctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return err
}

// execEnv returns an Engine API exec's environment and, when its tree must be killed from
// inside the container, the marker put in it.
func (i *Instance) execEnv(ctx context.Context, vars map[string]string) (env []string, marker string) {
	env = envList(vars)
	if !i.canKillFromHost(ctx) {
		marker = randomHex()
		env = append(env, markerEnv+"="+marker)
	}
	return env, marker
}

// envList turns variables into sorted "KEY=value" entries.
func envList(vars map[string]string) []string {
	env := make([]string, 0, len(vars)+1)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return env
}

// execEngine runs req as an Engine API exec.
func (i *Instance) execEngine(ctx context.Context, req *backend.ExecRequest) (int, error) {
	env, marker := i.execEnv(ctx, req.Env)
	created, err := i.b.cli.ContainerExecCreate(ctx, i.id, container.ExecOptions{
		Cmd:          req.Argv,
		Env:          env,
		WorkingDir:   req.Workdir,
		AttachStdin:  req.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return -1, i.execErr(err)
	}
	resp, err := i.b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		if ctx.Err() != nil {
			// The daemon may have started the process before the request was cut off.
			i.kill(ctx, created.ID, marker)
			return -1, fmt.Errorf("docker: exec %s: %w", req.Argv[0], ctx.Err())
		}
		return -1, i.execErr(err)
	}
	var closeOnce sync.Once
	closeConn := func() { closeOnce.Do(resp.Close) }
	defer closeConn()

	if req.Stdin != nil {
		// Not waited for: a process may exit without reading its input, and req.Stdin may
		// block forever. Closing the connection ends the copy.
		go func() {
			_, _ = io.Copy(resp.Conn, req.Stdin)
			_ = resp.CloseWrite()
		}()
	}
	stdout := &failureSniffer{w: req.Stdout}
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(stdout, req.Stderr, resp.Reader)
		done <- err
	}()

	code, copyErr, err := i.waitExec(ctx, created.ID, marker, req.Argv[0], "output", stdout, done, closeConn)
	if err == nil && copyErr != nil {
		return -1, fmt.Errorf("docker: exec %s: copying output: %w", req.Argv[0], copyErr)
	}
	return code, err
}

// waitExec waits for an Engine API exec whose output is being copied (done receives the
// copy's end) and returns its exit code and the copy's error. When ctx ends first it kills
// the exec's tree and closes the stream. stream names the stream in errors.
func (i *Instance) waitExec(ctx context.Context, execID, marker, argv0, stream string, out *failureSniffer,
	done <-chan error, closeConn func()) (code int, copyErr, err error) {
	select {
	case copyErr = <-done:
		code, running, err := i.exitCode(ctx, execID)
		if err != nil {
			return -1, nil, err
		}
		if running {
			// The stream broke while the process lives on.
			if copyErr == nil {
				copyErr = io.ErrUnexpectedEOF
			}
			return -1, nil, errdefs.Unavailablef("docker: exec %s: %s stream ended early: %v", argv0, stream, copyErr)
		}
		if err := out.failure(code); err != nil {
			return -1, nil, err
		}
		return code, copyErr, nil
	case <-ctx.Done():
		i.kill(ctx, execID, marker)
		closeConn()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		return -1, nil, fmt.Errorf("docker: exec %s: %w", argv0, ctx.Err())
	}
}

// execErr maps an exec create/attach error: a vanished container is NotFound, a stopped or
// paused one FailedPrecondition.
func (i *Instance) execErr(err error) error {
	switch {
	case cerrdefs.IsNotFound(err):
		return errdefs.NotFoundf("docker: container %s not found", i.name)
	case cerrdefs.IsConflict(err):
		return errdefs.Newf(errdefs.ErrFailedPrecondition, "docker: exec in container %s: %w", i.name, err)
	}
	return i.b.mapErr(err, "docker: exec in container %s", i.name)
}

// exitCode reads an exec's exit code. The output stream can end a moment before the daemon
// records the exit, so it polls briefly while the exec still reads as running.
func (i *Instance) exitCode(ctx context.Context, execID string) (code int, running bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		ins, err := i.b.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				return -1, false, errdefs.NotFoundf("docker: container %s not found", i.name)
			}
			return -1, false, i.b.mapErr(err, "docker: inspect exec")
		}
		if !ins.Running {
			return ins.ExitCode, false, nil
		}
		select {
		case <-ctx.Done():
			return -1, true, nil
		case <-time.After(delay):
		}
	}
}

// failureSniffer passes stdout through, except when it begins with the runtime's failure
// message: that it keeps back so failure can turn it into an error. It holds back at most
// len(ociFailure) bytes, and only while they still match.
type failureSniffer struct {
	w       io.Writer
	held    []byte
	matched bool // the stream began with ociFailure: keep all of it
	passing bool // the stream did not: write through
}

func (s *failureSniffer) Write(p []byte) (int, error) {
	if s.passing {
		return s.w.Write(p)
	}
	s.held = append(s.held, p...)
	n := min(len(s.held), len(ociFailure))
	// Runtime messages are short: a long stream is the program's own output.
	if string(s.held[:n]) == ociFailure[:n] && len(s.held) <= 4096 {
		s.matched = n == len(ociFailure)
		return len(p), nil
	}
	s.matched = false
	s.passing = true
	held := s.held
	s.held = nil
	if _, err := s.w.Write(held); err != nil {
		return 0, err
	}
	return len(p), nil
}

// failure returns the error for a runtime start failure, or nil after flushing what was held
// back when the process really ran.
func (s *failureSniffer) failure(code int) error {
	msg := strings.TrimSpace(string(s.held))
	if s.matched && (code == 126 || code == 127) && strings.Contains(msg, ": exec failed: ") {
		switch {
		case strings.Contains(msg, "executable file not found"),
			strings.Contains(msg, "no such file or directory"):
			return errdefs.New(errdefs.ErrNotFound, "docker: "+ociMessage(msg))
		case strings.Contains(msg, "permission denied"):
			return errdefs.New(errdefs.ErrPermissionDenied, "docker: "+ociMessage(msg))
		}
		return errors.New("docker: " + ociMessage(msg))
	}
	if len(s.held) > 0 {
		held := s.held
		s.held = nil
		_, _ = s.w.Write(held)
	}
	return nil
}

// ociMessage shortens "OCI runtime exec failed: exec failed: unable to start container
// process: exec: "x": executable file not found in $PATH: unknown" to its useful part.
func ociMessage(msg string) string {
	if j := strings.Index(msg, "exec: "); j >= 0 {
		msg = msg[j:]
	} else if j := strings.Index(msg, "chdir to cwd"); j >= 0 {
		msg = msg[j:]
	}
	return strings.TrimSuffix(msg, ": unknown")
}

// canKillFromHost decides, once per instance, whether exec'd processes can be killed by
// host pid: the daemon is on a local unix socket, the runtime is runc (gVisor and VM runtimes
// report pids of their shims), and the container's init pid is visible here in the
// container's cgroup (so the daemon is not inside a VM, nor moat in another pid namespace).
// When it cannot tell yet (inspect failed), it answers false without deciding: the
// in-container path works everywhere, only slower.
func (i *Instance) canKillFromHost(ctx context.Context) bool {
	i.killMu.Lock()
	defer i.killMu.Unlock()
	if i.killDecided {
		return i.hostKill
	}
	if !i.b.hostPID || !strings.HasPrefix(i.b.host, "unix://") || !isRunc(i.runtime) {
		i.killDecided = true
		return false
	}
	info, err := i.b.cli.ContainerInspect(ctx, i.id)
	if err != nil || info.State == nil || info.State.Pid <= 0 {
		return false
	}
	i.killDecided = true
	i.hostKill = (info.HostConfig == nil || isRunc(info.HostConfig.Runtime)) &&
		pidInContainer(info.State.Pid, i.id)
	return i.hostKill
}

func isRunc(runtime string) bool {
	switch runtime {
	case "", "runc", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux":
		return true
	}
	return false
}

// pidInContainer reports whether host pid belongs to container id, by its cgroup path (all
// cgroup drivers and versions put the container id in it). It also guards against pid reuse.
func pidInContainer(pid int, id string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	return err == nil && bytes.Contains(b, []byte(id))
}

// kill ends an exec's process and everything it started.
func (i *Instance) kill(ctx context.Context, execID, marker string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if marker != "" {
		i.killInContainer(ctx, marker)
		return
	}
	// The process may not have a pid yet when cancellation comes right after the start.
	for delay := time.Millisecond; ctx.Err() == nil; delay = min(delay*2, 50*time.Millisecond) {
		ins, err := i.b.cli.ContainerExecInspect(ctx, execID)
		if err != nil || (!ins.Running && ins.Pid == 0 && delay > 200*time.Millisecond) {
			return
		}
		if ins.Pid > 0 {
			if !ins.Running {
				return
			}
			// Docker makes every exec a group leader; each pid is checked to still belong
			// to the container before it is signalled.
			proctree.Kill(ins.Pid, func(pid int) bool { return pidInContainer(pid, i.id) })
			return
		}
		time.Sleep(delay)
	}
}

// killInContainer kills the marked process tree through a second exec.
func (i *Instance) killInContainer(ctx context.Context, marker string) {
	created, err := i.b.cli.ContainerExecCreate(ctx, i.id, container.ExecOptions{
		Cmd: []string{"/bin/sh", "-c", killScript, "moat-kill", marker},
	})
	if err != nil {
		return
	}
	if err := i.b.cli.ContainerExecStart(ctx, created.ID, container.ExecStartOptions{Detach: true}); err != nil {
		return
	}
	_, _, _ = i.exitCode(ctx, created.ID)
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
