package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// parentComm names the parent of an exec'd process: moat-agent when the command went
// through the agent; an Engine API exec's parent is outside the container's pid namespace.
func parentComm(t *testing.T, inst backend.Instance) string {
	t.Helper()
	out, code := run(t, inst, "sh", "-c", `cat /proc/$PPID/comm 2>/dev/null || echo "ppid $PPID"`)
	if code != 0 {
		t.Fatalf("parent check exited %d: %s", code, out)
	}
	return strings.TrimSpace(out)
}

func TestAgentIsUsedAndMatchesEngineAPI(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("agent"))
	if inst.agent == nil {
		t.Fatal("instance has no agent")
	}
	if got := parentComm(t, inst); got != "moat-agent" {
		t.Fatalf("exec parent = %q, want moat-agent", got)
	}
	if fi, err := os.Lstat(filepath.Join(inst.agentDir, agentSock)); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("host socket: %v", err)
	}
	// The binary is mounted read-only: a sandbox cannot change what other sandboxes run.
	if out, code := run(t, inst, "sh", "-c", "echo x > /.moat/moat-agent"); code == 0 {
		t.Errorf("agent binary is writable from inside: %s", out)
	}
	// Same environment, workdir, stdin and exit statuses through both paths.
	type probe struct {
		argv  []string
		env   map[string]string
		dir   string
		stdin string
	}
	probes := []probe{
		{argv: []string{"env"}},
		{argv: []string{"env"}, env: map[string]string{"A": "override", "NEW": "x y"}},
		{argv: []string{"pwd"}},
		{argv: []string{"pwd"}, dir: "/tmp"},
		{argv: []string{"cat"}, stdin: "in\x00put"},
		{argv: []string{"sh", "-c", "echo o; echo e >&2; kill -TERM $$"}},
		{argv: []string{"sh", "-c", "umask; id; ulimit -n; cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'"}},
	}
	exec := func(engine bool, p probe) string {
		var out, errb bytes.Buffer
		req := &backend.ExecRequest{Argv: p.argv, Env: p.env, Workdir: p.dir, Stdout: &out, Stderr: &errb}
		if p.stdin != "" {
			req.Stdin = strings.NewReader(p.stdin)
		}
		var code int
		var err error
		if engine {
			code, err = inst.execEngine(testCtx(t), req)
		} else {
			code, err = inst.execAgent(testCtx(t), req)
		}
		if err != nil {
			t.Fatalf("%q (engine %v): %v", p.argv, engine, err)
		}
		lines := strings.Split(out.String(), "\n")
		if p.argv[0] == "env" {
			sort.Strings(lines)
		}
		return strings.Join(lines, "\n") + "|" + errb.String() + "|" + strconv.Itoa(code)
	}
	for _, p := range probes {
		if a, e := exec(false, p), exec(true, p); a != e {
			t.Errorf("%q env %v dir %q differs:\nagent:  %q\nengine: %q", p.argv, p.env, p.dir, a, e)
		}
	}
}

// TestAgentFallback: when the agent cannot be reached, Exec takes the Engine API path
// transparently.
func TestAgentFallback(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("fallback"))
	sock := filepath.Join(inst.agentDir, agentSock)
	if err := os.Rename(sock, sock+".away"); err != nil {
		t.Fatal(err)
	}
	if got := parentComm(t, inst); got == "moat-agent" {
		t.Errorf("exec went through a socket that is not there")
	}
	// A symlink planted where the socket was is not followed.
	if err := os.Symlink(sock+".away", sock); err != nil {
		t.Fatal(err)
	}
	if got := parentComm(t, inst); got == "moat-agent" {
		t.Errorf("exec followed a symlinked socket")
	}
	os.Remove(sock)
	if err := os.Rename(sock+".away", sock); err != nil {
		t.Fatal(err)
	}
	if got := parentComm(t, inst); got != "moat-agent" {
		t.Errorf("exec parent after restoring the socket = %q", got)
	}
}

// TestAgentStopStart: the agent comes back with the container.
func TestAgentStopStart(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("restart"))
	ctx := testCtx(t)
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := inst.Exec(ctx, &backend.ExecRequest{Argv: []string{"true"}, Stdout: &out, Stderr: &out}); err == nil {
		t.Error("exec in a stopped container succeeded")
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := parentComm(t, inst); got != "moat-agent" {
		t.Errorf("exec parent after restart = %q, want moat-agent", got)
	}
}

// TestAgentUnusable: a missing, dynamically linked or broken agent binary never breaks
// Create; the sandbox just runs without it.
func TestAgentUnusable(t *testing.T) {
	busybox := "/bin/busybox" // static (busybox-static), but not an agent: exits at once
	cases := map[string]string{
		"missing": "/nonexistent/moat-agent",
		"dynamic": "/bin/ls",
		"shell":   "/bin/sh", // dash: dynamically linked on Debian
	}
	if _, err := os.Stat(busybox); err == nil {
		if checkStatic(busybox) == nil {
			cases["broken"] = busybox
		}
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			b := newTestBackendAgent(t, path)
			on, why := b.AgentStatus()
			if name == "broken" {
				if !on {
					t.Fatalf("static busybox rejected: %s", why)
				}
			} else if on || !strings.HasPrefix(why, "docker: agent") {
				t.Fatalf("agent %s accepted or no reason: %v %q", path, on, why)
			}
			inst := mustCreate(t, b, createReq("noagent"))
			if inst.agent != nil {
				t.Errorf("instance uses an agent that cannot run")
			}
			if out, code := run(t, inst, "echo", "works"); code != 0 || out != "works\n" {
				t.Errorf("exec without agent: %q %d", out, code)
			}
			if inst.Handle().Version != 2 {
				t.Errorf("handle version %d", inst.Handle().Version)
			}
		})
	}
}

// TestAgentOffForRemoteDaemon: a tcp daemon never gets the agent (its sockets would be on
// another machine).
func TestAgentOffForRemoteDaemon(t *testing.T) {
	b, err := New(Config{Host: "tcp://127.0.0.1:1", Agent: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	if on, why := b.AgentStatus(); on || !strings.Contains(why, "local daemon") {
		t.Errorf("remote daemon: agent %v, %q", on, why)
	}
	b, _ = New(Config{Agent: AgentOff})
	if on, why := b.AgentStatus(); on || !strings.Contains(why, "disabled") {
		t.Errorf("agent off: %v, %q", on, why)
	}
}

// TestAgentDirCleanup: Destroy removes the agent directory, but never a directory outside
// the backend's own state directory.
func TestAgentDirCleanup(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("cleanup"))
	dir := inst.agentDir
	if err := inst.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("agent dir survived destroy: %v", err)
	}
	outside := t.TempDir()
	b.removeAgentDir(outside)
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("removeAgentDir removed a foreign directory: %v", err)
	}
}

// TestAgentDirCleanupAfterVanish: a container removed out of band (docker rm -f, not
// Destroy) leaves its agent directory behind; attaching to it after a restart finds it
// gone (NotFound) and removes the directory, so nothing of it stays and a recreate under
// the same id can make its directory again.
func TestAgentDirCleanupAfterVanish(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("vanish"))
	dir := inst.agentDir
	if dir == "" {
		t.Fatal("the sandbox has no agent directory: the check below would prove nothing")
	}
	h := inst.Handle()
	if err := b.cli.ContainerRemove(testCtx(t), inst.id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// As after a restart: the manager attaches to what its record names.
	if _, err := b.Attach(testCtx(t), h); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("attach to a vanished container: %v; want not_found", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("agent dir of a vanished container survived: %v", err)
	}
}

// TestAgentContainerRemovedMidExec: when the container goes away under a running command,
// Exec reports NotFound (not a generic connection error), as the Engine API path does.
func TestAgentContainerRemovedMidExec(t *testing.T) {
	for _, mode := range []string{"agent", "engine"} {
		t.Run(mode, func(t *testing.T) { testRemovedMidExec(t, mode == "engine") })
	}
}

func testRemovedMidExec(t *testing.T, engine bool) {
	b := newTestBackend(t)
	b.noAgentExec = engine
	inst := mustCreate(t, b, createReq("midexec"))
	started := make(chan struct{})
	w := &notifyWriter{ch: started}
	errc := make(chan error, 1)
	go func() {
		code, err := inst.Exec(testCtx(t), &backend.ExecRequest{Argv: []string{"sh", "-c", "echo go; sleep 60"},
			Workdir: "/", Stdout: w, Stderr: w})
		if err == nil {
			err = fmt.Errorf("exit code %d", code)
		}
		errc <- err
	}()
	<-started
	if err := b.cli.ContainerRemove(testCtx(t), inst.id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	if engine && err != nil && err.Error() == "exit code 137" {
		// The Engine API path reports the kill as exit 137: its stream ends while the
		// daemon still shows the container running. Known difference between the paths.
		t.Logf("engine path: %v", err)
		return
	}
	if !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("exec whose container was removed: %v, want NotFound", err)
	}
}

// TestAgentNeedsNoDaemon proves exec and files go through the agent: the same container
// seen through a backend whose daemon address is dead still runs commands and moves files.
func TestAgentNeedsNoDaemon(t *testing.T) {
	b := newTestBackend(t)
	real := mustCreate(t, b, createReq("nodaemon"))
	dead, err := New(Config{Host: "unix:///nonexistent/moat-test/docker.sock"})
	if err != nil {
		t.Fatal(err)
	}
	inst := dead.newInstance(real.id, real.name, real.runtime, real.agentDir)
	ctx := testCtx(t)
	if out, code := run(t, inst, "sh", "-c", "echo via agent"); code != 0 || out != "via agent\n" {
		t.Errorf("exec: %q %d", out, code)
	}
	body := bytes.Repeat([]byte("\x00\x01moat"), 100000)
	if err := inst.WriteFile(ctx, "/data/new/f.bin", bytes.NewReader(body), 0o640); err != nil {
		t.Fatalf("write: %v", err)
	}
	var got bytes.Buffer
	if err := inst.ReadFile(ctx, "/data/new/f.bin", &got); err != nil || !bytes.Equal(got.Bytes(), body) {
		t.Errorf("read back: %d bytes, %v", got.Len(), err)
	}
	if out, _ := run(t, inst, "stat", "-c", "%a %u", "/data/new/f.bin", "/data/new"); out != "640 0\n755 0\n" {
		t.Errorf("modes and owners: %q", out)
	}
	if err := inst.ReadFile(ctx, "/data/none", &got); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("read of a missing file: %v", err)
	}
	// With the agent gone from the picture, the dead daemon is what answers.
	os.Remove(filepath.Join(real.agentDir, agentSock))
	if _, err := inst.Exec(ctx, &backend.ExecRequest{Argv: []string{"true"}, Stdout: &got, Stderr: &got}); !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Errorf("exec without agent and daemon: %v, want Unavailable", err)
	}
}

// TestAgentDirCleanupWhileRemoving: a Destroy that finds the container's removal already
// under way (another Destroy, a `docker rm`) still removes the agent directory.
func TestAgentDirCleanupWhileRemoving(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("removing"))
	inst2 := b.newInstance(inst.id, inst.name, inst.runtime, inst.agentDir)
	ctx := testCtx(t)
	go func() {
		_ = b.cli.ContainerRemove(context.WithoutCancel(ctx), inst.id, container.RemoveOptions{Force: true})
	}()
	for range 2000 { // until the removal is under way (or done)
		if st, _ := inst2.Status(ctx); st == backend.StatusGone {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := inst2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inst.agentDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("agent dir survived a destroy during removal: %v", err)
	}
}

// TestAgentsDirPrivate: the sandbox owns everything under its agent directory (it can
// chmod it, create setuid files and device nodes there as root), so the agents directory
// above it must keep other host users out, even when it existed with a wider mode.
func TestAgentsDirPrivate(t *testing.T) {
	b := newTestBackend(t)
	agents := filepath.Join(b.cfg.StateDir, "agents")
	if err := os.Mkdir(agents, 0o755); err != nil {
		t.Fatal(err)
	}
	inst := mustCreate(t, b, createReq("private"))
	if filepath.Dir(inst.agentDir) != agents {
		t.Fatalf("agent dir %s is not under %s", inst.agentDir, agents)
	}
	fi, err := os.Stat(agents)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("agents dir: %v %v, want mode 0700", fi.Mode(), err)
	}
}
