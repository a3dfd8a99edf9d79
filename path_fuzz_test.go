package moat

import (
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSandboxPath checks the one place a caller's sandbox path is cleaned (every file
// operation, PutArchive/GetArchive and an exec's workdir go through resolvePath): an
// accepted path is absolute, clean, free of ".." and NUL, valid UTF-8 and stable under a
// second pass; a relative path never leaves the base it is resolved against.
func FuzzSandboxPath(f *testing.F) {
	for _, s := range [][2]string{
		{"/workspace", "a/b"}, {"/workspace", "../etc/passwd"}, {"/workspace", "/etc/passwd"},
		{"/workspace", "a/../../b"}, {"/workspace", "./a//b/"}, {"/workspace", ""},
		{"/workspace", "a\x00b"}, {"/workspace", "\xff"}, {"/", "x"}, {"/w", ".."},
		{"/w", "..."}, {"/w", "a/.."}, {"/w", "//x"}, {"/w", "/.."}, {"/w", "~/x"},
		{"/w", strings.Repeat("a/", 2000)}, {"/w", "é/✓ name"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, base, p string) {
		c, err := cleanSandboxPath(p)
		if err == nil {
			checkSandboxPath(t, "cleanSandboxPath", p, c)
			if c2, err := cleanSandboxPath(c); err != nil || c2 != c {
				t.Fatalf("cleanSandboxPath not idempotent: %q -> %q -> %q %v", p, c, c2, err)
			}
		} else if err.Error() == "" {
			t.Fatalf("cleanSandboxPath(%q): empty error", p)
		}
		// base is a workdir, which normalizeSpec has already cleaned.
		base, err = cleanSandboxPath(base)
		if err != nil {
			return
		}
		r, err := resolvePath(base, p)
		if err != nil {
			return
		}
		checkSandboxPath(t, "resolvePath", p, r)
		if p != "" && !strings.HasPrefix(p, "/") && r != base && !strings.HasPrefix(r, strings.TrimSuffix(base, "/")+"/") {
			t.Fatalf("resolvePath(%q, %q) = %q: a relative path left its base", base, p, r)
		}
		if strings.HasPrefix(p, "/") && r != c {
			t.Fatalf("resolvePath(%q, %q) = %q, but cleanSandboxPath gives %q", base, p, r, c)
		}
	})
}

func checkSandboxPath(t *testing.T, fn, in, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "/") || path.Clean(out) != out || strings.ContainsRune(out, 0) || !utf8.ValidString(out) {
		t.Fatalf("%s(%q) = %q: not a clean absolute path", fn, in, out)
	}
	for _, el := range strings.Split(out, "/") {
		if el == ".." {
			t.Fatalf("%s(%q) = %q contains '..'", fn, in, out)
		}
	}
	for _, el := range strings.Split(in, "/") {
		if el == ".." {
			t.Fatalf("%s(%q) accepted a path with '..' (= %q)", fn, in, out)
		}
	}
}
