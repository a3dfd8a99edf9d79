package moat_test

import (
	"archive/tar"
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
	"github.com/moatsh/moat/store/memstore"
)

// fakeManager is a manager over a local fake ("local") and a hosted one ("remote").
func localRemoteManager(t *testing.T, sc moat.SandboxConfig) *moat.Manager {
	t.Helper()
	remote := fake.New(fake.WithDescriptor(backend.Descriptor{Name: "remote", Isolation: backend.IsolationRemote, Remote: true}))
	sc.Backend = "local"
	m := newManager(t, memstore.New(), moat.Config{Sandbox: sc},
		map[string]backend.Backend{"local": fake.New(fake.WithName("local")), "remote": remote})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func limitsOf(t *testing.T, m *moat.Manager, spec moat.Spec) (moat.Limits, error) {
	t.Helper()
	ctx := context.Background()
	sb, err := m.Create(ctx, spec)
	if err != nil {
		return moat.Limits{}, err
	}
	defer sb.Destroy(ctx)
	info, err := sb.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Spec.Limits, nil
}

func TestDefaultLimits(t *testing.T) {
	defer moat.SetHostCapacity(8<<30, 4)()
	m := localRemoteManager(t, moat.SandboxConfig{})
	got, err := limitsOf(t, m, moat.Spec{})
	if err != nil || got != moat.DefaultLimits {
		t.Errorf("local sandbox without limits: %+v, %v; want the defaults %+v", got, err, moat.DefaultLimits)
	}
	if got, err := limitsOf(t, m, moat.Spec{Backend: "remote"}); err != nil || got != (moat.Limits{}) {
		t.Errorf("hosted sandbox without limits: %+v, %v; want none (the provider's plan)", got, err)
	}
	want := moat.Limits{MemoryBytes: 256 << 20, CPUs: 0.5, PIDs: 64, DiskBytes: 1 << 30}
	if got, err := limitsOf(t, m, moat.Spec{Limits: want}); err != nil || got != want {
		t.Errorf("explicit limits: %+v, %v; want %+v", got, err, want)
	}
	if got, err := limitsOf(t, m, moat.Spec{Limits: moat.Limits{PIDs: 10}}); err != nil ||
		got != (moat.Limits{MemoryBytes: 1 << 30, CPUs: 2, PIDs: 10}) {
		t.Errorf("one explicit limit: %+v, %v", got, err)
	}

	// Configured limits apply everywhere; Unlimited turns a default off.
	m = localRemoteManager(t, moat.SandboxConfig{Limits: moat.Limits{MemoryBytes: 2 << 30, CPUs: moat.Unlimited, PIDs: moat.Unlimited}})
	if got, err := limitsOf(t, m, moat.Spec{}); err != nil || got != (moat.Limits{MemoryBytes: 2 << 30}) {
		t.Errorf("configured memory, unlimited cpus and pids: %+v, %v", got, err)
	}
	if got, err := limitsOf(t, m, moat.Spec{Backend: "remote"}); err != nil || got != (moat.Limits{MemoryBytes: 2 << 30}) {
		t.Errorf("configured memory on a hosted provider: %+v, %v", got, err)
	}

	// A small host caps the defaults.
	defer moat.SetHostCapacity(512<<20, 1)()
	m = localRemoteManager(t, moat.SandboxConfig{})
	if got, err := limitsOf(t, m, moat.Spec{}); err != nil || got != (moat.Limits{MemoryBytes: 512 << 20, CPUs: 1, PIDs: 512}) {
		t.Errorf("defaults on a small host: %+v, %v", got, err)
	}
}

func TestLimitsBeyondTheHost(t *testing.T) {
	defer moat.SetHostCapacity(8<<30, 4)()
	m := localRemoteManager(t, moat.SandboxConfig{})
	for name, l := range map[string]moat.Limits{
		"memory above host RAM": {MemoryBytes: 9 << 30},
		"9.2 EB of memory":      {MemoryBytes: 1<<63 - 1},
		"cpus above host CPUs":  {CPUs: 5},
		"pids 2^63-1":           {PIDs: 1<<63 - 1},
		"pids above pid_max":    {PIDs: moattype.MaxPIDs + 1},
		"disk of 9.2 EB":        {DiskBytes: 1<<63 - 1},
		"a thousandth of a cpu": {CPUs: 0.001},
		"negative cpus":         {CPUs: -1},
		"memory below 4 MiB":    {MemoryBytes: 1 << 20},
	} {
		if _, err := limitsOf(t, m, moat.Spec{Limits: l}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
	}
	// The host's size does not bound a hosted provider; the sanity maxima do.
	if got, err := limitsOf(t, m, moat.Spec{Backend: "remote", Limits: moat.Limits{MemoryBytes: 64 << 30, CPUs: 16}}); err != nil || got.CPUs != 16 {
		t.Errorf("hosted sandbox bigger than this host: %+v, %v", got, err)
	}
	if _, err := limitsOf(t, m, moat.Spec{Backend: "remote", Limits: moat.Limits{MemoryBytes: 1<<63 - 1}}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("9.2 EB on a hosted provider: %v, want invalid_argument", err)
	}
	// A configured default beyond the host is refused at create, naming the limit.
	m = localRemoteManager(t, moat.SandboxConfig{Limits: moat.Limits{CPUs: 64}})
	if _, err := limitsOf(t, m, moat.Spec{}); !errdefs.Is(err, errdefs.KindInvalidArgument) || !strings.Contains(err.Error(), "cpus") {
		t.Errorf("configured cpus beyond the host: %v, want invalid_argument", err)
	}
}

func TestRequestSizeLimits(t *testing.T) {
	ctx := context.Background()
	m := localRemoteManager(t, moat.SandboxConfig{})
	big := strings.Repeat("x", moattype.MaxArgStringBytes+1)
	mb8 := strings.Repeat("y", 8<<20)
	wantInvalid := func(what string, err error) {
		t.Helper()
		if !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", what, err)
		}
	}
	many := map[string]string{}
	for i := range 8 {
		many[strings.Repeat("K", i+1)] = strings.Repeat("v", 100<<10)
	}
	_, err := m.Create(ctx, moat.Spec{Env: map[string]string{"BIG": mb8}})
	wantInvalid("create with 8 MB of env", err)
	_, err = m.Create(ctx, moat.Spec{Env: many})
	wantInvalid("create with 800 KB of env in 100 KB values", err)
	_, err = m.Create(ctx, moat.Spec{SessionID: "a\nb"})
	wantInvalid("session id with a newline", err)
	_, err = m.Create(ctx, moat.Spec{SessionID: strings.Repeat("s", moattype.MaxSessionIDBytes+1)})
	wantInvalid("long session id", err)
	_, err = m.Create(ctx, moat.Spec{Labels: map[string]string{"k": strings.Repeat("v", moattype.MaxLabelValueBytes+1)}})
	wantInvalid("long label value", err)
	_, err = m.Create(ctx, moat.Spec{Workdir: "/" + strings.Repeat("a", 5000)})
	wantInvalid("5000-byte workdir", err)

	sb, err := m.Create(ctx, moat.Spec{Env: map[string]string{"SPEC": strings.Repeat("s", 100<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(ctx)
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", mb8}})
	wantInvalid("8 MB of argv", err)
	_, err = sb.Exec(ctx, moat.ExecRequest{Shell: big})
	wantInvalid("a shell line over MAX_ARG_STRLEN", err)
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}, Env: map[string]string{"BIG": mb8}})
	wantInvalid("8 MB of exec env", err)
	// 100 KB from the spec's env plus 4 x 110 KB of argv: each fits, together they do not.
	arg := strings.Repeat("a", 110<<10)
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", arg, arg, arg, arg}})
	wantInvalid("argv plus the spec's env over the total", err)
	if _, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", arg, arg}}); err != nil {
		t.Errorf("argv within the limits: %v", err)
	}
	_, err = sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"true"}, Workdir: strings.Repeat("w/", 300)})
	wantInvalid("exec workdir 300 deep", err)

	for name, p := range map[string]string{
		"5000-byte path":     "/workspace/" + strings.Repeat("a/", 2500),
		"100000-byte path":   "/" + strings.Repeat("b", 100000),
		"256-byte element":   "/workspace/" + strings.Repeat("c", 256),
		"300-deep path":      strings.Repeat("/d", 300),
		"relative, too long": strings.Repeat("e", 4090),
		"relative, too deep": strings.Repeat("f/", 260),
	} {
		wantInvalid(name+": write", sb.WriteFile(ctx, p, strings.NewReader("x"), 0))
		wantInvalid(name+": read", sb.ReadFile(ctx, p, &bytes.Buffer{}))
		_, err := sb.ListDir(ctx, p)
		wantInvalid(name+": list", err)
		wantInvalid(name+": mkdir", sb.Mkdir(ctx, p, 0))
		wantInvalid(name+": remove", sb.Remove(ctx, p, true))
	}
	// At the limits, paths work.
	ok := "/" + strings.Repeat("g", moattype.MaxPathElemBytes) + strings.Repeat("/h", moattype.MaxPathDepth-1)
	if err := sb.WriteFile(ctx, ok, strings.NewReader("x"), 0); err != nil {
		t.Errorf("a path at the limits: %v", err)
	}

	// A tar entry 2000 deep, and one fine alone but too deep under its target directory.
	deep := func(n int) *bytes.Buffer {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		_ = tw.WriteHeader(&tar.Header{Name: strings.Repeat("a/", n) + "f", Mode: 0o644, Typeflag: tar.TypeReg})
		_ = tw.Close()
		return &b
	}
	_, err = sb.PutArchive(ctx, "/workspace/x", deep(2000), moat.ArchiveLimits{})
	wantInvalid("tar entry 2000 deep", err)
	_, err = sb.PutArchive(ctx, "/workspace/x", deep(moattype.MaxPathDepth-2), moat.ArchiveLimits{})
	wantInvalid("tar entry too deep under its directory", err)
	if _, err := sb.PutArchive(ctx, "/workspace/x", deep(100), moat.ArchiveLimits{}); err != nil {
		t.Errorf("tar entry 100 deep: %v", err)
	}
}
