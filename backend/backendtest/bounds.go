package backendtest

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/moattype"
)

// The manager refuses requests beyond moattype's bounds (argv and environment size, path
// length and depth) with invalid_argument; a backend must carry out every request within
// them. These subtests send requests at the bounds.

// testArgsAtLimit runs a command whose argv and environment together take the whole
// moattype.MaxArgBytes, with arguments and a variable of moattype.MaxArgStringBytes.
func (s *suite) testArgsAtLimit(t *testing.T) {
	sb := s.create(t)
	big := strings.Repeat("a", moattype.MaxArgStringBytes)
	env := map[string]string{"MOAT_BT_BIG": strings.Repeat("e", moattype.MaxArgStringBytes-len("MOAT_BT_BIG="))}
	used := 0
	for k, v := range sb.req.Env {
		used += len(k) + len(v) + 2
	}
	used += moattype.MaxArgStringBytes + 1 // MOAT_BT_BIG
	argv := []string{"sh", "-c", `echo $#; printf %s "$1" | wc -c; printf %s "$MOAT_BT_BIG" | wc -c`, "sh"}
	for _, a := range argv {
		used += len(a) + 1
	}
	n := 0
	for rest := moattype.MaxArgBytes - used; rest > 1; n++ {
		a := big
		if rest < len(a)+1 {
			a = big[:rest-1]
		}
		argv = append(argv, a)
		rest -= len(a) + 1
	}
	r := sb.exec(ctx(t), execOpts{env: env}, argv...)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(r.stdout)), "\n") {
		got = append(got, strings.TrimSpace(l))
	}
	want := []string{strconv.Itoa(n), strconv.Itoa(moattype.MaxArgStringBytes), strconv.Itoa(len(env["MOAT_BT_BIG"]))}
	if r.err != nil || r.code != 0 || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("argv and env at the %d byte limit: exit %d, err %v, stdout %q, stderr %q; want %q",
			moattype.MaxArgBytes, r.code, squash(fmt.Sprint(r.err)), squash(string(r.stdout)), squash(string(r.stderr)), want)
	}
}

// testPathsAtLimit writes and reads files at the longest, deepest paths the manager lets
// through, with a name element of moattype.MaxPathElemBytes.
func (s *suite) testPathsAtLimit(t *testing.T, variant string) {
	_, ft := s.files(t, variant)
	elem := strings.Repeat("n", moattype.MaxPathElemBytes)
	long := Workdir + "/long"
	for len(long)+1+len(elem) <= moattype.MaxPathBytes {
		long += "/" + elem
	}
	if rest := moattype.MaxPathBytes - len(long) - 1; rest > 0 {
		long += "/" + strings.Repeat("m", rest)
	}
	deepDir := Workdir + "/deep"
	deep := deepDir + strings.Repeat("/d", moattype.MaxPathDepth-strings.Count(deepDir, "/"))
	for _, c := range []struct{ name, path string }{
		{"longest", long}, {"deepest", deep}, {"longest element", Workdir + "/elem/" + elem},
	} {
		if len(c.path) > moattype.MaxPathBytes || strings.Count(c.path, "/") > moattype.MaxPathDepth {
			t.Fatalf("%s: test path beyond the bounds", c.name)
		}
		if err := ft.WriteFile(ctx(t), c.path, strings.NewReader(c.name), 0o644); err != nil {
			t.Errorf("%s path (%d bytes, %d deep): write: %s", c.name, len(c.path), strings.Count(c.path, "/"), squash(fmt.Sprint(err)))
			continue
		}
		var buf bytes.Buffer
		if err := ft.ReadFile(ctx(t), c.path, &buf); err != nil || buf.String() != c.name {
			t.Errorf("%s path (%d bytes, %d deep): read back %q, %s", c.name, len(c.path), strings.Count(c.path, "/"), buf.String(), squash(fmt.Sprint(err)))
		}
	}
}

// testOOMKill runs a memory hog under a 32 MiB limit and a plain kill -9: the second is
// never reported as an OOM kill; the first is when Factory.OOMKills says the backend can
// tell.
func (s *suite) testOOMKill(t *testing.T) {
	req := CreateRequest(t, s.f.Image)
	req.Limits.MemoryBytes = 32 << 20
	sb := s.createOn(t, s.f.New(t), req)
	var d backend.ExecDetail
	r := sb.exec(ctx(t), execOpts{detail: &d}, "sh", "-c", "kill -9 $$")
	if r.err != nil || r.code != 137 || d.OOMKilled {
		t.Errorf("kill -9 $$: exit %d, err %v, stderr %q, oom killed %v; want exit 137, not an OOM kill", r.code, r.err, squash(string(r.stderr)), d.OOMKilled)
	}
	if !s.f.OOMKills {
		t.Logf("the backend does not claim to report OOM kills: memory hog not run")
		return
	}
	d = backend.ExecDetail{}
	r = sb.exec(ctx(t), execOpts{detail: &d}, "sh", "-c", "head -c 268435456 /dev/zero | tail >/dev/null")
	if r.err != nil || r.code != 137 || !d.OOMKilled {
		t.Errorf("memory hog under a 32 MiB limit: exit %d, err %v, stderr %q, oom killed %v; want 137 and an OOM kill",
			r.code, r.err, squash(string(r.stderr)), d.OOMKilled)
	}
}

// squash shortens runs of one byte in s (the long names and arguments of these tests) to
// "x…(n)", so that failure messages show what went wrong rather than megabytes of 'a'.
func squash(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		if j-i > 8 {
			fmt.Fprintf(&b, "%c…(%d)", s[i], j-i)
		} else {
			b.WriteString(s[i:j])
		}
		i = j
	}
	return b.String()
}
