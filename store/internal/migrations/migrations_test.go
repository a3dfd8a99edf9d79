package migrations

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0010_later.sql": {Data: []byte("B")},
		"m/0002_first.sql": {Data: []byte("A")},
	}
	ms, err := Load(fsys, "m", "x")
	if err != nil || len(ms) != 2 || ms[0].Version != 2 || ms[0].SQL != "A" || ms[1].Name != "0010_later.sql" || Latest(ms) != 10 {
		t.Fatalf("Load = %+v %v", ms, err)
	}
	if Latest(nil) != 0 {
		t.Fatal("Latest(nil) != 0")
	}
	for name, bad := range map[string]fstest.MapFS{
		"no version":     {"m/init.sql": {}},
		"zero version":   {"m/0000_x.sql": {}},
		"shared version": {"m/0001_a.sql": {}, "m/01_b.sql": {}},
	} {
		if _, err := Load(bad, "m", "x"); err == nil || !strings.HasPrefix(err.Error(), "x: ") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
