package daytona

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
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
// stderr through FIFOs and the client decodes them: output comes back byte for byte. Each
// chunk dd gets from a FIFO (whatever one read returns) is encoded on its own, so output
// streams while the command runs; every base64 line then decodes on its own.
// Lines starting with "!" on stdout are the wrapper's own reports (never valid base64):
// "!enoent" (no such executable), "!chdir" (workdir missing), "!internal".
const execScript = `dec() { printf %s "$1" | base64 -d && printf .; }
fail() { echo "!$1"; rm -rf "$d"; exit "$2"; }
enc() { while :; do c=$(dd bs=65536 count=1 2>/dev/null | base64) || exit 1; [ -n "$c" ] || exit 0; printf "%s\n" "$c"; done; }
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
enc < "$d/o" & p1=$!
enc < "$d/e" >&2 & p2=$!
unset -f dec fail enc
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
	// The toolbox runs the command line as one sh -c argument, so the whole line (argv and
	// environment, base64-encoded) must fit Linux's limit of one argument.
	if n := len(buildCommand(dir, req, req.Stdin != nil)); n > moattype.MaxArgStringBytes {
		return -1, errdefs.InvalidArgumentf("daytona: exec: argv and environment make a %d byte command line; the toolbox takes at most %d", n, moattype.MaxArgStringBytes)
	}

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
	st := &streams{stdout: req.Stdout, stderr: req.Stderr}
	code, err := i.follow(ctx, t, sid, res, st)
	if err != nil {
		// The command may still run: deleting the session kills its process group.
		cleanup(true)
		return -1, err
	}
	cleanup(false)
	switch st.report {
	case "":
	case "enoent":
		return -1, errdefs.NotFoundf("daytona: exec: executable %q not found", req.Argv[0])
	case "chdir":
		return -1, errdefs.NotFoundf("daytona: exec: workdir %q does not exist", req.Workdir)
	default:
		return -1, errdefs.Unavailablef("daytona: exec: wrapper failed (%s)", st.report)
	}
	return code, nil
}

// streams decodes the growing stdout/stderr logs of one command into the request's writers.
type streams struct {
	stdout, stderr io.Writer
	outOff, errOff int
	report         string
}

// feed writes the complete lines of logs not yet seen. With final, trailing partial lines
// are taken too (the daemon ends every line with a newline, so there should be none).
func (s *streams) feed(logs *commandLogs, final bool) error {
	var err error
	if s.outOff, err = s.decode(logs.Stdout, s.outOff, s.stdout, true, final); err != nil {
		return errdefs.Unavailablef("daytona: exec: undecodable stdout from the sandbox: %v", err)
	}
	if s.errOff, err = s.decode(logs.Stderr, s.errOff, s.stderr, false, final); err != nil {
		return errdefs.Unavailablef("daytona: exec: undecodable stderr from the sandbox: %v", err)
	}
	return nil
}

func (s *streams) decode(log string, off int, w io.Writer, reports, final bool) (int, error) {
	if off > len(log) {
		return off, fmt.Errorf("log shrank from %d to %d bytes", off, len(log))
	}
	rest := log[off:]
	end := strings.LastIndexByte(rest, '\n') + 1
	if final {
		end = len(rest)
	}
	for _, line := range strings.Split(rest[:end], "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if reports && strings.HasPrefix(line, "!") {
			s.report = line[1:]
			continue
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return off, fmt.Errorf("%v in %q", err, clipString(line))
		}
		if _, err := w.Write(b); err != nil {
			return off, fmt.Errorf("write output: %w", err)
		}
	}
	return off + end, nil
}

func clipString(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func (i *Instance) cleanupDir(ctx context.Context, t *toolbox, dir string, uploaded bool) {
	if !uploaded {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_ = t.deleteFile(cctx, dir, true)
}

// follow polls the command until it has an exit code, with a delay growing from pollMin
// to pollMax, passing new output on as it appears.
func (i *Instance) follow(ctx context.Context, t *toolbox, sid string, res *sessionExecResponse, st *streams) (int, error) {
	delay := i.b.pollMin
	for {
		var exit *int
		if res.ExitCode != nil {
			exit = res.ExitCode
		} else {
			cmd, err := t.getCommand(ctx, sid, res.CmdID)
			if err != nil {
				return -1, i.goneOr(ctx, err)
			}
			exit = cmd.ExitCode
		}
		logs, err := t.commandLogs(ctx, sid, res.CmdID)
		if err != nil {
			return -1, i.goneOr(ctx, err)
		}
		if err := st.feed(logs, exit != nil); err != nil {
			return -1, err
		}
		if exit != nil {
			return *exit, nil
		}
		if err := restapi.Sleep(ctx, delay); err != nil {
			return -1, fmt.Errorf("daytona: exec: %w", err)
		}
		delay = min(delay*3/2+time.Millisecond, i.b.pollMax)
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
