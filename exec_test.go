package moat

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCapWriterNeverSplitsUTF8(t *testing.T) {
	text := strings.Repeat("héllo wörld ✓ 😀 ", 50)
	for max := int64(0); max < 64; max++ {
		for chunk := 1; chunk <= 7; chunk++ {
			var buf bytes.Buffer
			w := newCapWriter(&buf, max)
			for i := 0; i < len(text); i += chunk {
				end := min(i+chunk, len(text))
				if n, err := w.Write([]byte(text[i:end])); err != nil || n != end-i {
					t.Fatalf("write = %d, %v", n, err)
				}
			}
			w.Close()
			if int64(buf.Len()) > max {
				t.Fatalf("max %d chunk %d: wrote %d bytes", max, chunk, buf.Len())
			}
			if !utf8.Valid(buf.Bytes()) {
				t.Fatalf("max %d chunk %d: cut splits a character: %q", max, chunk, buf.Bytes())
			}
			if !strings.HasPrefix(text, buf.String()) {
				t.Fatalf("max %d chunk %d: output is not a prefix", max, chunk)
			}
			if int64(buf.Len()) < max-3 {
				t.Fatalf("max %d chunk %d: cut too early (%d bytes)", max, chunk, buf.Len())
			}
			if !w.truncated {
				t.Fatalf("max %d: truncated flag not set", max)
			}
		}
	}
}

func TestCapWriterPassesBinaryExactly(t *testing.T) {
	var all []byte
	for i := 0; i < 256; i++ {
		all = append(all, byte(i))
	}
	all = append(all, 0xE2, 0x82) // ends inside a would-be character
	for chunk := 1; chunk <= 5; chunk++ {
		var buf bytes.Buffer
		w := newCapWriter(&buf, -1)
		for i := 0; i < len(all); i += chunk {
			w.Write(all[i:min(i+chunk, len(all))])
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), all) || w.truncated {
			t.Fatalf("chunk %d: binary output changed (%d bytes, truncated=%v)", chunk, buf.Len(), w.truncated)
		}
	}
	var buf bytes.Buffer
	w := newCapWriter(&buf, 10)
	w.Write(all[:20])
	w.Close()
	if !bytes.Equal(buf.Bytes(), all[:10]) {
		t.Fatalf("binary cut = %x, want the first 10 bytes exactly", buf.Bytes())
	}
}

func TestCleanSandboxPath(t *testing.T) {
	ok := map[string]string{"/a/b/": "/a/b", "/": "/", "/a//b/./c": "/a/b/c", "/héllo ✓": "/héllo ✓"}
	for in, want := range ok {
		got, err := cleanSandboxPath(in)
		if err != nil || got != want {
			t.Errorf("cleanSandboxPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "rel/path", "/a/../../etc/passwd", "/..", "/a/\x00b", "/\xff"} {
		if _, err := cleanSandboxPath(bad); err == nil {
			t.Errorf("cleanSandboxPath(%q) accepted", bad)
		}
	}
}
