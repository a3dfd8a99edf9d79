package fake_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
)

// shellCases run both in the fake and in busybox sh on the host (in an empty temp dir), and
// must agree on stdout and exit status (and stderr where compareStderr says so): the fake's
// shell and tools are checked against the real thing, not against expectations typed here.
var shellCases = []struct {
	script        string
	compareStderr bool
}{
	{`echo a b   c`, true},
	{`echo "a  b" 'c  d' e\ f`, true},
	{`echo -n no newline`, true},
	{`X="1  2"; echo $X; echo "$X"; echo ${X}y`, true},
	{`set -- a "b c" ""; echo $#; printf '[%s]' "$@"; echo; printf '[%s]' $@; echo`, true},
	{`exit 3`, true},
	{`echo a; exit 4; echo b`, true},
	{`false && echo no || echo yes`, true},
	{`! true; echo $?; ! false; echo $?`, true},
	{`true; echo $?; false; echo $?`, true},
	{`echo out; echo err >&2; echo both 1>&2`, true},
	{`echo x > f; cat f; echo y >> f; cat f; cat < f; cat -- f f`, true},
	{`echo quiet > /dev/null; echo err 2>/dev/null >&2; echo shown`, true},
	{`(echo sub)`, false},
	{`echo hi | cat; printf 'a\nb\nc\n' | head -n 2; echo one two | sh -c 'cat; echo done'`, true},
	{`printf '%s-%d\n' a 1 b 2; printf '%5s|%-3s|%03d|%x|%%\n' ab c 7 255`, true},
	{`printf '\101\102\012\0101'; printf '%b\n' 'x\ty\0101'`, true},
	{`printf '\377\376\000\200abc'`, true},
	{`A=1 sh -c 'echo $A'; echo "[$A]"; B=2; sh -c 'echo $B'`, true},
	{`sh -c 'echo $0 $1 $#' name arg; sh -c 'exit 5'; echo $?`, true},
	{`mkdir -p d/e; test -d d/e && echo dir; test -f d && echo no || echo notfile; mkdir d; echo $?`, false},
	{`touch t; chmod 640 t; ln -s t l; test -L l && echo link; test -h t || echo notlink; stat -c '%s %a %F' t; stat -c '%F' l`, true},
	{`echo abc > t; chmod 755 t; stat -c '%s %a %f' t; stat -L -c '%a' t; chmod go-rx t; stat -c %a t; chmod +x,o+r t; stat -c %a t`, true},
	{`[ 1 -lt 2 ] && echo lt; [ a = b ] || echo ne; [ -n "" ] || echo empty; [ -z "" ] && echo z; [ ! -e nope ] && echo missing; test 3 -ge 3; echo $?`, true},
	{`echo 'single $X' "double \$X \" \\ end"; echo a\ b # comment`, true},
	{`rm -f nope; echo $?; rm nope; echo $?; touch a; rm a; test -e a; echo $?`, false},
	{`cat nope; echo $?`, false},
	{`moat-no-such-command; echo $?`, false},
	{`basename /a/b.txt .txt; dirname /a/b; dirname b`, true},
	{`touch b a .h; mkdir c; ls; ls -A; ls -a`, true},
	{`head -c 5 /dev/zero | wc -c; printf 'a\nb\n' | wc -l`, true},
	{`sh -c 'kill -9 $$'; echo $?`, false}, // busybox adds "Killed" on stderr
	{`kill -0 $$ && echo alive`, true},
	{`echo "multi
line"; echo next`, true},
	{"echo one\necho two\n\n  echo three;", true},
	{`x=1; x=2 true; echo $x; export Y=3; sh -c 'echo $Y'`, true},
	{`cd /; pwd; cd -- /tmp; pwd; cd /nonexistent; echo $?`, false},
	{`mkdir -p q/r; touch q/r/z q/a; find q -mindepth 1 -maxdepth 1 -type f; find q/r -name 'z*'`, true},
	{`exec echo replaced; echo not reached`, true},
	{`X=1; sh -c 'echo [$X]'; export X; sh -c 'echo [$X]'; X=2 sh -c 'echo $X'`, true},
	{`head -c 100000 /dev/zero | head -c 1 | wc -c; echo $?`, true},
	{`env -i`, false},
}

func TestShellAgainstBusybox(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed: nothing to compare the fake's shell with")
	}
	b := fake.New()
	for _, tc := range shellCases {
		t.Run("", func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(bb, "sh", "-c", tc.script)
			cmd.Dir = dir
			cmd.Env = []string{"PATH=/nonexistent", "HOME=/"} // busybox runs its own applets first
			var wantOut, wantErr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &wantOut, &wantErr
			wantCode := 0
			if err := cmd.Run(); err != nil {
				ee, ok := err.(*exec.ExitError)
				if !ok {
					t.Fatal(err)
				}
				wantCode = ee.ExitCode()
				if wantCode < 0 {
					wantCode = 128 + 9
				}
			}

			inst, err := b.Create(context.Background(), &backend.CreateRequest{ID: "sh", Workdir: "/w"})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Destroy(context.Background())
			var gotOut, gotErr bytes.Buffer
			code, err := inst.Exec(context.Background(), &backend.ExecRequest{
				Argv: []string{"sh", "-c", tc.script}, Env: map[string]string{"HOME": "/"}, Workdir: "/w",
				Stdout: &gotOut, Stderr: &gotErr,
			})
			if err != nil {
				t.Fatalf("%q: fake exec error: %v", tc.script, err)
			}
			if strings.Contains(tc.script, "(echo sub)") {
				// Subshells are outside the subset: a clear syntax error, not a misreading.
				if code != 2 || !strings.Contains(gotErr.String(), "unsupported") {
					t.Errorf("subshell: want exit 2 and an unsupported message, got %d %q", code, gotErr.String())
				}
				return
			}
			if strings.HasPrefix(tc.script, "env -i") {
				if code == 0 {
					t.Errorf("env -i: want an unsupported-option error, got exit 0")
				}
				return
			}
			if code != wantCode || gotOut.String() != wantOut.String() {
				t.Errorf("%q:\nfake:    exit %d stdout %q stderr %q\nbusybox: exit %d stdout %q stderr %q",
					tc.script, code, gotOut.String(), gotErr.String(), wantCode, wantOut.String(), wantErr.String())
			}
			if tc.compareStderr && gotErr.String() != wantErr.String() {
				t.Errorf("%q: stderr: fake %q, busybox %q", tc.script, gotErr.String(), wantErr.String())
			}
		})
	}
}

func TestShellUnsupportedIsLoud(t *testing.T) {
	b := fake.New()
	inst, err := b.Create(context.Background(), &backend.CreateRequest{ID: "u", Workdir: "/w"})
	if err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{
		`if true; then echo; fi`, `for x in a; do echo $x; done`, `echo $(id)`, "echo `id`",
		`sleep 1 &`, `{ echo; }`, `echo ${X:-d}`, `cat <<EOF`, `echo 'open`, `echo | `, `&& echo`,
	} {
		var stderr bytes.Buffer
		code, err := inst.Exec(context.Background(), &backend.ExecRequest{
			Argv: []string{"sh", "-c", script}, Workdir: "/w", Stdout: &bytes.Buffer{}, Stderr: &stderr,
		})
		if err != nil || code != 2 || !strings.Contains(stderr.String(), "syntax error") {
			t.Errorf("%q: want exit 2 with a syntax error, got %d %v %q", script, code, err, stderr.String())
		}
	}
}
