package moat_test

import (
	"context"
	"strings"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
	_ "github.com/moatsh/moat/store/memstore"
)

func TestOpenRejectsBadBackendSections(t *testing.T) {
	ctx := context.Background()
	cases := map[string]map[string]map[string]any{
		"unknown key":     {"host": {"max_open_files": 64, "bogus_key": 1}},
		"bad value":       {"host": {"max_open_files": "many"}},
		"unknown backend": {"nosuch": {"x": 1}},
	}
	want := map[string]string{"unknown key": "bogus_key", "bad value": "max_open_files", "unknown backend": "nosuch"}
	for name, sections := range cases {
		_, err := moat.Open(ctx, moat.Config{Home: t.TempDir(), Store: "mem:", Backends: sections})
		if !errdefs.Is(err, errdefs.KindInvalidArgument) || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: err = %v; want invalid_argument naming %q", name, err, want[name])
		}
	}
	m, err := moat.Open(ctx, moat.Config{Home: t.TempDir(), Store: "mem:",
		Backends: map[string]map[string]any{"host": {"max_open_files": 64}}})
	if err != nil {
		t.Fatalf("a valid section: %v", err)
	}
	m.Close()
}
