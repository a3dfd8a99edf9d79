package oomcount

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIn(t *testing.T) {
	v1, v2, none := t.TempDir(), t.TempDir(), t.TempDir()
	_ = os.WriteFile(filepath.Join(v1, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 0o644)
	_ = os.WriteFile(filepath.Join(v2, "memory.events"), []byte("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n"), 0o644)
	if n, ok := In(v1); !ok || n != 3 {
		t.Errorf("v1: %d %v", n, ok)
	}
	if n, ok := In(v2); !ok || n != 2 {
		t.Errorf("v2: %d %v", n, ok)
	}
	if _, ok := In(none); ok {
		t.Error("a directory without counters has one")
	}
}

func TestOOMKilled(t *testing.T) {
	for _, c := range []struct {
		code     int
		b, a     uint64
		bok, aok bool
		want     bool
	}{
		{137, 1, 2, true, true, true},
		{137, 2, 2, true, true, false}, // a plain kill -9
		{0, 1, 2, true, true, false},   // something was killed, but the command went on
		{137, 0, 1, false, true, false},
		{143, 1, 2, true, true, false},
	} {
		if got := OOMKilled(c.code, c.b, c.bok, c.a, c.aok); got != c.want {
			t.Errorf("%+v: %v", c, got)
		}
	}
}
