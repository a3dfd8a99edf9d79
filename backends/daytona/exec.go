package daytona

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// execScript is the fixed wrapper every Exec runs, as
//
//	sh -c execScript moat DIR WORKDIR STDIN NENV ENV... ARGV...
//
// where DIR, WORKDIR, every ENV ("K=V") and every ARGV word are base64-encoded: the only
// characters user data contributes to the command line are [A-Za-z0-9+/=] inside single
// quotes, so nothing the user passes is ever parsed by a shell. STDIN is 1 when the
// client uploaded stdin to DIR/stdin.
//
// The daemon labels session output line by line (it appends a newline to an unterminated
// last line and loses NUL bytes), so the wrapper base64-encodes the command's stdout and
// stderr through FIFOs and the client decodes them: output comes back byte for byte.
// Lines starting with "!" on stdout are the wrapper's own reports (never valid base64):
// "!enoent" (no such executable), "!chdir" (workdir missing), "!internal".
const execScript = `dec() { printf %s "$1" | base64 -d && printf .; }
fail() { echo "!$1"; rm -rf "$d"; exit "$2"; }
d=$(dec "$1") || { echo "!internal"; exit 125; }; d=${d%.}
w=$(dec "$2") || fail internal 125; w=${w%.}
si=$3; n=$4; shift 4
t=$#; i=0
for a do
  v=$(dec "$a") || fail internal 125; v=${v%.}
  if [ "$i" -lt "$n" ]; then export "$v" || fail internal 125; else set -- "$@" "$v"; fi
  i=$((i+1))
done
shift "$t"
mkdir -p "$d" 2>/dev/null || fail internal 125
if [ -n "$w" ]; then cd "$w" 2>/dev/null || fail chdir 125; fi
command -v "$1" >/dev/null 2>&1 || fail enoent 127
in=/dev/null; [ "$si" = 1 ] && in="$d/stdin"
[ -r "$in" ] || fail internal 125
mkfifo "$d/o" "$d/e" 2>/dev/null || fail internal 125
base64 < "$d/o" & p1=$!
base64 < "$d/e" >&2 & p2=$!
unset -f dec fail
"$@" > "$d/o" 2> "$d/e" < "$in"; c=$?
wait "$p1"; wait "$p2"
rm -rf "$d"
exit "$c"`

// execDirRoot holds per-exec scratch directories (stdin, FIFOs) inside the sandbox.
const execDirRoot = "/tmp/.moat-exec"

func b64(s string) string { return "'" + base64.StdEncoding.EncodeToString([]byte(s)) + "'" }

// buildCommand renders the session command for req. Every user-supplied string is base64.
func buildCommand(dir string, req *backend.ExecRequest, withStdin bool) string {
	var sb strings.Builder
	sb.WriteString("sh -c '")
	sb.WriteString(execScript)
	sb.WriteString("' moat ")
	sb.WriteString(b64(dir))
	sb.WriteByte(' ')
	sb.WriteString(b64(req.Workdir))
	if withStdin {
		sb.WriteString(" 1 ")
	} else {
		sb.WriteString(" 0 ")
	}
	keys := make([]string, 0, len(req.Env))
	for k := range req.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sb.WriteString(strconv.Itoa(len(keys)))
	for _, k := range keys {
		sb.WriteByte(' ')
		sb.WriteString(b64(k + "=" + req.Env[k]))
	}
	for _, a := range req.Argv {
		sb.WriteByte(' ')
		sb.WriteString(b64(a))
	}
	return sb.String()
}

// Exec implements backend.Instance through a toolbox session: one fresh session per exec
// (sessions run their commands one after another), an async command, polling for its exit
// code, then its split logs. Cancelling ctx deletes the session, which makes the daemon
// SIGTERM then SIGKILL the session's process group. Stdin is read to EOF and uploaded
// before the command starts. Output reaches req.Stdout/req.Stderr when the command ends.
func (i *Instance) Exec(ctx context.Context, req *backend.ExecRequest) (int, error) {
	if len(req.Argv) == 0 {
		return -1, errdefs.InvalidArgumentf("daytona: exec: empty argv")
	}
	t := i.tb()
	sid := "moat-" + randomID()
	dir := execDirRoot + "/" + sid

	var stdin []byte
	if req.Stdin != nil {
		var err error
		if stdin, err = io.ReadAll(req.Stdin); err != nil {
			return -1, fmt.Errorf("daytona: exec: read stdin: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("daytona: exec: %w", err)
	}
	if req.Stdin != nil {
		if err := t.upload(ctx, dir+"/stdin", stdin); err != nil {
			return -1, fmt.Errorf("daytona: exec: upload stdin: %w", err)
		}
	}
	if err := t.createSession(ctx, sid); err != nil {
		i.cleanupDir(ctx, t, dir, req.Stdin != nil)
		return -1, i.goneOr(ctx, err)
	}
	cleanup := func(removeDir bool) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		_ = t.deleteSession(cctx, sid)
		if removeDir {
			_ = t.deleteFile(cctx, dir, true)
		}
	}
	res, err := t.sessionExec(ctx, sid, &sessionExecRequest{Command: buildCommand(dir, req, req.Stdin != nil), RunAsync: true})
	if err != nil {
		cleanup(true)
		return -1, i.goneOr(ctx, err)
	}
	code, err := i.waitCommand(ctx, t, sid, res)
	if err != nil {
		// The command may still run: deleting the session kills its process group.
		cleanup(true)
		return -1, err
	}
	logs, err := t.commandLogs(ctx, sid, res.CmdID)
	if err != nil {
		cleanup(false)
		return -1, i.goneOr(ctx, err)
	}
	cleanup(false)

	stdout, report, err := decodeStream(logs.Stdout, true)
	if err != nil {
		return -1, errdefs.Unavailablef("daytona: exec: undecodable stdout from the sandbox: %v", err)
	}
	switch report {
	case "":
	case "enoent":
		return -1, errdefs.NotFoundf("daytona: exec: executable %q not found", req.Argv[0])
	case "chdir":
		return -1, errdefs.NotFoundf("daytona: exec: workdir %q does not exist", req.Workdir)
	default:
		return -1, errdefs.Unavailablef("daytona: exec: wrapper failed (%s)", report)
	}
	stderr, _, err := decodeStream(logs.Stderr, false)
	if err != nil {
		return -1, errdefs.Unavailablef("daytona: exec: undecodable stderr from the sandbox: %v", err)
	}
	if _, err := req.Stdout.Write(stdout); err != nil {
		return -1, fmt.Errorf("daytona: exec: write stdout: %w", err)
	}
	if _, err := req.Stderr.Write(stderr); err != nil {
		return -1, fmt.Errorf("daytona: exec: write stderr: %w", err)
	}
	return code, nil
}

func (i *Instance) cleanupDir(ctx context.Context, t *toolbox, dir string, uploaded bool) {
	if !uploaded {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_ = t.deleteFile(cctx, dir, true)
}

// waitCommand polls the command until it has an exit code, with a delay growing from
// pollMin to pollMax.
func (i *Instance) waitCommand(ctx context.Context, t *toolbox, sid string, res *sessionExecResponse) (int, error) {
	if res.ExitCode != nil {
		return *res.ExitCode, nil
	}
	delay := i.b.pollMin
	for {
		if err := sleepCtx(ctx, delay); err != nil {
			return -1, fmt.Errorf("daytona: exec: %w", err)
		}
		delay = min(delay*3/2+time.Millisecond, i.b.pollMax)
		cmd, err := t.getCommand(ctx, sid, res.CmdID)
		if err != nil {
			if ctx.Err() != nil {
				return -1, fmt.Errorf("daytona: exec: %w", ctx.Err())
			}
			return -1, i.goneOr(ctx, err)
		}
		if cmd.ExitCode != nil {
			return *cmd.ExitCode, nil
		}
	}
}

// goneOr turns a toolbox 404 into a NotFound that names the sandbox when the sandbox
// itself is gone; other errors pass through.
func (i *Instance) goneOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("daytona: exec: %w", ctx.Err())
	}
	if !errdefs.Is(err, errdefs.KindNotFound) {
		return err
	}
	if st, serr := i.Status(ctx); serr == nil && st == backend.StatusGone {
		return errdefs.NotFoundf("daytona: sandbox %s no longer exists", i.id)
	}
	return err
}

// decodeStream decodes one base64 log stream. With reports, a line starting with "!" is a
// wrapper report and is returned instead of being decoded.
func decodeStream(s string, reports bool) ([]byte, string, error) {
	var enc bytes.Buffer
	enc.Grow(len(s))
	report := ""
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if reports && strings.HasPrefix(line, "!") {
			report = strings.TrimPrefix(line, "!")
			continue
		}
		enc.WriteString(strings.TrimSpace(line))
	}
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(enc.Len()))
	n, err := base64.StdEncoding.Decode(out, enc.Bytes())
	if err != nil {
		return nil, "", err
	}
	return out[:n], report, nil
}
