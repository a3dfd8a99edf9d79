package moat_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/tarfs/tarfstest"
	"github.com/moatsh/moat/store/memstore"
)

// archBackend gives the fake's sandboxes a native Archiver that sends whatever the test
// wants and records what it is given: a hostile or buggy backend.
type archBackend struct {
	*fake.Backend
	mu   sync.Mutex
	got  []string // entry names PutArchive received
	send []tar.Header
}

type archInstance struct {
	backend.Instance
	b *archBackend
}

func (b *archBackend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := b.Backend.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return archInstance{inst, b}, nil
}

func (b *archBackend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	inst, err := b.Backend.Attach(ctx, h)
	if err != nil {
		return nil, err
	}
	return archInstance{inst, b}, nil
}

func (i archInstance) PutArchive(_ context.Context, _ string, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		i.b.mu.Lock()
		i.b.got = append(i.b.got, h.Name)
		i.b.mu.Unlock()
	}
}

func (i archInstance) GetArchive(_ context.Context, _ string, w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, h := range i.b.send {
		body := h.Linkname
		if h.Typeflag == tar.TypeReg {
			h.Size, h.Linkname = int64(len(body)), ""
		}
		if err := tw.WriteHeader(&h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = io.WriteString(tw, body)
		}
	}
	return tw.Close()
}

var _ backend.Archiver = archInstance{}

func archiveSandbox(t *testing.T) (*moat.Sandbox, *archBackend) {
	ab := &archBackend{Backend: fake.New()}
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{Backend: "fake"}},
		moat.WithoutRegistered(), moat.WithBackend("fake", ab))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	sb := mustCreate(t, context.Background(), m, moat.Spec{})
	return sb, ab
}

// A native Archiver gets a re-encoded stream of only what tarfs accepted: an escaping entry
// after a good one fails the upload and never reaches the backend.
func TestPutArchiveChecksTheStreamBeforeTheBackend(t *testing.T) {
	sb, ab := archiveSandbox(t)
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, h := range []tar.Header{
		{Typeflag: tar.TypeReg, Name: "./ok.txt", Size: 2, Mode: 0o644},
		{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc"},
	} {
		_ = tw.WriteHeader(&h)
		if h.Size > 0 {
			_, _ = tw.Write([]byte("ok"))
		}
	}
	_ = tw.Close()
	_, err := sb.PutArchive(context.Background(), "/workspace/x", &in, moat.ArchiveLimits{})
	if !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Errorf("put archive with a symlink: %v, want invalid_argument", err)
	}
	ab.mu.Lock()
	defer ab.mu.Unlock()
	if strings.Join(ab.got, ",") != "ok.txt" {
		t.Errorf("the backend received %q, want only ok.txt", ab.got)
	}
}

// What a native Archiver sends is checked too: links and devices are left out, and a name
// that escapes fails the download.
func TestGetArchiveChecksWhatTheBackendSends(t *testing.T) {
	sb, ab := archiveSandbox(t)
	ab.send = []tar.Header{
		{Typeflag: tar.TypeDir, Name: "./"},
		{Typeflag: tar.TypeReg, Name: "./a.txt", Linkname: "alpha"},
		{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc/passwd"},
		{Typeflag: tar.TypeChar, Name: "dev"},
		{Typeflag: tar.TypeDir, Name: "d/"},
	}
	var out bytes.Buffer
	if err := sb.GetArchive(context.Background(), "/workspace", &out, moat.ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	got, _ := tarfstest.Contents(&out)
	if names := tarfstest.Names(got); names != "a.txt,d/" {
		t.Errorf("archive holds %q, want a.txt and d/", names)
	}
	ab.send = append(ab.send, tar.Header{Typeflag: tar.TypeReg, Name: "../../etc/cron.d/x", Linkname: "pwned"})
	out.Reset()
	err := sb.GetArchive(context.Background(), "/workspace", &out, moat.ArchiveLimits{})
	if err == nil {
		t.Errorf("an escaping entry from the backend was passed on")
	}
	if strings.Contains(out.String(), "pwned") {
		t.Errorf("the escaping entry's content reached the caller")
	}
}

// endlessTar is a tar stream of numbered one-byte files that runs fn after `after` of them
// and stops by itself after max (so a test never hangs).
type endlessTar struct {
	buf        bytes.Buffer
	n, after   int
	max        int
	fn         func()
	tw         *tar.Writer
	emittedEnd bool
}

func (e *endlessTar) Read(p []byte) (int, error) {
	if e.tw == nil {
		e.tw = tar.NewWriter(&e.buf)
	}
	for e.buf.Len() == 0 {
		if e.n >= e.max {
			if !e.emittedEnd {
				e.emittedEnd = true
				_ = e.tw.Close()
				continue
			}
			return 0, io.EOF
		}
		if e.n == e.after {
			e.fn()
		}
		_ = e.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f-" + strconv.Itoa(e.n), Size: 1, Mode: 0o644})
		_, _ = e.tw.Write([]byte("x"))
		_ = e.tw.Flush()
		e.n++
	}
	return e.buf.Read(p)
}

// An archive upload whose caller went away stops unpacking, even on a backend whose
// Archiver does not watch ctx, and on the file-at-a-time fallback.
func TestPutArchiveStopsWhenTheCallerLeaves(t *testing.T) {
	const after, max = 5, 5000
	t.Run("Archiver", func(t *testing.T) {
		sb, ab := archiveSandbox(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := sb.PutArchive(ctx, "/workspace/x", &endlessTar{after: after, max: max, fn: cancel}, moat.ArchiveLimits{})
		if err == nil {
			t.Errorf("put archive after the caller left: no error")
		}
		ab.mu.Lock()
		defer ab.mu.Unlock()
		if len(ab.got) > after+1 {
			t.Errorf("the backend received %d entries after the caller left at %d", len(ab.got), after)
		}
	})
	t.Run("Fallback", func(t *testing.T) {
		m, _, _ := fakeManager(t)
		sb := mustCreate(t, context.Background(), m, moat.Spec{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res, err := sb.PutArchive(ctx, "/workspace/x", &endlessTar{after: after, max: max, fn: cancel}, moat.ArchiveLimits{})
		if err == nil || res.Files > after+1 {
			t.Errorf("put archive after the caller left: %+v, %v; want an error within %d files", res, err, after+1)
		}
	})
}

// A snapshot needs a name: an empty one is invalid_argument, before the backend is asked.
func TestSnapshotNameRequired(t *testing.T) {
	m, _, fb := fakeManager(t)
	sb := mustCreate(t, context.Background(), m, moat.Spec{})
	for _, name := range []string{"", "../x", "a b"} {
		if _, err := sb.Snapshot(context.Background(), name); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("Snapshot(%q): %v; want invalid_argument", name, err)
		}
	}
	if fb.Calls(fake.OpSnapshot) != 0 {
		t.Errorf("the backend was asked to snapshot with a bad name")
	}
	if _, err := sb.Snapshot(context.Background(), "good"); err != nil {
		t.Errorf("Snapshot(good): %v", err)
	}
}
