package httpapi_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/syncbuf"
	"github.com/moatsh/moat/store/memstore"
)

// liarBackend is the fake backend whose directory listings also name entries that are not
// single names, as a compromised in-sandbox agent could answer.
type liarBackend struct{ *fake.Backend }

func (b liarBackend) Create(ctx context.Context, req *backend.CreateRequest) (backend.Instance, error) {
	inst, err := b.Backend.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return liarInstance{inst.(*fake.Instance)}, nil
}

func (b liarBackend) Attach(ctx context.Context, h backend.Handle) (backend.Instance, error) {
	inst, err := b.Backend.Attach(ctx, h)
	if err != nil {
		return nil, err
	}
	return liarInstance{inst.(*fake.Instance)}, nil
}

type liarInstance struct{ *fake.Instance }

func (i liarInstance) ListDir(ctx context.Context, p string) ([]backend.FileInfo, error) {
	infos, err := i.Instance.ListDir(ctx, p)
	if err == nil && p == "/workspace/proj" {
		infos = append(infos, backend.FileInfo{Name: "../../outside.txt", Size: 6, Mode: 0o644})
	}
	return infos, err
}

// TestArchiveRefusesListedNamesThatEscape: a listing entry such as "../../outside.txt"
// must not become a tar entry that a client would unpack outside its target directory.
func TestArchiveRefusesListedNamesThatEscape(t *testing.T) {
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{Backend: "fake"}}, moat.WithoutRegistered(), moat.WithBackend("fake", liarBackend{fake.New()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	c := serve(t, m, httpapi.Options{})
	ctx := context.Background()
	sb, err := c.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	for p, body := range map[string]string{"/outside.txt": "secret", "/workspace/proj/a.txt": "alpha"} {
		if err := sb.WriteFile(ctx, p, strings.NewReader(body), 0); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	derr := sb.GetArchive(ctx, "/workspace/proj", &out, moat.ArchiveLimits{})
	tr := tar.NewReader(&out)
	for {
		hdr, err := tr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && derr == nil {
				t.Errorf("complete download with a broken tar: %v", err)
			}
			break
		}
		if strings.Contains(hdr.Name, "..") || strings.HasPrefix(hdr.Name, "/") {
			t.Errorf("archive entry %q escapes the directory", hdr.Name)
		}
	}
	if derr == nil {
		t.Errorf("download with a listing entry %q succeeded", "../../outside.txt")
	}
}

// brokenStore fails reads with an error whose text must stay inside the server.
type brokenStore struct{ *memstore.Store }

func (brokenStore) GetSetting(context.Context, string) ([]byte, error) {
	return nil, errors.New("store: dial postgres://moat:hunter2@db.internal:5432/moat: connection refused")
}

// TestReadyzKeepsStoreErrorsInside: /readyz needs no token, so a store failure is 503 with
// a plain status; the detail (hosts, paths, credentials in a driver's message) goes to
// the log only.
func TestReadyzKeepsStoreErrorsInside(t *testing.T) {
	m, err := moat.Open(context.Background(), moat.Config{Storage: brokenStore{memstore.New()}, Sandbox: moat.SandboxConfig{Backend: "fake"}}, moat.WithoutRegistered(), moat.WithBackend("fake", fake.New()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	logs := &syncbuf.Buffer{}
	h := httpapi.New(m, httpapi.Options{Tokens: []string{token}, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); _ = h.Shutdown(context.Background()) })
	resp, err := srv.Client().Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("readyz with a failing store: %d", resp.StatusCode)
	}
	for _, leak := range []string{"hunter2", "db.internal", "postgres://"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("readyz answer %s shows %q", body, leak)
		}
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the store error is not logged: %s", logs.String())
	}
}
