package fake

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/backend/execfs"
)

// tools are the builtin commands of a fake sandbox, each a small honest subset of its busybox
// namesake. Options outside the subset are errors (exit 2 with a message), never ignored.
var tools map[string]toolFunc

func init() {
	tools = map[string]toolFunc{
		"sh": toolSh, "true": func(context.Context, *call) (int, error) { return 0, nil },
		"false": func(context.Context, *call) (int, error) { return 1, nil },
		"echo":  toolEcho, "printf": toolPrintf, "cat": toolCat, "pwd": toolPwd, "env": toolEnv,
		"sleep": toolSleep, "head": toolHead, "ls": toolLs, "mkdir": toolMkdir, "ln": toolLn,
		"stat": toolStat, "test": toolTest, "[": toolTest, "chmod": toolChmod, "rm": toolRm,
		"touch": toolTouch, "find": toolFind, "kill": toolKill, "basename": toolBasename,
		"dirname": toolDirname, "wc": toolWc, "mv": toolMv,
	}
}

func (c *call) fail(code int, format string, args ...any) (int, error) {
	fmt.Fprintf(c.stderr, "%s: %s\n", path.Base(c.argv[0]), fmt.Sprintf(format, args...))
	return code, nil
}

// eachOperand runs fn on every operand and reports each failure on stderr as format
// (which takes the operand) followed by the error's text. It returns exit code 1 when any
// failed, else 0.
func (c *call) eachOperand(operands []string, format string, fn func(op string) error) int {
	code := 0
	for _, op := range operands {
		if err := fn(op); err != nil {
			c.fail(1, format+": %s", op, errText(err))
			code = 1
		}
	}
	return code
}

func errText(err error) string {
	switch err {
	case errNoEnt:
		return "No such file or directory"
	case errNotDir:
		return "Not a directory"
	case errIsDir:
		return "Is a directory"
	case errExist:
		return "File exists"
	case errLoop:
		return "Too many levels of symbolic links"
	}
	return err.Error()
}

func absPath(cwd, p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	return path.Join(cwd, p)
}

// flags splits leading single-letter options ("-rf", "-c N") from operands. withArg names
// the options taking a value. It stops at "--" or the first operand.
func flags(args []string, withArg string) (map[byte]string, []string, error) {
	opts := map[byte]string{}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			f := a[j]
			if strings.IndexByte(withArg, f) >= 0 {
				v := a[j+1:]
				if v == "" {
					if i+1 >= len(args) {
						return nil, nil, fmt.Errorf("option requires an argument -- %c", f)
					}
					i++
					v = args[i]
				}
				opts[f] = v
				break
			}
			opts[f] = ""
		}
	}
	return opts, args[i:], nil
}

// onlyFlags rejects options outside allowed.
func onlyFlags(opts map[byte]string, allowed string) error {
	for f := range opts {
		if strings.IndexByte(allowed, f) < 0 {
			return fmt.Errorf("unsupported option -- %c", f)
		}
	}
	return nil
}

func parseOpts(c *call, withArg, allowed string) (map[byte]string, []string, bool) {
	opts, rest, err := flags(c.argv[1:], withArg)
	if err == nil {
		err = onlyFlags(opts, allowed)
	}
	if err != nil {
		c.fail(2, "%v", err)
		return nil, nil, false
	}
	return opts, rest, true
}

func toolSh(ctx context.Context, c *call) (int, error) {
	args := c.argv[1:]
	var script string
	switch {
	case len(args) >= 2 && args[0] == "-c":
		script, args = args[1], args[2:]
	case len(args) == 0:
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return 0, err
		}
		script = string(b)
	default:
		return c.fail(2, "only 'sh -c SCRIPT [NAME ARGS...]' and a script on stdin are supported")
	}
	name := "sh"
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	vars := make(map[string]string, len(c.env))
	export := make(map[string]bool, len(c.env))
	for k, v := range c.env {
		vars[k], export[k] = v, true
	}
	s := &shell{p: c.p, vars: vars, export: export, cwd: c.cwd, args: append([]string{name}, args...),
		stdio: [3]any{c.stdin, c.stdout, c.stderr}}
	return s.runScript(ctx, script)
}

func toolEcho(_ context.Context, c *call) (int, error) {
	args := c.argv[1:]
	nl := "\n"
	if len(args) > 0 && args[0] == "-n" {
		nl, args = "", args[1:]
	}
	_, err := io.WriteString(c.stdout, strings.Join(args, " ")+nl)
	return 0, err
}

func toolPwd(_ context.Context, c *call) (int, error) {
	_, err := io.WriteString(c.stdout, c.cwd+"\n")
	return 0, err
}

func toolEnv(ctx context.Context, c *call) (int, error) {
	env := make(map[string]string, len(c.env))
	for k, v := range c.env {
		env[k] = v
	}
	args := c.argv[1:]
	for len(args) > 0 && strings.IndexByte(args[0], '=') > 0 {
		k, v, _ := strings.Cut(args[0], "=")
		env[k], args = v, args[1:]
	}
	if len(args) > 0 {
		if strings.HasPrefix(args[0], "-") {
			return c.fail(2, "unsupported option %s", args[0])
		}
		code, err := c.p.rt.run(ctx, &call{argv: args, env: env, cwd: c.cwd, stdin: c.stdin, stdout: c.stdout, stderr: c.stderr})
		if errors.Is(err, errNotFoundCmd) {
			return c.fail(127, "can't execute '%s': No such file or directory", args[0])
		}
		return code, err
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + env[k] + "\n")
	}
	_, err := io.WriteString(c.stdout, b.String())
	return 0, err
}

func toolSleep(ctx context.Context, c *call) (int, error) {
	if len(c.argv) < 2 {
		return c.fail(1, "missing operand")
	}
	var total time.Duration
	for _, a := range c.argv[1:] {
		mult := time.Second
		switch {
		case strings.HasSuffix(a, "s"):
			a = a[:len(a)-1]
		case strings.HasSuffix(a, "m"):
			a, mult = a[:len(a)-1], time.Minute
		case strings.HasSuffix(a, "h"):
			a, mult = a[:len(a)-1], time.Hour
		}
		f, err := strconv.ParseFloat(a, 64)
		if err != nil || f < 0 {
			return c.fail(1, "invalid number '%s'", a)
		}
		total += time.Duration(f * float64(mult))
	}
	t := time.NewTimer(total)
	defer t.Stop()
	select {
	case <-t.C:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ctxReader stops reading once ctx ends, so a killed cat does not drain /dev/zero forever.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// inputs opens each operand ("-" or none: stdin) in turn, reporting errors on stderr.
func (c *call) inputs(ctx context.Context, operands []string, each func(name string, r io.Reader) error) (int, error) {
	if len(operands) == 0 {
		operands = []string{"-"}
	}
	code := 0
	for _, name := range operands {
		var r io.Reader = c.stdin
		if name != "-" {
			var err error
			if r, err = c.p.rt.fs.open(c.cwd, name); err != nil {
				c.fail(1, "%s: %s", name, errText(err))
				code = 1
				continue
			}
		}
		if err := each(name, ctxReader{ctx, r}); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if errors.Is(err, io.ErrClosedPipe) {
				return 0, err // the pipeline turns it into SIGPIPE
			}
			return c.fail(1, "%s: %v", name, err)
		}
	}
	return code, nil
}

func toolCat(ctx context.Context, c *call) (int, error) {
	_, operands, ok := parseOpts(c, "", "")
	if !ok {
		return 2, nil
	}
	return c.inputs(ctx, operands, func(_ string, r io.Reader) error {
		_, err := io.Copy(c.stdout, r)
		return err
	})
}

func toolHead(ctx context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "cn", "cn")
	if !ok {
		return 2, nil
	}
	bytesMode := false
	n := int64(10)
	for f, v := range opts {
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil || x < 0 {
			return c.fail(1, "invalid number '%s'", v)
		}
		n, bytesMode = x, f == 'c'
	}
	return c.inputs(ctx, operands, func(_ string, r io.Reader) error {
		if bytesMode {
			_, err := io.CopyN(c.stdout, r, n)
			if err == io.EOF {
				err = nil
			}
			return err
		}
		br := bufio.NewReader(r)
		for i := int64(0); i < n; i++ {
			line, err := br.ReadBytes('\n')
			if _, werr := c.stdout.Write(line); werr != nil {
				return werr
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func toolWc(ctx context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "", "cl")
	if !ok {
		return 2, nil
	}
	if len(opts) != 1 {
		return c.fail(2, "exactly one of -c and -l is supported")
	}
	_, lines := opts['l']
	return c.inputs(ctx, operands, func(name string, r io.Reader) error {
		var count int64
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if lines {
				count += int64(strings.Count(string(buf[:n]), "\n"))
			} else {
				count += int64(n)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		out := strconv.FormatInt(count, 10)
		if name != "-" {
			out += " " + name
		}
		_, err := io.WriteString(c.stdout, out+"\n")
		return err
	})
}

func toolLs(_ context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "", "aA1")
	if !ok {
		return 2, nil
	}
	if len(operands) == 0 {
		operands = []string{"."}
	}
	_, all := opts['a']
	_, almost := opts['A']
	code := 0
	var out strings.Builder
	for i, op := range operands {
		n, err := c.p.rt.fs.stat(c.cwd, op, true)
		if err != nil {
			c.fail(2, "%s: %s", op, errText(err))
			code = 2
			continue
		}
		if !n.isDir() {
			out.WriteString(op + "\n")
			continue
		}
		if len(operands) > 1 {
			if i > 0 {
				out.WriteString("\n")
			}
			out.WriteString(op + ":\n")
		}
		infos, err := c.p.rt.fs.readDir(c.cwd, op)
		if err != nil {
			c.fail(2, "%s: %s", op, errText(err))
			code = 2
			continue
		}
		if all {
			out.WriteString(".\n..\n")
		}
		for _, fi := range infos {
			if strings.HasPrefix(fi.Name, ".") && !all && !almost {
				continue
			}
			out.WriteString(fi.Name + "\n")
		}
	}
	_, err := io.WriteString(c.stdout, out.String())
	return code, err
}

func parseMode(s string) (fs.FileMode, bool) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, false
	}
	return execfs.FromUnixMode(uint32(m)|0o100000).Perm() | specialBits(uint32(m)), true
}

func specialBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

func toolMkdir(_ context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "m", "pm")
	if !ok {
		return 2, nil
	}
	perm := fs.FileMode(0o755)
	if v, ok := opts['m']; ok {
		if perm, ok = parseMode(v); !ok {
			return c.fail(1, "invalid mode '%s'", v)
		}
	}
	_, parents := opts['p']
	return c.eachOperand(operands, "can't create directory '%s'", func(op string) error {
		if parents {
			return c.p.rt.fs.mkdirAll(c.cwd, op, perm)
		}
		return c.p.rt.fs.mkdir(c.cwd, op, perm)
	}), nil
}

func toolLn(_ context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "", "sf")
	if !ok {
		return 2, nil
	}
	if _, sym := opts['s']; !sym {
		return c.fail(2, "only symbolic links (-s) are supported")
	}
	if len(operands) != 2 {
		return c.fail(1, "need TARGET and LINK")
	}
	if _, force := opts['f']; force {
		_ = c.p.rt.fs.remove(c.cwd, operands[1], false)
	}
	if err := c.p.rt.fs.symlink(c.cwd, operands[0], operands[1]); err != nil {
		return c.fail(1, "%s: %s", operands[1], errText(err))
	}
	return 0, nil
}

func toolChmod(_ context.Context, c *call) (int, error) {
	_, operands, ok := parseOpts(c, "", "")
	if !ok {
		return 2, nil
	}
	if len(operands) < 2 {
		return c.fail(1, "need MODE and FILE")
	}
	code := 0
	for _, op := range operands[1:] {
		n, err := c.p.rt.fs.stat(c.cwd, op, true)
		if err != nil {
			c.fail(1, "%s: %s", op, errText(err))
			code = 1
			continue
		}
		perm, ok := applyMode(n.mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), operands[0])
		if !ok {
			return c.fail(1, "invalid mode '%s'", operands[0])
		}
		if err := c.p.rt.fs.chmod(c.cwd, op, perm); err != nil {
			c.fail(1, "%s: %s", op, errText(err))
			code = 1
		}
	}
	return code, nil
}

// applyMode applies an octal mode or a simple symbolic one ("+x", "u+rw", "go-w", "a=r").
func applyMode(cur fs.FileMode, spec string) (fs.FileMode, bool) {
	if m, ok := parseMode(spec); ok {
		return m, true
	}
	for _, clause := range strings.Split(spec, ",") {
		i := strings.IndexAny(clause, "+-=")
		if i < 0 {
			return 0, false
		}
		who, op, what := clause[:i], clause[i], clause[i+1:]
		if who == "" || who == "a" {
			who = "ugo"
		}
		var bits fs.FileMode
		for _, r := range what {
			var b fs.FileMode
			switch r {
			case 'r':
				b = 4
			case 'w':
				b = 2
			case 'x':
				b = 1
			default:
				return 0, false
			}
			for _, w := range who {
				switch w {
				case 'u':
					bits |= b << 6
				case 'g':
					bits |= b << 3
				case 'o':
					bits |= b
				default:
					return 0, false
				}
			}
		}
		switch op {
		case '+':
			cur |= bits
		case '-':
			cur &^= bits
		case '=':
			var mask fs.FileMode
			for _, w := range who {
				mask |= map[rune]fs.FileMode{'u': 0o700, 'g': 0o070, 'o': 0o007}[w]
			}
			cur = cur&^mask | bits
		}
	}
	return cur, true
}

func toolRm(_ context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "", "rfR")
	if !ok {
		return 2, nil
	}
	_, force := opts['f']
	_, r1 := opts['r']
	_, r2 := opts['R']
	return c.eachOperand(operands, "can't remove '%s'", func(op string) error {
		if err := c.p.rt.fs.remove(c.cwd, op, r1 || r2); err != nil && !(force && err == errNoEnt) {
			return err
		}
		return nil
	}), nil
}

// toolMv is mv [-f] SRC DST: one source, renamed (no copies across filesystems here).
func toolMv(_ context.Context, c *call) (int, error) {
	_, operands, ok := parseOpts(c, "", "f")
	if !ok {
		return 2, nil
	}
	if len(operands) != 2 {
		return c.fail(1, "want exactly SRC and DST")
	}
	if err := c.p.rt.fs.rename(c.cwd, operands[0], operands[1]); err != nil {
		return c.fail(1, "can't rename '%s': %s", operands[0], errText(err))
	}
	return 0, nil
}

func toolTouch(_ context.Context, c *call) (int, error) {
	_, operands, ok := parseOpts(c, "", "")
	if !ok {
		return 2, nil
	}
	return c.eachOperand(operands, "%s", func(op string) error { return c.p.rt.fs.touch(c.cwd, op) }), nil
}

func toolBasename(_ context.Context, c *call) (int, error) {
	if len(c.argv) < 2 {
		return c.fail(1, "missing operand")
	}
	b := path.Base(c.argv[1])
	if len(c.argv) > 2 {
		b = strings.TrimSuffix(b, c.argv[2])
	}
	_, err := io.WriteString(c.stdout, b+"\n")
	return 0, err
}

func toolDirname(_ context.Context, c *call) (int, error) {
	if len(c.argv) < 2 {
		return c.fail(1, "missing operand")
	}
	_, err := io.WriteString(c.stdout, path.Dir(c.argv[1])+"\n")
	return 0, err
}

func toolKill(_ context.Context, c *call) (int, error) {
	args := c.argv[1:]
	sig := 15
	if len(args) > 0 && strings.HasPrefix(args[0], "-") {
		name := strings.TrimPrefix(args[0], "-")
		args = args[1:]
		if name == "s" && len(args) > 0 {
			name, args = args[0], args[1:]
		}
		n, ok := signals[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
		if !ok {
			var err error
			if n, err = strconv.Atoi(name); err != nil || n < 0 || n > 64 {
				return c.fail(1, "bad signal name '%s'", name)
			}
		}
		sig = n
	}
	if len(args) == 0 {
		return c.fail(1, "usage: kill [-SIG] PID...")
	}
	code := 0
	for _, a := range args {
		pid, err := strconv.Atoi(a)
		if err != nil || !c.p.rt.kill(pid, sig) {
			c.fail(1, "can't kill pid %s: No such process", a)
			code = 1
		}
	}
	return code, nil
}

var signals = map[string]int{"0": 0, "HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "TERM": 15, "USR1": 10, "USR2": 12}

// toolStat supports -L and -c with %s %f %Y %n %a %F %%.
func toolStat(_ context.Context, c *call) (int, error) {
	opts, operands, ok := parseOpts(c, "c", "cL")
	if !ok {
		return 2, nil
	}
	if len(operands) == 0 {
		return c.fail(1, "missing operand")
	}
	format, custom := opts['c']
	_, follow := opts['L']
	code := 0
	var out strings.Builder
	for _, op := range operands {
		n, err := c.p.rt.fs.stat(c.cwd, op, follow)
		if err != nil {
			c.fail(1, "can't stat '%s': %s", op, errText(err))
			code = 1
			continue
		}
		if !custom {
			fmt.Fprintf(&out, "  File: %s\n  Size: %d\tType: %s\nAccess: (%04o)\nModify: %s\n",
				op, n.size(), fileType(&n), unixMode(n.mode)&0o7777, n.mtime.Format(time.RFC3339))
			continue
		}
		line, err := statFormat(format, op, &n)
		if err != nil {
			return c.fail(1, "%v", err)
		}
		out.WriteString(line + "\n")
	}
	_, err := io.WriteString(c.stdout, out.String())
	return code, err
}

func unixMode(m fs.FileMode) uint32 { return execfs.ToUnixMode(m) }

func fileType(n *node) string {
	switch {
	case n.isDir():
		return "directory"
	case n.isSymlink():
		return "symbolic link"
	case n.dev != devNone:
		return "character special file"
	case len(n.data) == 0:
		return "regular empty file"
	}
	return "regular file"
}

func statFormat(format, name string, n *node) (string, error) {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		switch format[i] {
		case 's':
			b.WriteString(strconv.FormatInt(n.size(), 10))
		case 'f':
			b.WriteString(strconv.FormatUint(uint64(unixMode(n.mode)), 16))
		case 'Y':
			b.WriteString(strconv.FormatInt(n.mtime.Unix(), 10))
		case 'n':
			b.WriteString(name)
		case 'a':
			b.WriteString(strconv.FormatUint(uint64(unixMode(n.mode)&0o7777), 8))
		case 'F':
			b.WriteString(fileType(n))
		case '%':
			b.WriteByte('%')
		default:
			return "", fmt.Errorf("unsupported format %%%c", format[i])
		}
	}
	return b.String(), nil
}

// toolTest implements test and [ with unary file and string tests, string and integer
// comparisons, '!' and a lone string.
func toolTest(_ context.Context, c *call) (int, error) {
	args := c.argv[1:]
	if path.Base(c.argv[0]) == "[" {
		if len(args) == 0 || args[len(args)-1] != "]" {
			return c.fail(2, "missing ]")
		}
		args = args[:len(args)-1]
	}
	neg := false
	for len(args) > 0 && args[0] == "!" && len(args) != 1 {
		neg, args = !neg, args[1:]
	}
	ok, err := c.evalTest(args)
	if err != nil {
		return c.fail(2, "%v", err)
	}
	return boolStatus(ok != neg), nil
}

func (c *call) evalTest(args []string) (bool, error) {
	switch len(args) {
	case 0:
		return false, nil
	case 1:
		return args[0] != "", nil
	case 2:
		op, arg := args[0], args[1]
		switch op {
		case "-n":
			return arg != "", nil
		case "-z":
			return arg == "", nil
		case "-L", "-h":
			n, err := c.p.rt.fs.stat(c.cwd, arg, false)
			return err == nil && n.isSymlink(), nil
		}
		n, err := c.p.rt.fs.stat(c.cwd, arg, true)
		exists := err == nil
		switch op {
		case "-e":
			return exists, nil
		case "-f":
			return exists && n.mode.IsRegular(), nil
		case "-d":
			return exists && n.isDir(), nil
		case "-s":
			return exists && n.size() > 0, nil
		case "-r", "-w":
			return exists, nil // the fake runs everything as root
		case "-x":
			return exists && n.mode&0o111 != 0, nil
		}
		return false, fmt.Errorf("unsupported test %s", op)
	case 3:
		a, op, b := args[0], args[1], args[2]
		switch op {
		case "=", "==":
			return a == b, nil
		case "!=":
			return a != b, nil
		}
		x, err1 := strconv.ParseInt(a, 10, 64)
		y, err2 := strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil {
			return false, fmt.Errorf("%s: integer expected", op)
		}
		switch op {
		case "-eq":
			return x == y, nil
		case "-ne":
			return x != y, nil
		case "-lt":
			return x < y, nil
		case "-le":
			return x <= y, nil
		case "-gt":
			return x > y, nil
		case "-ge":
			return x >= y, nil
		}
		return false, fmt.Errorf("unsupported operator %s", op)
	}
	return false, errors.New("unsupported expression (no -a/-o/parentheses)")
}

// toolFind supports paths, -mindepth, -maxdepth, -type f|d|l, -name PATTERN, -print,
// -print0 and -exec ... ; / -exec ... {} +, ANDed in order. Symlinks are not followed;
// entries are visited in name order.
func toolFind(ctx context.Context, c *call) (int, error) {
	args := c.argv[1:]
	var roots []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") && args[0] != "!" && args[0] != "(" {
		roots, args = append(roots, args[0]), args[1:]
	}
	if len(roots) == 0 {
		roots = []string{"."}
	}
	type primary struct {
		kind  string
		arg   string
		cmd   []string
		batch bool
	}
	var prims []primary
	minDepth, maxDepth := 0, -1
	hasAction := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		need := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s: argument required", a)
			}
			i++
			return args[i], nil
		}
		switch a {
		case "-mindepth", "-maxdepth":
			v, err := need()
			if err != nil {
				return c.fail(1, "%v", err)
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return c.fail(1, "bad number '%s'", v)
			}
			if a == "-mindepth" {
				minDepth = n
			} else {
				maxDepth = n
			}
		case "-type", "-name":
			v, err := need()
			if err != nil {
				return c.fail(1, "%v", err)
			}
			if a == "-type" && v != "f" && v != "d" && v != "l" {
				return c.fail(1, "unsupported -type %s", v)
			}
			prims = append(prims, primary{kind: a, arg: v})
		case "-print", "-print0":
			prims = append(prims, primary{kind: a})
			hasAction = true
		case "-exec":
			j := i + 1
			for j < len(args) && args[j] != ";" && !(args[j] == "+" && args[j-1] == "{}") {
				j++
			}
			if j >= len(args) || j == i+1 {
				return c.fail(1, "-exec: missing terminator ';' or '{} +'")
			}
			prims = append(prims, primary{kind: a, cmd: args[i+1 : j], batch: args[j] == "+"})
			hasAction = true
			i = j
		default:
			return c.fail(1, "unsupported expression %s", a)
		}
	}
	if !hasAction {
		prims = append(prims, primary{kind: "-print"})
	}
	batches := make([][]string, len(prims))
	code := 0
	var visit func(p string, depth int) error
	visit = func(p string, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := c.p.rt.fs.stat(c.cwd, p, false)
		if err != nil {
			c.fail(1, "%s: %s", p, errText(err))
			code = 1
			return nil
		}
		if depth >= minDepth {
		eval:
			for i, pr := range prims {
				switch pr.kind {
				case "-type":
					if !(pr.arg == "f" && n.mode.IsRegular() || pr.arg == "d" && n.isDir() || pr.arg == "l" && n.isSymlink()) {
						break eval
					}
				case "-name":
					if ok, _ := path.Match(pr.arg, path.Base(p)); !ok {
						break eval
					}
				case "-print":
					if _, err := io.WriteString(c.stdout, p+"\n"); err != nil {
						return err
					}
				case "-print0":
					if _, err := io.WriteString(c.stdout, p+"\x00"); err != nil {
						return err
					}
				case "-exec":
					if pr.batch {
						batches[i] = append(batches[i], p)
						continue
					}
					argv := slices.Clone(pr.cmd)
					for k := range argv {
						if argv[k] == "{}" {
							argv[k] = p
						}
					}
					st, err := c.runChild(ctx, argv)
					if err != nil {
						return err
					}
					if st != 0 {
						break eval
					}
				}
			}
		}
		if n.isDir() && (maxDepth < 0 || depth < maxDepth) {
			infos, err := c.p.rt.fs.readDir(c.cwd, p)
			if err != nil {
				c.fail(1, "%s: %s", p, errText(err))
				code = 1
				return nil
			}
			for _, fi := range infos {
				child := p + "/" + fi.Name
				if p == "/" {
					child = "/" + fi.Name
				}
				if err := visit(child, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := visit(r, 0); err != nil {
			return 0, err
		}
	}
	for i, pr := range prims {
		if !pr.batch || len(batches[i]) == 0 {
			continue
		}
		argv := append(slices.Clone(pr.cmd[:len(pr.cmd)-1]), batches[i]...)
		st, err := c.runChild(ctx, argv)
		if err != nil {
			return 0, err
		}
		if st != 0 {
			code = 1
		}
	}
	return code, nil
}

func (c *call) runChild(ctx context.Context, argv []string) (int, error) {
	st, err := c.p.rt.run(ctx, &call{argv: argv, env: c.env, cwd: c.cwd, stdin: c.stdin, stdout: c.stdout, stderr: c.stderr})
	if errors.Is(err, errNotFoundCmd) {
		c.fail(1, "%s: No such file or directory", argv[0])
		return 127, nil
	}
	return st, err
}

// toolPrintf supports escapes (\n \t \\ \NNN octal \xHH ...) and %s %b %d %i %o %x %X %c
// %u %% with flags and width; the format is reused while arguments remain.
func toolPrintf(_ context.Context, c *call) (int, error) {
	if len(c.argv) < 2 {
		return c.fail(1, "usage: printf FORMAT [ARGUMENT...]")
	}
	format, args := c.argv[1], c.argv[2:]
	var out strings.Builder
	for {
		used, err := printfOnce(&out, format, args)
		if err != nil {
			c.stdout.Write([]byte(out.String()))
			return c.fail(1, "%v", err)
		}
		args = args[used:]
		if used == 0 || len(args) == 0 {
			break
		}
	}
	_, err := io.WriteString(c.stdout, out.String())
	return 0, err
}

func printfOnce(out *strings.Builder, format string, args []string) (int, error) {
	used := 0
	next := func() string {
		if used < len(args) {
			used++
			return args[used-1]
		}
		return ""
	}
	for i := 0; i < len(format); i++ {
		ch := format[i]
		switch ch {
		case '\\':
			n := writeEscape(out, format[i:], false)
			i += n - 1
		case '%':
			j := i + 1
			for j < len(format) && strings.IndexByte("-+ #0123456789.", format[j]) >= 0 {
				j++
			}
			if j >= len(format) {
				return used, errors.New("missing format character")
			}
			spec := format[i:j]
			switch verb := format[j]; verb {
			case '%':
				out.WriteByte('%')
			case 's':
				fmt.Fprintf(out, spec+"s", next())
			case 'b':
				arg := next()
				var b strings.Builder
				for k := 0; k < len(arg); k++ {
					if arg[k] == '\\' {
						k += writeEscape(&b, arg[k:], true) - 1
					} else {
						b.WriteByte(arg[k])
					}
				}
				fmt.Fprintf(out, spec+"s", b.String())
			case 'c':
				if a := next(); a != "" {
					out.WriteByte(a[0])
				}
			case 'd', 'i', 'o', 'x', 'X', 'u':
				a := next()
				n, err := strconv.ParseInt(a, 0, 64)
				if a == "" {
					n, err = 0, nil
				}
				if err != nil {
					return used, fmt.Errorf("invalid number '%s'", a)
				}
				v := map[byte]string{'d': "d", 'i': "d", 'u': "d", 'o': "o", 'x': "x", 'X': "X"}[verb]
				fmt.Fprintf(out, spec+v, n)
			default:
				return used, fmt.Errorf("%%%c: invalid format", verb)
			}
			i = j
		default:
			out.WriteByte(ch)
		}
	}
	return used, nil
}

// writeEscape writes the escape sequence at s[0] == '\\' and returns its length.
// In %b arguments (bArg) octal escapes are \0NNN, in formats \NNN.
func writeEscape(out *strings.Builder, s string, bArg bool) int {
	if len(s) < 2 {
		out.WriteByte('\\')
		return 1
	}
	switch c := s[1]; c {
	case 'n':
		out.WriteByte('\n')
	case 't':
		out.WriteByte('\t')
	case 'r':
		out.WriteByte('\r')
	case 'a':
		out.WriteByte('\a')
	case 'b':
		out.WriteByte('\b')
	case 'f':
		out.WriteByte('\f')
	case 'v':
		out.WriteByte('\v')
	case '\\', '"', '\'':
		out.WriteByte(c)
	case 'x':
		j := 2
		for j < len(s) && j < 4 && strings.IndexByte("0123456789abcdefABCDEF", s[j]) >= 0 {
			j++
		}
		if j == 2 {
			out.WriteString(`\x`)
			return 2
		}
		v, _ := strconv.ParseUint(s[2:j], 16, 8)
		out.WriteByte(byte(v))
		return j
	case '0', '1', '2', '3', '4', '5', '6', '7':
		j := 1
		limit := 4 // up to three digits
		if c == '0' && bArg {
			limit = 5
		}
		for j < len(s) && j < limit && s[j] >= '0' && s[j] <= '7' {
			j++
		}
		v, _ := strconv.ParseUint(s[1:j], 8, 16)
		out.WriteByte(byte(v))
		return j
	default:
		out.WriteByte('\\')
		out.WriteByte(c)
	}
	return 2
}
