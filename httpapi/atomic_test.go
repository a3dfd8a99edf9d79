package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backends/bwrap"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/store/memstore"
)

// TestUploadIsAtomic: through the HTTP API on bwrap (a native write to the host side of the
// root), an upload over the size cap (413) and one whose client went away mid-stream leave
// the old file exactly as it was.
func TestUploadIsAtomic(t *testing.T) {
	ctx := context.Background()
	m, err := moat.Open(ctx, moat.Config{Storage: memstore.New(), Home: t.TempDir(),
		Sandbox: moat.SandboxConfig{Backend: "bwrap"}}, moat.WithoutRegistered(), moat.WithFactory("bwrap", bwrap.New))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if !bwrapUsable(ctx, m) {
		t.Skip("bwrap unavailable here")
	}
	c := serve(t, m, httpapi.Options{MaxFileBytes: 1 << 20})
	sb, err := c.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	const p = "/workspace/keep.txt"
	orig := "the original\n"
	if err := sb.WriteFile(ctx, p, strings.NewReader(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	intact := func(how string) {
		t.Helper()
		var buf bytes.Buffer
		if err := sb.ReadFile(ctx, p, &buf); err != nil || buf.String() != orig {
			t.Errorf("after %s: %s holds %d bytes (%v); want the original", how, p, buf.Len(), err)
		}
		res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"ls", "-a", "/workspace"}})
		if err != nil || strings.Contains(string(res.Stdout), ".moat-write") {
			t.Errorf("after %s: /workspace holds %q (%v); want no temporary file", how, res.Stdout, err)
		}
	}
	err = sb.WriteFile(ctx, p, bytes.NewReader(bytes.Repeat([]byte("x"), 3<<20)), 0o644)
	if !errdefs.Is(err, errdefs.KindResourceExhausted) {
		t.Errorf("upload over the cap: %v; want resource_exhausted (413)", err)
	}
	intact("a 413")

	cctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(bytes.Repeat([]byte("y"), 256<<10))
		time.Sleep(200 * time.Millisecond) // let the server write it
		cancel()
		pw.CloseWithError(context.Canceled)
	}()
	if err := sb.WriteFile(cctx, p, pr, 0o644); err == nil {
		t.Errorf("canceled upload returned no error")
	}
	// The server notices the client gone a moment after the client returned.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var buf bytes.Buffer
		if err := sb.ReadFile(ctx, p, &buf); err == nil && buf.String() == orig {
			break
		}
	}
	intact("a canceled upload")
}
