package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/moatsh/moat/agent/agenttest"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/backendtest"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/testenv"
)

// testLabel marks every container a test backend creates (value unique per backend), so
// cleanup finds them even when a test fails before it learns their ids.
const testLabel = "moat.docker-test"

func randID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newTestBackend returns a backend on the local daemon that puts the agent (built from
// this tree) in its sandboxes, skipping (or failing under MOAT_TEST_REQUIRE) when the
// daemon or the test image is not there.
func newTestBackend(t testing.TB) *Backend {
	t.Helper()
	return newTestBackendAgent(t, "")
}

// newTestBackendAgent is newTestBackend with Config.Agent set to agentCfg; "" means the
// freshly built agent.
func newTestBackendAgent(t testing.TB, agentCfg string) *Backend {
	t.Helper()
	state, err := os.MkdirTemp("", "moat-dt-") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	b, err := New(Config{Image: testenv.DockerImage(), StateDir: state, Agent: agentCfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := b.Probe(ctx)
	reason := ""
	if h.State != backend.Ready {
		reason = h.Reason
	}
	testenv.Require(t, "docker", reason)
	if agentCfg == "" {
		b.cfg.Agent = agenttest.Build(t)
	}
	run := randID()
	b.extraLabels = map[string]string{testLabel: run}
	t.Cleanup(func() {
		removeTestContainers(t, b, run)
		b.Close()
	})
	return b
}

// removeTestContainers force-removes every container labelled with run that still exists;
// it reports how many it found.
func removeTestContainers(t testing.TB, b *Backend, run string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := b.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", testLabel+"="+run))})
	if err != nil {
		t.Logf("cleanup: list: %v", err)
		return 0
	}
	// Snapshot images inherit the container's labels; the suite does not delete them.
	imgs, err := b.cli.ImageList(ctx, image.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", testLabel+"="+run))})
	if err == nil {
		defer func() {
			for _, im := range imgs {
				_, _ = b.cli.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true})
			}
		}()
	}
	n := 0
	for _, c := range cs {
		if c.State == "removing" {
			continue
		}
		n++
		if err := b.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !strings.Contains(err.Error(), "No such container") {
			t.Logf("cleanup: remove %s: %v", c.ID, err)
		}
	}
	return n
}

// TestConformance runs the suite with the agent: every exec goes through moat-agent.
func TestConformance(t *testing.T) {
	b := newTestBackend(t) // skip early with the probe's reason
	if on, why := b.AgentStatus(); !on {
		t.Fatalf("agent not in use: %s", why)
	}
	backendtest.Run(t, backendtest.Factory{
		New:   func(t testing.TB) backend.Backend { return newTestBackend(t) },
		Image: testenv.DockerImage(),
		// The agent reads its container's memory cgroup (v1 memory.oom_control, v2
		// memory.events), which Docker mounts at /sys/fs/cgroup inside.
		OOMKills: true,
	})
}

// TestConformanceNoAgent runs the suite with the agent off: every exec is an Engine API
// exec, the path for remote daemons and containers made without the agent.
func TestConformanceNoAgent(t *testing.T) {
	newTestBackendAgent(t, AgentOff)
	backendtest.Run(t, backendtest.Factory{
		New:   func(t testing.TB) backend.Backend { return newTestBackendAgent(t, AgentOff) },
		Image: testenv.DockerImage(),
	})
}

// TestConformanceInContainerKill runs the exec subtests through the Engine API with
// cancellation done by a second exec inside the container, the path used for remote
// daemons and sandboxed runtimes.
func TestConformanceInContainerKill(t *testing.T) {
	newTestBackendAgent(t, AgentOff)
	backendtest.Run(t, backendtest.Factory{
		New: func(t testing.TB) backend.Backend {
			b := newTestBackendAgent(t, AgentOff)
			b.hostPID = false
			return b
		},
		Image: testenv.DockerImage(),
		Skip: map[string]string{
			"Lifecycle": "covered by TestConformance", "Files": "covered by TestConformance",
			"Destroy": "covered by TestConformance", "Attach": "covered by TestConformance",
			"Abilities": "covered by TestConformance", "Descriptor": "covered by TestConformance",
		},
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func createReq(id string) *backend.CreateRequest {
	return &backend.CreateRequest{
		ID:      "dt-" + id + "-" + randID(),
		Image:   testenv.DockerImage(),
		Workdir: "/workspace",
		Env:     map[string]string{"A": "1"},
	}
}

func mustCreate(t *testing.T, b *Backend, req *backend.CreateRequest) *Instance {
	t.Helper()
	inst, err := b.Create(testCtx(t), req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	return inst.(*Instance)
}

func run(t *testing.T, inst backend.Instance, argv ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := inst.Exec(testCtx(t), &backend.ExecRequest{Argv: argv, Workdir: "/", Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	return out.String() + errb.String(), code
}

func TestLimitsLabelsAndNetwork(t *testing.T) {
	b := newTestBackend(t)
	req := createReq("limits")
	req.Limits = backend.Limits{MemoryBytes: 64 << 20, CPUs: 0.5, PIDs: 64}
	req.Labels = map[string]string{"team": "red"}
	inst := mustCreate(t, b, req)

	info, err := b.cli.ContainerInspect(testCtx(t), inst.id)
	if err != nil {
		t.Fatal(err)
	}
	hc := info.HostConfig
	if hc.Memory != 64<<20 || hc.NanoCPUs != 5e8 || hc.PidsLimit == nil || *hc.PidsLimit != 64 {
		t.Errorf("limits not applied: memory %d nanocpus %d pids %v", hc.Memory, hc.NanoCPUs, hc.PidsLimit)
	}
	if hc.NetworkMode != "none" {
		t.Errorf("network mode = %q, want none", hc.NetworkMode)
	}
	if !strings.Contains(strings.Join(hc.SecurityOpt, ","), "no-new-privileges") || hc.Privileged {
		t.Errorf("security: opts %v privileged %v", hc.SecurityOpt, hc.Privileged)
	}
	l := info.Config.Labels
	if l[LabelID] != req.ID || l[LabelManaged] != "true" || l[LabelPrefix+"team"] != "red" {
		t.Errorf("labels = %v", l)
	}
	if info.Name != "/moat-"+req.ID {
		t.Errorf("name = %q", info.Name)
	}
	// The kernel enforces the memory limit (cgroup v1 or v2 file, whichever exists).
	out, code := run(t, inst, "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
	if code != 0 || strings.TrimSpace(out) != "67108864" {
		t.Errorf("in-container memory limit = %q (exit %d), want 67108864", out, code)
	}
	out, _ = run(t, inst, "ls", "/sys/class/net")
	if strings.Join(strings.Fields(out), ",") != "lo" {
		t.Errorf("interfaces without network = %q, want only lo", out)
	}
	out, _ = run(t, inst, "env")
	if !strings.Contains(out, "A=1\n") {
		t.Errorf("container env lacks A=1: %q", out)
	}
	if out, code := run(t, inst, "test", "-d", "/workspace"); code != 0 {
		t.Errorf("workdir not created: %s", out)
	}
}

func TestNetworkHostGetsAnInterface(t *testing.T) {
	b := newTestBackend(t)
	req := createReq("net")
	req.Network = backend.NetworkHost
	inst := mustCreate(t, b, req)
	out, _ := run(t, inst, "ls", "/sys/class/net")
	if !strings.Contains(out, "eth0") {
		t.Errorf("interfaces with network = %q, want eth0", out)
	}
}

func TestStartFailureLeavesNothing(t *testing.T) {
	b := newTestBackend(t)
	req := createReq("startfail")
	req.Workdir = "/etc/passwd/sub" // a file on the way: the container cannot start
	_, err := b.Create(testCtx(t), req)
	if err == nil {
		t.Fatal("create with an impossible workdir succeeded")
	}
	t.Logf("create error: %v", err)
	listed, err := b.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range listed {
		if l.ID == req.ID {
			t.Fatalf("failed create left container %s behind", l.Handle.State)
		}
	}
}

func TestMissingImage(t *testing.T) {
	b := newTestBackend(t)
	req := createReq("noimage")
	req.Image = "moat-no-such-image:" + randID()
	_, err := b.Create(testCtx(t), req)
	if !errdefs.Is(err, errdefs.KindNotFound) || !strings.Contains(err.Error(), req.Image) {
		t.Fatalf("create with a missing image: %v, want NotFound naming the image", err)
	}
}

func TestDeadDaemon(t *testing.T) {
	b, err := New(Config{Host: "unix:///nonexistent/moat-test/docker.sock", Image: "x"})
	if err != nil {
		t.Fatal(err)
	}
	h := b.Probe(context.Background())
	if h.State != backend.Unavailable || !strings.HasPrefix(h.Reason, "docker: cannot reach unix:///nonexistent/moat-test/docker.sock") {
		t.Errorf("probe = %+v", h)
	}
	_, err = b.Create(context.Background(), createReq("dead"))
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Errorf("create on a dead daemon: %v, want Unavailable", err)
	}
	_, err = b.List(context.Background())
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Errorf("list on a dead daemon: %v, want Unavailable", err)
	}
}

func TestRemovedBehindOurBack(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("gone"))
	h := inst.Handle()
	if err := b.cli.ContainerRemove(testCtx(t), inst.id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err := inst.Exec(testCtx(t), &backend.ExecRequest{Argv: []string{"true"}, Stdout: &out, Stderr: &out})
	if !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("exec after removal: %v, want NotFound", err)
	}
	if st, err := inst.Status(testCtx(t)); err != nil || st != backend.StatusGone {
		t.Errorf("status after removal = %q, %v; want gone", st, err)
	}
	if err := inst.ReadFile(testCtx(t), "/etc/passwd", &out); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("read after removal: %v, want NotFound", err)
	}
	if err := inst.WriteFile(testCtx(t), "/tmp/x", strings.NewReader("x"), 0o644); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("write after removal: %v, want NotFound", err)
	}
	if _, err := b.Attach(testCtx(t), h); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("attach after removal: %v, want NotFound", err)
	}
	if err := inst.Destroy(testCtx(t)); err != nil {
		t.Errorf("destroy after removal: %v", err)
	}
}

func TestHandleState(t *testing.T) {
	b := newTestBackend(t)
	req := createReq("handle")
	inst := mustCreate(t, b, req)
	h := inst.Handle()
	var st map[string]string
	if err := json.Unmarshal(h.State, &st); err != nil {
		t.Fatal(err)
	}
	if h.Backend != "docker" || h.Version != 2 || st["container_id"] != inst.id || st["name"] != "moat-"+req.ID ||
		st["agent_dir"] != inst.agentDir || inst.agentDir == "" {
		t.Errorf("handle = %s %d %v", h.Backend, h.Version, st)
	}
	if _, err := b.Attach(testCtx(t), backend.Handle{Backend: "docker", Version: 3, State: h.State}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("attach with version 3: %v, want InvalidArgument", err)
	}
	// A Version 1 handle (written before the agent existed) still attaches; the
	// container's mounts, not the handle, say whether it has an agent.
	v1, _ := json.Marshal(map[string]string{"container_id": inst.id, "name": inst.name})
	got, err := b.Attach(testCtx(t), backend.Handle{Backend: "docker", Version: 1, State: v1})
	if err != nil || got.(*Instance).agentDir != inst.agentDir {
		t.Errorf("attach with version 1: %v, agent dir %q", err, got.(*Instance).agentDir)
	}
}

// TestExecFailureKinds checks the mapping of runtime start failures, and that ordinary
// exit codes 126/127 and output resembling the runtime's message stay ordinary.
func TestExecFailureKinds(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("kinds"))
	exec := func(argv ...string) (string, int, error) {
		var out bytes.Buffer
		code, err := inst.Exec(testCtx(t), &backend.ExecRequest{Argv: argv, Workdir: "/", Stdout: &out, Stderr: &out})
		return out.String(), code, err
	}
	for _, argv := range [][]string{{"moat-no-such-bin"}, {"/no/such/bin"}} {
		out, _, err := exec(argv...)
		if !errdefs.Is(err, errdefs.KindNotFound) || !strings.Contains(err.Error(), argv[0]) || out != "" {
			t.Errorf("exec %q: err %v, output %q; want NotFound naming it, no output", argv, err, out)
		}
	}
	if _, _, err := exec("/etc/passwd"); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Errorf("exec of a non-executable: %v, want PermissionDenied", err)
	}
	for _, c := range []int{126, 127} {
		if _, code, err := exec("sh", "-c", "exit "+strconv.Itoa(c)); err != nil || code != c {
			t.Errorf("sh -c 'exit %d' = %d, %v", c, code, err)
		}
	}
	out, code, err := exec("sh", "-c", `printf 'OCI runtime exec failed: not really'; exit 126`)
	if err != nil || code != 126 || out != "OCI runtime exec failed: not really" {
		t.Errorf("lookalike output: %q %d %v", out, code, err)
	}
	out, code, err = exec("printf", "OCI")
	if err != nil || code != 0 || out != "OCI" {
		t.Errorf("prefix-only output: %q %d %v", out, code, err)
	}
}

// TestCancelKillsTree checks cancellation kills the exec's whole tree, including a child
// that left the process group, on each kill path: the agent, the Engine API exec killed by
// host pid, and the Engine API exec killed from inside the container.
func TestCancelKillsTree(t *testing.T) {
	for _, name := range []string{"agent", "host", "in-container"} {
		t.Run(name, func(t *testing.T) {
			b := newTestBackend(t)
			// Without noAgentExec every exec goes through the agent, whatever hostPID says.
			b.noAgentExec = name != "agent"
			b.hostPID = name == "host"
			inst := mustCreate(t, b, createReq("cancel"))
			if got := inst.canKillFromHost(testCtx(t)); got != b.hostPID {
				t.Fatalf("canKillFromHost = %v, want %v", got, b.hostPID)
			}
			ctx, cancel := context.WithCancel(testCtx(t))
			started := make(chan struct{})
			w := &notifyWriter{ch: started}
			errc := make(chan error, 1)
			go func() {
				_, err := inst.Exec(ctx, &backend.ExecRequest{
					Argv:    []string{"sh", "-c", "sleep 4241 & setsid sleep 4242 & echo go; wait"},
					Workdir: "/", Stdout: w, Stderr: w})
				errc <- err
			}()
			select {
			case <-started:
			case <-time.After(30 * time.Second):
				t.Fatal("command did not start")
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("exec after cancel: %v, want context.Canceled", err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				out, _ := run(t, inst, "ps")
				if !strings.Contains(out, "sleep 424") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("processes survived cancellation:\n%s", out)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

type notifyWriter struct {
	ch   chan struct{}
	done bool
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.done = true
		close(w.ch)
	}
	return len(p), nil
}

func TestSnapshotRoundTrip(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("snap"))
	if err := inst.WriteFile(testCtx(t), "/data/hello.txt", strings.NewReader("snapshotted"), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := inst.Snapshot(testCtx(t), "v1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = b.cli.ImageRemove(context.Background(), snap.Image, image.RemoveOptions{Force: true}) })
	if !strings.HasPrefix(snap.Image, "moat-snapshot:") || snap.ID == "" {
		t.Errorf("snapshot = %+v", snap)
	}
	req := createReq("fromsnap")
	req.Image = snap.Image
	inst2 := mustCreate(t, b, req)
	var out bytes.Buffer
	if err := inst2.ReadFile(testCtx(t), "/data/hello.txt", &out); err != nil || out.String() != "snapshotted" {
		t.Errorf("file in sandbox from snapshot: %q, %v", out.String(), err)
	}
	if _, err := inst.Snapshot(testCtx(t), "bad name/"); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("snapshot with an invalid name: %v", err)
	}
}

func TestFilesDetails(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("files"))
	ctx := testCtx(t)
	// Writing below an existing directory must not change that directory's mode.
	if err := inst.WriteFile(ctx, "/tmp/new/deep/f", strings.NewReader("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	out, _ := run(t, inst, "stat", "-c", "%a %n", "/tmp", "/tmp/new", "/tmp/new/deep", "/tmp/new/deep/f")
	if want := "1777 /tmp\n755 /tmp/new\n755 /tmp/new/deep\n640 /tmp/new/deep/f\n"; out != want {
		t.Errorf("modes:\n%s\nwant:\n%s", out, want)
	}
	// A directory is never replaced by a file.
	if err := inst.WriteFile(ctx, "/tmp/new", strings.NewReader("x"), 0o644); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("write over a directory: %v, want InvalidArgument", err)
	}
	// Reading through a symlink gets the target's content.
	run(t, inst, "ln", "-s", "/tmp/new/deep/f", "/tmp/link")
	var buf bytes.Buffer
	if err := inst.ReadFile(ctx, "/tmp/link", &buf); err != nil || buf.String() != "x" {
		t.Errorf("read through symlink: %q, %v", buf.String(), err)
	}
	// Listing: names with newlines and dot files, types and sizes.
	run(t, inst, "sh", "-c", `mkdir -p /l/sub && printf abc > "/l/a
b" && : > /l/.hidden && ln -s sub /l/ln`)
	infos, err := inst.ListDir(ctx, "/l")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, fi := range infos {
		size := strconv.FormatInt(fi.Size, 10)
		if fi.IsDir {
			size = "dir"
		}
		got = append(got, fi.Name+"|"+fi.Mode.Type().String()+"|"+size)
	}
	want := []string{".hidden|----------|0", "a\nb|----------|3", "ln|L---------|3", "sub|d---------|dir"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("list = %q, want %q", got, want)
	}
	if len(infos) != 4 || infos[0].ModTime.IsZero() || infos[1].Mode.Perm() != 0o644 {
		t.Errorf("list details: %+v", infos)
	}
	if _, err := inst.ListDir(ctx, "/l/a\nb"); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("list of a file: %v", err)
	}
	if _, err := inst.ListDir(ctx, "/nope"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("list of a missing dir: %v", err)
	}
}

func TestRegistryAndConfig(t *testing.T) {
	f, ok := backend.Lookup("docker")
	if !ok {
		t.Fatal("docker not registered")
	}
	b, err := f(backend.Config{Decode: func(v any) error {
		c := v.(*Config)
		c.Image = "debian:test"
		c.Pull = "missing"
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	d := b.Descriptor()
	if d.Name != "docker" || d.Isolation != backend.IsolationContainer || d.DefaultImage != "debian:test" || d.PackageManager != "apt-get" || d.Remote {
		t.Errorf("descriptor = %+v", d)
	}
	env := func(k string) string {
		if k == "DOCKER_HOST" {
			return "unix:///from/env.sock"
		}
		return ""
	}
	b, err = f(backend.Config{Getenv: env})
	if err != nil || b.(*Backend).host != "unix:///from/env.sock" {
		t.Errorf("DOCKER_HOST alias: %v", err)
	}
	b, err = f(backend.Config{Getenv: env, Decode: func(v any) error { v.(*Config).Host = "unix:///explicit.sock"; return nil }})
	if err != nil || b.(*Backend).host != "unix:///explicit.sock" {
		t.Errorf("explicit host over DOCKER_HOST: %v", err)
	}
	if _, err := New(Config{Pull: "sometimes"}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("bad pull policy: %v", err)
	}
	if _, err := New(Config{Network: "host"}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("network host: %v", err)
	}
}

func TestCreateOptionsAndDiskLimit(t *testing.T) {
	b := newTestBackend(t)
	req := createReq("opts")
	req.Options = json.RawMessage(`{"bogus": 1}`)
	if _, err := b.Create(testCtx(t), req); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("unknown option: %v, want InvalidArgument", err)
	}
	req = createReq("disk")
	req.Limits.DiskBytes = 1 << 30
	inst, err := b.Create(testCtx(t), req)
	switch {
	case err == nil: // a storage driver that supports it (overlay2 on xfs with pquota)
		defer inst.Destroy(context.Background())
		info, err := b.cli.ContainerInspect(testCtx(t), inst.(*Instance).id)
		if err != nil || info.HostConfig.StorageOpt["size"] != "1073741824" {
			t.Errorf("disk limit not applied: %v %v", info.HostConfig.StorageOpt, err)
		}
	case !errdefs.Is(err, errdefs.KindUnsupported):
		t.Errorf("disk limit on a driver without support: %v, want Unsupported", err)
	}
}

func TestExecWhenStoppedOrPaused(t *testing.T) {
	b := newTestBackend(t)
	inst := mustCreate(t, b, createReq("stopped"))
	ctx := testCtx(t)
	var out bytes.Buffer
	req := &backend.ExecRequest{Argv: []string{"true"}, Workdir: "/", Stdout: &out, Stderr: &out}
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.Pause(ctx); err != nil {
		t.Errorf("pause twice: %v", err)
	}
	if _, err := inst.Exec(ctx, req); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("exec while paused: %v, want FailedPrecondition", err)
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.Resume(ctx); err != nil {
		t.Errorf("resume twice: %v", err)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Exec(ctx, req); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Errorf("exec while stopped: %v, want FailedPrecondition", err)
	}
	if st, err := inst.Status(ctx); err != nil || st != backend.StatusStopped {
		t.Errorf("status after stop = %q, %v", st, err)
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := inst.Exec(ctx, req); err != nil || code != 0 {
		t.Errorf("exec after start: %d, %v", code, err)
	}
}

// TestFailureSniffer feeds the sniffer in every split so held-back bytes are never lost or
// reordered.
func TestFailureSniffer(t *testing.T) {
	cases := []struct {
		in      string
		code    int
		wantOut string
		wantErr error
	}{
		{"hello", 0, "hello", nil},
		{"OCI", 0, "OCI", nil},
		{"OCI runtime exec failed: exec failed: unable to start container process: exec: \"x\": executable file not found in $PATH: unknown\r\n", 126, "", errdefs.ErrNotFound},
		{"OCI runtime exec failed: exec failed: unable to start container process: exec: \"x\": executable file not found in $PATH: unknown\r\n", 0, "OCI runtime exec failed: exec failed: unable to start container process: exec: \"x\": executable file not found in $PATH: unknown\r\n", nil},
		{"OCI runtime exec failed: exec failed: unable to start container process: exec: \"/etc\": permission denied: unknown", 126, "", errdefs.ErrPermissionDenied},
		{"OCI runtime exec failed" + strings.Repeat("x", 5000), 126, "OCI runtime exec failed" + strings.Repeat("x", 5000), nil},
	}
	for _, c := range cases {
		for split := 1; split <= len(c.in); split += 1 + len(c.in)/40 {
			var out bytes.Buffer
			s := &failureSniffer{w: &out}
			for rest := c.in; rest != ""; {
				n := min(split, len(rest))
				if k, err := s.Write([]byte(rest[:n])); k != n || err != nil {
					t.Fatalf("write = %d, %v", k, err)
				}
				rest = rest[n:]
			}
			err := s.failure(c.code)
			if out.String() != c.wantOut || (c.wantErr == nil) != (err == nil) || (c.wantErr != nil && !errors.Is(err, c.wantErr)) {
				t.Fatalf("%.30q split %d code %d: out %.40q err %v", c.in, split, c.code, out.String(), err)
			}
		}
	}
}

func TestParseListingAndModes(t *testing.T) {
	infos, err := parseListing([]byte("b\x0012 81a4 1700000000\nd\nx\x000 41ed 1\ns\x004 a1ff 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 3 || infos[0].Name != "b" || infos[0].Mode != 0o644 || infos[0].Size != 12 ||
		infos[1].Name != "d\nx" || !infos[1].IsDir || infos[1].Mode != fs.ModeDir|0o755 ||
		infos[2].Mode != fs.ModeSymlink|0o777 || infos[0].ModTime.Unix() != 1700000000 {
		t.Errorf("parsed %+v", infos)
	}
	if _, err := parseListing([]byte("b\x0012 81a4")); err == nil {
		t.Error("truncated listing parsed")
	}
	if m := fileMode(0o105755); m != fs.ModeSticky|fs.ModeSetuid|0o755 {
		t.Errorf("fileMode(0o105755) = %v", m)
	}
	if u := unixPerm(fs.ModeSetgid | 0o750); u != 0o2750 {
		t.Errorf("unixPerm = %o", u)
	}
}

// TestMain fails the tests when a goroutine outlives them.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }
