package statedir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

type meta struct {
	ID   string `json:"id"`
	Root string `json:"root"`
}

func (m meta) SandboxID() string   { return m.ID }
func (m meta) SandboxRoot() string { return m.Root }

func TestDecodeAndList(t *testing.T) {
	dir := t.TempDir()
	m := meta{ID: "sb-1", Root: filepath.Join(dir, "sb-1", "root")}
	if err := os.MkdirAll(m.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	h := Handle("local", 1, m)
	var got meta
	if err := Decode("local", 1, h, &got); err != nil || got != m {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	bad := map[string]backend.Handle{
		"foreign backend":       {Backend: "other", Version: 1, State: h.State},
		"newer version":         {Backend: "local", Version: 2, State: h.State},
		"garbage state":         {Backend: "local", Version: 1, State: []byte("{")},
		"root not under its id": Handle("local", 1, meta{ID: "sb-1", Root: "/etc"}),
		"relative root":         Handle("local", 1, meta{ID: "sb-1", Root: "sb-1/root"}),
		"bad id":                Handle("local", 1, meta{ID: "../x", Root: filepath.Join(dir, "../x", "root")}),
	}
	for what, bh := range bad {
		if err := Decode("local", 1, bh, &got); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", what, err)
		}
	}
	if err := Decode("local", 1, Handle("local", 1, meta{ID: "sb-2", Root: filepath.Join(dir, "sb-2", "root")}), &got); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Errorf("missing sandbox: %v, want not_found", err)
	}

	if err := os.WriteFile(filepath.Join(dir, "sb-1", MetaFile), h.State, 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory whose meta names another id, and one without meta, are not listed.
	os.MkdirAll(filepath.Join(dir, "sb-3"), 0o755)
	os.WriteFile(filepath.Join(dir, "sb-3", MetaFile), h.State, 0o600)
	os.MkdirAll(filepath.Join(dir, "half-made"), 0o755)
	listed, err := List("local", dir, 1, func() Meta { return new(meta) })
	if err != nil || len(listed) != 1 || listed[0].ID != "sb-1" || listed[0].Handle.Backend != "local" {
		t.Fatalf("List = %+v %v", listed, err)
	}
	if l, err := List("local", filepath.Join(dir, "none"), 1, func() Meta { return new(meta) }); err != nil || l != nil {
		t.Fatalf("List of a missing dir = %v %v", l, err)
	}
}
