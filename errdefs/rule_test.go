package errdefs_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
)

// The outermost kind is the kind: a NotFound inside an Unavailable is Unavailable.
func TestOutermostKindIsTheKind(t *testing.T) {
	inner := errdefs.NotFoundf("docker: container gone")
	err := errdefs.Unavailablef("daemon: %w", inner)
	if !errdefs.Is(err, errdefs.KindUnavailable) || errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("KindOf = %s, want unavailable (the outermost)", errdefs.KindOf(err))
	}
	// The chain still holds the cause for errors.Is and errors.As, which is why errors.Is
	// with a kind sentinel is not a kind test.
	if !errors.Is(err, errdefs.ErrNotFound) || !errors.Is(err, inner) {
		t.Fatal("the cause chain was lost")
	}
}

// No moat code tests a kind with errors.Is(err, errdefs.ErrX): the suites would accept a
// backend whose NotFound is wrapped in another kind while the manager would not.
func TestNoKindTestWithErrorsIs(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`errors\.Is\([^;\n]*errdefs\.Err[A-Z]`)
	var checked int
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules", "build", ".git", "errdefs":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		checked++
		for i, line := range strings.Split(string(b), "\n") {
			if re.MatchString(line) {
				rel, _ := filepath.Rel(root, p)
				t.Errorf("%s:%d: test the kind with errdefs.Is(err, errdefs.Kind...), not errors.Is: %s", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("checked only %d files: wrong root %s?", checked, root)
	}
}
