package docker

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/docker/docker/api/types/mount"

	"github.com/moatsh/moat/agent"
)

// The agent inside a container (see docs/agent-protocol.md). The host directory
// <StateDir>/agents/<dir>/ is bind-mounted read-write at agentMount, the moat-agent binary
// read-only at agentMount/moat-agent on top of it, and the agent (the container's main
// process, under docker-init) listens on agentMount/agent.sock, which the host reaches as
// <StateDir>/agents/<dir>/agent.sock.
const (
	agentMount  = "/.moat"
	agentBinIn  = agentMount + "/moat-agent"
	agentSockIn = agentMount + "/agent.sock"
	agentSock   = "agent.sock"
	// AgentOff is the Config.Agent value that disables the agent.
	AgentOff = "off"
)

// agentReady bounds how long Create waits for a started agent to answer; a container whose
// agent does not come up is recreated without it.
const agentReady = 15 * time.Second

// maxSockPath keeps host socket paths within sockaddr_un's limit (108 bytes with the NUL).
const maxSockPath = 104

// agentBinary finds, checks and installs the moat-agent binary once per Backend. It
// returns the installed (content-addressed, read-only mounted) copy, or "" and why not.
func (b *Backend) agentBinary() (string, string) {
	b.agentOnce.Do(func() {
		b.agentBin, b.agentWhy = b.installAgent()
		if b.agentBin == "" && b.cfg.Agent != AgentOff {
			b.logf("%s; exec goes through the Engine API", b.agentWhy)
		}
	})
	return b.agentBin, b.agentWhy
}

// AgentStatus reports whether new sandboxes get the in-container agent, and why not.
func (b *Backend) AgentStatus() (enabled bool, reason string) {
	bin, why := b.agentBinary()
	return bin != "", why
}

func (b *Backend) installAgent() (string, string) {
	if b.cfg.Agent == AgentOff {
		return "", "docker: agent disabled by config"
	}
	if !strings.HasPrefix(b.host, "unix://") {
		return "", fmt.Sprintf("docker: agent needs a local daemon on a unix socket, not %s", b.host)
	}
	src, err := findAgent(b.cfg.Agent)
	if err != nil {
		return "", "docker: agent: " + err.Error()
	}
	if err := checkStatic(src); err != nil {
		return "", fmt.Sprintf("docker: agent %s: %v", src, err)
	}
	state, err := b.stateDir()
	if err != nil {
		return "", "docker: agent: " + err.Error()
	}
	dst, err := installCopy(src, filepath.Join(state, "bin"))
	if err != nil {
		return "", "docker: agent: " + err.Error()
	}
	return dst, ""
}

// findAgent locates moat-agent: the configured path, else next to the running executable
// (where `make build` puts it), else "moat-agent" in $PATH.
func findAgent(configured string) (string, error) {
	if configured != "" && configured != "auto" {
		return configured, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "moat-agent")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("moat-agent")
	if err != nil {
		return "", errors.New("moat-agent is neither next to the moat executable nor in $PATH")
	}
	return p, nil
}

// checkStatic accepts only an ELF executable for this architecture without an interpreter:
// the binary runs inside arbitrary images.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64,
		"386": elf.EM_386, "arm": elf.EM_ARM, "riscv64": elf.EM_RISCV, "ppc64le": elf.EM_PPC64,
		"s390x": elf.EM_S390}[runtime.GOARCH]
	if f.Machine != want {
		return fmt.Errorf("built for %v, not %s", f.Machine, runtime.GOARCH)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (build it with CGO_ENABLED=0)")
		}
	}
	return nil
}

// installCopy copies src to dir/moat-agent-<sha256 prefix> unless that exists, so running
// containers keep the binary they were started with when moat is upgraded.
func installCopy(src, dir string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	h := sha256.New()
	if _, err := io.Copy(h, in); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "moat-agent-"+hex.EncodeToString(h.Sum(nil))[:16])
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		return dst, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".moat-agent-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp.Name(), dst)
}

// stateDir returns Config.StateDir, or a temporary directory made on first use.
func (b *Backend) stateDir() (string, error) {
	b.stateOnce.Do(func() {
		b.state = b.cfg.StateDir
		if b.state == "" {
			b.state, b.stateErr = os.MkdirTemp("", "moat-docker-")
		}
	})
	return b.state, b.stateErr
}

var safeDirName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)

// agentDirFor makes the per-sandbox directory and returns its mounts. It returns dir ""
// and no error when the backend does not use the agent at all (AgentStatus says why), and
// an error when this one sandbox cannot have it.
func (b *Backend) agentDirFor(id string) (dir string, mounts []mount.Mount, err error) {
	bin, _ := b.agentBinary()
	if bin == "" {
		return "", nil, nil
	}
	state, err := b.stateDir()
	if err != nil {
		return "", nil, err
	}
	name := id
	if !safeDirName.MatchString(name) {
		sum := sha256.Sum256([]byte(id))
		name = hex.EncodeToString(sum[:8])
	}
	// Each sandbox owns its directory: root inside can chmod it and create setuid files
	// and device nodes there. The agents directory keeps other host users out of all of
	// them, so its mode is enforced, not just requested on creation.
	agents := filepath.Join(state, "agents")
	if err := os.MkdirAll(agents, 0o700); err != nil {
		return "", nil, err
	}
	if err := os.Chmod(agents, 0o700); err != nil {
		return "", nil, err
	}
	dir = filepath.Join(agents, name)
	if len(filepath.Join(dir, agentSock)) > maxSockPath {
		return "", nil, fmt.Errorf("socket path %s is too long for a unix socket", filepath.Join(dir, agentSock))
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, err
	}
	// The read-only binary mount needs a mount point inside the read-write one.
	if err := os.WriteFile(filepath.Join(dir, "moat-agent"), nil, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, []mount.Mount{
		{Type: mount.TypeBind, Source: dir, Target: agentMount},
		{Type: mount.TypeBind, Source: bin, Target: agentBinIn, ReadOnly: true},
	}, nil
}

// removeAgentDir deletes a sandbox's agent directory, but only one this backend's state
// directory holds: the path may come from a container's mounts.
func (b *Backend) removeAgentDir(dir string) {
	if dir == "" {
		return
	}
	state, err := b.stateDir()
	if err != nil || filepath.Dir(filepath.Clean(dir)) != filepath.Join(state, "agents") {
		return
	}
	_ = os.RemoveAll(dir)
}

// agentClient returns the client for the agent in dir.
func agentClient(dir string) *agent.Client {
	if dir == "" {
		return nil
	}
	return &agent.Client{Socket: filepath.Join(dir, agentSock), Prefix: "docker"}
}

// waitAgent waits until the instance's agent answers, or the container stopped running,
// or agentReady passed. It polls every few milliseconds: a failed connect costs
// microseconds, and this wait is on the Create path.
func (i *Instance) waitAgent(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, agentReady)
	defer cancel()
	var last error
	checked := time.Now()
	for delay := 500 * time.Microsecond; ; delay = min(delay*2, 5*time.Millisecond) {
		_, err := i.agent.Ping(ctx)
		if err == nil {
			return nil
		}
		last = err
		if time.Since(checked) > 200*time.Millisecond {
			checked = time.Now()
			if st, err := i.Status(ctx); err == nil && st != "running" {
				return fmt.Errorf("container is %s: %v", st, last)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), last)
		case <-time.After(delay):
		}
	}
}
