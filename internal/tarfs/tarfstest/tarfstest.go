// Package tarfstest answers "what does this tar stream hold?" for tests: the entries of an
// archive by name, read with the standard library alone so a test never trusts the tar code
// it checks.
package tarfstest

import (
	"archive/tar"
	"io"
	"slices"
	"strings"
)

// Contents reads a tar stream to its end and returns each entry's content by name as the
// archive spells it ("" for directories and other entries without content), and the
// stream's error, if it ended badly (nil at a clean end).
func Contents(r io.Reader) (map[string]string, error) {
	got := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return got, err
		}
		got[h.Name] = string(b)
	}
}

// Names returns the entry names of contents, sorted, joined by commas.
func Names(contents map[string]string) string {
	names := make([]string, 0, len(contents))
	for n := range contents {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
