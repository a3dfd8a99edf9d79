package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/agent/agenttest"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/bwrap"
	"github.com/moatsh/moat/backends/docker"
	"github.com/moatsh/moat/backends/host"
	"github.com/moatsh/moat/internal/testenv"
)

func randID(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func bctx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

func shortTemp(b *testing.B, prefix string) string {
	dir, err := os.MkdirTemp("", prefix) // short: agent socket paths are limited
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// dockerBackend returns a docker backend with the agent (agentOn) or without, skipping
// when the daemon or the test image is missing.
func dockerBackend(b *testing.B, agentOn bool) *docker.Backend {
	cfg := docker.Config{Image: testenv.DockerImage(), StateDir: shortTemp(b, "moat-bench-"), Agent: docker.AgentOff}
	if agentOn {
		cfg.Agent = agenttest.Build(b)
	}
	d, err := docker.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	h := d.Probe(bctx(b))
	reason := ""
	if h.State != backend.Ready {
		reason = h.Reason
	}
	testenv.Require(b, "docker", reason)
	if on, why := d.AgentStatus(); on != agentOn {
		b.Fatalf("docker agent in use = %v, want %v (%s)", on, agentOn, why)
	}
	return d
}

func bwrapBackend(b *testing.B) (backend.Backend, string) {
	be, err := bwrap.New(backend.Config{StateDir: shortTemp(b, "moat-bench-bwrap-")})
	if err != nil {
		b.Fatal(err)
	}
	h := be.(backend.Prober).Probe(bctx(b))
	reason := ""
	if h.State == backend.Unavailable {
		reason = h.Reason
	}
	testenv.Require(b, "bwrap", reason)
	tar, reason := testenv.RootfsTar()
	testenv.Require(b, "rootfs", reason)
	return be, tar
}

func hostBackend(b *testing.B) backend.Backend {
	be, err := host.New(backend.Config{StateDir: shortTemp(b, "moat-bench-host-")})
	if err != nil {
		b.Fatal(err)
	}
	return be
}

func createReq(image string) *backend.CreateRequest {
	id := randID("bench-")
	return &backend.CreateRequest{ID: id, Name: id, Image: image, Workdir: "/workspace",
		Labels: map[string]string{"moat.bench": "1"}, Network: backend.NetworkNone}
}

func create(b *testing.B, be backend.Backend, image string) backend.Instance {
	inst, err := be.Create(bctx(b), createReq(image))
	if err != nil {
		b.Fatalf("create: %v", err)
	}
	b.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	return inst
}

// parent reports the exec'd process's parent command inside the sandbox, so a benchmark
// can prove which path it measures before timing it.
func parent(b *testing.B, inst backend.Instance) string {
	var out bytes.Buffer
	code, err := inst.Exec(bctx(b), &backend.ExecRequest{Argv: []string{"sh", "-c", `cat /proc/$PPID/comm 2>/dev/null || echo none`},
		Stdout: &out, Stderr: io.Discard})
	if err != nil || code != 0 {
		b.Fatalf("parent probe: %d %v", code, err)
	}
	return strings.TrimSpace(out.String())
}

// execTrue times inst.Exec of `true` b.N times.
func execTrue(b *testing.B, inst backend.Instance, workdir string) {
	ctx := bctx(b)
	req := &backend.ExecRequest{Argv: []string{"true"}, Workdir: workdir, Stdout: io.Discard, Stderr: io.Discard}
	b.ResetTimer()
	for b.Loop() {
		code, err := inst.Exec(ctx, req)
		if err != nil || code != 0 {
			b.Fatalf("exec true: %d %v", code, err)
		}
	}
}

func runCmd(b *testing.B, name string, args ...string) {
	cmd := exec.Command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s %q: %v: %s", name, args, err, out)
	}
}

// BenchmarkExec runs `true` through every path, one sandbox per path made before timing.
func BenchmarkExec(b *testing.B) {
	b.Run("moat-docker-agent", func(b *testing.B) {
		inst := create(b, dockerBackend(b, true), testenv.DockerImage())
		if p := parent(b, inst); p != "moat-agent" {
			b.Fatalf("exec does not go through the agent (parent %q)", p)
		}
		execTrue(b, inst, "/workspace")
	})
	b.Run("moat-docker-engineapi", func(b *testing.B) {
		inst := create(b, dockerBackend(b, false), testenv.DockerImage())
		if p := parent(b, inst); p == "moat-agent" {
			b.Fatal("exec goes through an agent")
		}
		execTrue(b, inst, "/workspace")
	})
	b.Run("docker-cli-exec", func(b *testing.B) {
		// The naive path: the docker CLI against a sandbox container moat made.
		inst := create(b, dockerBackend(b, false), testenv.DockerImage())
		id := inst.(*docker.Instance).ContainerID()
		if _, err := exec.LookPath("docker"); err != nil {
			testenv.Require(b, "docker", "docker CLI not in PATH")
		}
		for b.Loop() {
			runCmd(b, "docker", "exec", id, "true")
		}
	})
	b.Run("docker-cli-run", func(b *testing.B) {
		dockerBackend(b, false) // skip with the daemon's reason
		if _, err := exec.LookPath("docker"); err != nil {
			testenv.Require(b, "docker", "docker CLI not in PATH")
		}
		for b.Loop() {
			runCmd(b, "docker", "run", "--rm", "--network", "none", "--label", "moat.bench=1", testenv.DockerImage(), "true")
		}
	})
	b.Run("moat-bwrap", func(b *testing.B) {
		be, tar := bwrapBackend(b)
		execTrue(b, create(b, be, tar), "/workspace")
	})
	b.Run("moat-host", func(b *testing.B) {
		execTrue(b, create(b, hostBackend(b), ""), "")
	})
	b.Run("host-fork-exec", func(b *testing.B) {
		path, err := exec.LookPath("true")
		if err != nil {
			b.Skip("no true in PATH")
		}
		for b.Loop() {
			if err := exec.Command(path).Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreateDestroy times making a sandbox ready for exec and removing it.
func BenchmarkCreateDestroy(b *testing.B) {
	cd := func(b *testing.B, be backend.Backend, image string) {
		ctx := bctx(b)
		for b.Loop() {
			inst, err := be.Create(ctx, createReq(image))
			if err != nil {
				b.Fatalf("create: %v", err)
			}
			if err := inst.Destroy(ctx); err != nil {
				b.Fatalf("destroy: %v", err)
			}
		}
	}
	b.Run("moat-docker-agent", func(b *testing.B) { cd(b, dockerBackend(b, true), testenv.DockerImage()) })
	b.Run("moat-docker-noagent", func(b *testing.B) { cd(b, dockerBackend(b, false), testenv.DockerImage()) })
	b.Run("moat-bwrap", func(b *testing.B) {
		be, tar := bwrapBackend(b)
		cd(b, be, tar)
	})
	b.Run("moat-host", func(b *testing.B) { cd(b, hostBackend(b), "") })
}

// BenchmarkFiles writes a 64 KiB file into a docker sandbox and reads it back, through the
// agent and through the Engine API archive endpoints.
func BenchmarkFiles(b *testing.B) {
	body := bytes.Repeat([]byte("moat-bench\n"), 64<<10/11)
	rw := func(b *testing.B, inst backend.Instance) {
		ft := inst.(backend.FileTransferer)
		ctx := bctx(b)
		var got bytes.Buffer
		for b.Loop() {
			if err := ft.WriteFile(ctx, "/workspace/bench.txt", bytes.NewReader(body), 0o644); err != nil {
				b.Fatal(err)
			}
			got.Reset()
			if err := ft.ReadFile(ctx, "/workspace/bench.txt", &got); err != nil || got.Len() != len(body) {
				b.Fatalf("read: %d bytes, %v", got.Len(), err)
			}
		}
	}
	b.Run("moat-docker-agent", func(b *testing.B) { rw(b, create(b, dockerBackend(b, true), testenv.DockerImage())) })
	b.Run("moat-docker-archive", func(b *testing.B) { rw(b, create(b, dockerBackend(b, false), testenv.DockerImage())) })
}
