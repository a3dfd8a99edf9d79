package agent_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/moatsh/moat/agent"
	"github.com/moatsh/moat/errdefs"
)

func TestFiles(t *testing.T) {
	// The directory first: cleanups run last-in first-out, so the agent (and the cleanup
	// of a failed write it may still be doing) stops before the directory is removed.
	dir := t.TempDir()
	c := serve(t)
	ctx := tctx(t)
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	syscall.Umask(0o077) // the agent must not let the umask change modes
	defer syscall.Umask(0o022)

	// Round trip of binary content larger than a frame, into missing parents.
	body := bytes.Repeat([]byte("\x00\xffmoat\n"), 300000)
	p := filepath.Join(dir, "a", "b", "f.bin")
	if err := c.WriteFile(ctx, p, bytes.NewReader(body), 0o4755); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := c.ReadFile(ctx, p, &got); err != nil || !bytes.Equal(got.Bytes(), body) {
		t.Fatalf("read back: %d bytes, %v", got.Len(), err)
	}
	for name, want := range map[string]os.FileMode{
		dir: os.ModeDir | 0o750, filepath.Join(dir, "a"): os.ModeDir | 0o755,
		filepath.Join(dir, "a", "b"): os.ModeDir | 0o755, p: os.ModeSetuid | 0o755,
	} {
		if fi, err := os.Stat(name); err != nil || fi.Mode() != want {
			t.Errorf("mode of %s = %v, %v; want %v", name, fi.Mode(), err, want)
		}
	}
	// Empty file; replacing keeps no leftovers.
	if err := c.WriteFile(ctx, p, strings.NewReader(""), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 0 || fi.Mode() != 0o600 {
		t.Errorf("replaced file: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "a", "b")); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	// A symlink at the path is replaced, not written through.
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	var via bytes.Buffer
	if err := c.ReadFile(ctx, link, &via); err != nil || via.String() != "keep" {
		t.Errorf("read through symlink: %q %v", via.String(), err)
	}
	if err := c.WriteFile(ctx, link, strings.NewReader("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("write went through the symlink: target now %q", b)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink != 0 {
		t.Errorf("symlink not replaced")
	}

	// Errors.
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o644)
	for _, tc := range []struct {
		name string
		err  error
		kind error
	}{
		{"missing", c.ReadFile(ctx, filepath.Join(dir, "nope"), io.Discard), errdefs.ErrNotFound},
		{"missing parent", c.ReadFile(ctx, filepath.Join(p, "x"), io.Discard), errdefs.ErrNotFound},
		{"read dir", c.ReadFile(ctx, dir, io.Discard), errdefs.ErrInvalidArgument},
		{"read fifo", c.ReadFile(ctx, fifo, io.Discard), errdefs.ErrInvalidArgument},
		{"relative", c.ReadFile(ctx, "rel/x", io.Discard), errdefs.ErrInvalidArgument},
		{"write over dir", c.WriteFile(ctx, filepath.Join(dir, "a"), strings.NewReader(strings.Repeat("x", 1<<20)), 0o644), errdefs.ErrInvalidArgument},
		{"write under file", c.WriteFile(ctx, filepath.Join(p, "x"), strings.NewReader("x"), 0o644), errdefs.ErrInvalidArgument},
		{"write unclean", c.WriteFile(ctx, dir+"/a/../x", strings.NewReader("x"), 0o644), errdefs.ErrInvalidArgument},
	} {
		if !errors.Is(tc.err, tc.kind) || errors.Is(tc.err, agent.ErrUnreachable) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.kind)
		}
	}
	// A failing input leaves nothing behind.
	broken := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(errors.New("boom")))
	q := filepath.Join(dir, "broken")
	if err := c.WriteFile(ctx, q, broken, 0o644); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("write with failing input: %v", err)
	}
	if _, err := os.Stat(q); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed write left %s: %v", q, err)
	}
	// The agent removes its temporary file once it sees the connection end.
	deadline := time.Now().Add(5 * time.Second)
	for {
		left, _ := filepath.Glob(filepath.Join(dir, ".moat-write-*"))
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temporary files left after a failed write: %v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
