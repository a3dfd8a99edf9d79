package all_test

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	_ "github.com/moatsh/moat/backends/all"
	"github.com/moatsh/moat/router"
)

var update = flag.Bool("update", false, "rewrite the generated parts of README.md and docs/config.md")

// descriptors builds every registered backend from an empty configuration (factories do no
// I/O) and returns what each says of itself.
func descriptors(t *testing.T) []backend.Descriptor {
	t.Helper()
	var out []backend.Descriptor
	for _, n := range backend.Names() {
		f, _ := backend.Lookup(n)
		b, err := f(backend.Config{StateDir: t.TempDir(), Getenv: func(string) string { return "" }})
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		d := b.Descriptor()
		d.Name = n
		out = append(out, d)
	}
	return out
}

func autoOrder(ds []backend.Descriptor) string {
	var cands []router.Candidate
	for _, d := range ds {
		cands = append(cands, router.Candidate{Name: d.Name, Descriptor: d})
	}
	var names []string
	for _, c := range router.Rank(cands) {
		names = append(names, "`"+c.Name+"`")
	}
	return strings.Join(names, " → ") + "\n"
}

func backendTable(ds []backend.Descriptor) string {
	var b strings.Builder
	b.WriteString("| name | isolation | where | notes |\n| --- | --- | --- | --- |\n")
	// In auto's order; backends auto never picks last.
	ds = slices.Clone(ds)
	slices.SortStableFunc(ds, func(x, y backend.Descriptor) int {
		rx, ry := x.AutoRank, y.AutoRank
		if rx == 0 {
			rx = 1 << 30
		}
		if ry == 0 {
			ry = 1 << 30
		}
		return rx - ry
	})
	for _, d := range ds {
		where := "local"
		if d.Remote {
			where = "hosted"
		}
		if d.Summary == "" {
			d.Summary = "—"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", d.Name, d.Isolation, where, d.Summary)
	}
	return b.String()
}

func settingsTable(ds []backend.Descriptor) string {
	var b strings.Builder
	b.WriteString("| backend | key | environment aliases | kind | what |\n| --- | --- | --- | --- | --- |\n")
	for _, d := range ds {
		for _, s := range d.Settings {
			var kind []string
			if s.Secret {
				kind = append(kind, "secret")
			}
			if s.Endpoint {
				kind = append(kind, "endpoint")
			}
			if s.OperatorOnly {
				kind = append(kind, "operator only")
			}
			env := make([]string, len(s.Env))
			for i, e := range s.Env {
				env[i] = "`" + e + "`"
			}
			fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s | %s |\n", d.Name, s.Key, strings.Join(env, ", "), strings.Join(kind, ", "), s.Doc)
		}
	}
	return b.String()
}

// checkGenerated compares (or, with -update, rewrites) the text between the markers
// <!-- generated:NAME --> and <!-- /generated:NAME --> in file.
func checkGenerated(t *testing.T, file, name, want string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	open, end := "<!-- generated:"+name+" -->\n", "<!-- /generated:"+name+" -->"
	s := string(data)
	i, j := strings.Index(s, open), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q block", file, open, end)
	}
	got := s[i+len(open) : j]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(file, []byte(s[:i+len(open)]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the %s block is not what the registered backends say; run go test ./backends/all -update. Want:\n%s", file, name, want)
}

// The README's auto order and backend table, and docs/config.md's settings table, come
// from the backends' own descriptors: a backend appears there exactly when it is compiled
// in, and adding one needs no edit outside its package and backends/all.
func TestDocsFollowDescriptors(t *testing.T) {
	ds := descriptors(t)
	checkGenerated(t, "../../README.md", "auto-order", autoOrder(ds))
	checkGenerated(t, "../../docs/config.md", "backend-settings", settingsTable(ds))
	checkGenerated(t, "../../README.md", "backends", backendTable(ds))

}
