package fake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The fake's sh is a small POSIX shell subset, enough for the conformance suite, execfs and
// typical test scripts, and strict about the rest: anything outside the subset is a syntax
// error ("fake: sh: unsupported ..."), never a silent misreading.
//
// Supported: simple commands; NAME=value assignments (alone or as a command prefix); ';',
// newlines, '&&', '||', '!' and '|' pipelines; single and double quotes and backslash
// escapes; $NAME ${NAME} $0-$9 $# $@ "$@" $* $$ $? with field splitting of unquoted
// expansions; redirections > >> < N> N>> N>&M N<&M; # comments; special builtins exit, exec,
// cd, export, set --, ':' .
// Not supported: if/for/while/case/functions, subshells and { } groups, '&', command
// substitution, arithmetic, globbing (a '*' stays literal), here-documents.

// wordPart is a literal run or a parameter expansion inside one shell word.
type wordPart struct {
	lit    string
	param  string // parameter name when this part is an expansion
	quoted bool
}

type word []wordPart

// literal reports the word's text when it has no expansions and no quoting.
func (w word) literal() (string, bool) {
	var b strings.Builder
	for _, p := range w {
		if p.param != "" || p.quoted {
			return "", false
		}
		b.WriteString(p.lit)
	}
	return b.String(), true
}

type token struct {
	op string // operator; "" for a word
	fd int    // redirection source fd, -1 for the default
	w  word
}

type redir struct {
	fd     int
	op     string // ">", ">>", "<", ">&", "<&"
	target word
}

type simpleCmd struct {
	assigns []word // NAME=value prefixes (the whole word, split at the first '=')
	words   []word
	redirs  []redir
}

type pipeline struct {
	neg  bool
	cmds []*simpleCmd
}

type andOr struct {
	pipes []*pipeline
	ops   []string // ops[i] joins pipes[i] and pipes[i+1]: "&&" or "||"
}

type syntaxError struct{ msg string }

func (e *syntaxError) Error() string { return "syntax error: " + e.msg }

func unsupported(what string) error { return &syntaxError{msg: "unsupported " + what} }

func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isNameChar(c byte) bool  { return isNameStart(c) || c >= '0' && c <= '9' }

// lex splits a script into words and operators.
func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t':
			i++
			continue
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			i += 2
			continue
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			continue
		case c == '\n' || c == ';':
			if strings.HasPrefix(src[i:], ";;") {
				return nil, unsupported("';;'")
			}
			toks = append(toks, token{op: string(c), fd: -1})
			i++
			continue
		case c == '&':
			if strings.HasPrefix(src[i:], "&&") {
				toks = append(toks, token{op: "&&", fd: -1})
				i += 2
				continue
			}
			return nil, unsupported("background '&'")
		case c == '|':
			if strings.HasPrefix(src[i:], "||") {
				toks = append(toks, token{op: "||", fd: -1})
				i += 2
			} else {
				toks = append(toks, token{op: "|", fd: -1})
				i++
			}
			continue
		case c == '>' || c == '<':
			op, n := lexRedir(src[i:])
			if op == "" {
				return nil, unsupported("redirection " + strconv.Quote(src[i:min(i+3, len(src))]))
			}
			toks = append(toks, token{op: op, fd: -1})
			i += n
			continue
		case c == '(' || c == ')' || c == '`':
			return nil, unsupported(strconv.Quote(string(c)))
		}
		w, n, err := lexWord(src[i:])
		if err != nil {
			return nil, err
		}
		i += n
		// "2>" : an all-digit unquoted word right before a redirection is its fd.
		if lit, ok := w.literal(); ok && i < len(src) && (src[i] == '>' || src[i] == '<') && allDigits(lit) {
			op, n := lexRedir(src[i:])
			if op == "" {
				return nil, unsupported("redirection")
			}
			fd, _ := strconv.Atoi(lit)
			if fd > 2 {
				return nil, unsupported("file descriptor " + lit)
			}
			toks = append(toks, token{op: op, fd: fd})
			i += n
			continue
		}
		toks = append(toks, token{w: w, fd: -1})
	}
	return toks, nil
}

func lexRedir(s string) (string, int) {
	for _, op := range []string{">>", ">&", "<&", ">", "<"} {
		if strings.HasPrefix(s, op) {
			if strings.HasPrefix(s, "<<") || strings.HasPrefix(s, "<>") || strings.HasPrefix(s, ">|") {
				return "", 0
			}
			return op, len(op)
		}
	}
	return "", 0
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// lexWord reads one word and returns it with the number of bytes consumed.
func lexWord(s string) (word, int, error) {
	var w word
	var lit strings.Builder
	flush := func(quoted bool) {
		if lit.Len() > 0 || quoted {
			w = append(w, wordPart{lit: lit.String(), quoted: quoted})
			lit.Reset()
		}
	}
	i := 0
	// param reads the parameter expansion at s[i] == '$' (a lone '$' is literal).
	param := func(quoted bool) error {
		name, n, err := lexParam(s[i:])
		if err != nil {
			return err
		}
		if name == "" {
			lit.WriteByte('$')
			i++
			return nil
		}
		flush(quoted)
		w = append(w, wordPart{param: name, quoted: quoted})
		i += n
		return nil
	}
loop:
	for i < len(s) {
		c := s[i]
		switch c {
		case ' ', '\t', '\n', ';', '&', '|', '<', '>', '(', ')':
			break loop
		case '`':
			return nil, 0, unsupported("command substitution")
		case '\\':
			if i+1 < len(s) {
				lit.WriteByte(s[i+1])
				i += 2
			} else {
				i++
			}
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, 0, &syntaxError{msg: "unterminated quoted string"}
			}
			flush(false)
			lit.WriteString(s[i+1 : i+1+end])
			flush(true)
			i += end + 2
		case '"':
			flush(false)
			i++
			closed := false
			for i < len(s) {
				d := s[i]
				if d == '"' {
					closed = true
					i++
					break
				}
				switch d {
				case '\\':
					if i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
						if s[i+1] != '\n' {
							lit.WriteByte(s[i+1])
						}
						i += 2
						continue
					}
					lit.WriteByte(d)
					i++
				case '`':
					return nil, 0, unsupported("command substitution")
				case '$':
					if err := param(true); err != nil {
						return nil, 0, err
					}
				default:
					lit.WriteByte(d)
					i++
				}
			}
			if !closed {
				return nil, 0, &syntaxError{msg: "unterminated quoted string"}
			}
			flush(true)
		case '$':
			if err := param(false); err != nil {
				return nil, 0, err
			}
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush(false)
	return w, i, nil
}

// lexParam reads a parameter expansion at s[0] == '$'. An empty name means a literal '$'.
func lexParam(s string) (string, int, error) {
	if len(s) < 2 {
		return "", 0, nil
	}
	c := s[1]
	switch {
	case c == '(':
		return "", 0, unsupported("command substitution")
	case c == '{':
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0, &syntaxError{msg: "missing '}'"}
		}
		name := s[2:end]
		if !validParam(name) {
			return "", 0, unsupported("parameter expansion ${" + name + "}")
		}
		return name, end + 1, nil
	case c >= '0' && c <= '9', strings.IndexByte("#@*$?", c) >= 0:
		return string(c), 2, nil
	case c == '!' || c == '-':
		return "", 0, unsupported("parameter $" + string(c))
	case isNameStart(c):
		j := 2
		for j < len(s) && isNameChar(s[j]) {
			j++
		}
		return s[1:j], j, nil
	}
	return "", 0, nil
}

func validParam(name string) bool {
	if allDigits(name) || len(name) == 1 && strings.IndexByte("#@*$?", name[0]) >= 0 {
		return true
	}
	if name == "" || !isNameStart(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if !isNameChar(name[i]) {
			return false
		}
	}
	return true
}

var reserved = map[string]bool{"if": true, "then": true, "else": true, "elif": true, "fi": true,
	"for": true, "while": true, "until": true, "do": true, "done": true, "case": true, "esac": true,
	"function": true, "{": true, "}": true, "[[": true}

// parse turns tokens into and-or lists.
func parse(toks []token) ([]*andOr, error) {
	p := &parser{toks: toks}
	var list []*andOr
	for {
		p.skipSeparators()
		if p.eof() {
			return list, nil
		}
		ao, err := p.andOr()
		if err != nil {
			return nil, err
		}
		list = append(list, ao)
		if !p.eof() && p.peek().op != ";" && p.peek().op != "\n" {
			return nil, &syntaxError{msg: "unexpected " + strconv.Quote(p.peek().op)}
		}
	}
}

type parser struct {
	toks []token
	i    int
}

func (p *parser) eof() bool   { return p.i >= len(p.toks) }
func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token { t := p.toks[p.i]; p.i++; return t }
func (p *parser) skipNewlines() {
	for !p.eof() && p.peek().op == "\n" {
		p.i++
	}
}

func (p *parser) skipSeparators() {
	for !p.eof() && (p.peek().op == "\n" || p.peek().op == ";") {
		p.i++
	}
}

func (p *parser) andOr() (*andOr, error) {
	ao := &andOr{}
	for {
		pl, err := p.pipeline()
		if err != nil {
			return nil, err
		}
		ao.pipes = append(ao.pipes, pl)
		if p.eof() || (p.peek().op != "&&" && p.peek().op != "||") {
			return ao, nil
		}
		ao.ops = append(ao.ops, p.next().op)
		p.skipNewlines()
	}
}

func (p *parser) pipeline() (*pipeline, error) {
	pl := &pipeline{}
	if !p.eof() && p.peek().op == "" {
		if lit, ok := p.peek().w.literal(); ok && lit == "!" {
			pl.neg = true
			p.i++
		}
	}
	for {
		c, err := p.command()
		if err != nil {
			return nil, err
		}
		pl.cmds = append(pl.cmds, c)
		if p.eof() || p.peek().op != "|" {
			return pl, nil
		}
		p.i++
		p.skipNewlines()
	}
}

func (p *parser) command() (*simpleCmd, error) {
	c := &simpleCmd{}
	for !p.eof() {
		t := p.peek()
		switch t.op {
		case "":
			p.i++
			if len(c.words) == 0 {
				if lit, ok := t.w.literal(); ok {
					if reserved[lit] {
						return nil, unsupported("keyword " + strconv.Quote(lit))
					}
					if eq := strings.IndexByte(lit, '='); eq > 0 && validName(lit[:eq]) {
						c.assigns = append(c.assigns, t.w)
						continue
					}
				} else if isAssignment(t.w) {
					c.assigns = append(c.assigns, t.w)
					continue
				}
			}
			c.words = append(c.words, t.w)
		case ">", ">>", "<", ">&", "<&":
			p.i++
			if p.eof() || p.peek().op != "" {
				return nil, &syntaxError{msg: "missing redirection target"}
			}
			fd := t.fd
			if fd < 0 {
				fd = 1
				if t.op[0] == '<' {
					fd = 0
				}
			}
			c.redirs = append(c.redirs, redir{fd: fd, op: t.op, target: p.next().w})
		default:
			if len(c.words) == 0 && len(c.assigns) == 0 && len(c.redirs) == 0 {
				return nil, &syntaxError{msg: "unexpected " + strconv.Quote(t.op)}
			}
			return c, nil
		}
	}
	if len(c.words) == 0 && len(c.assigns) == 0 && len(c.redirs) == 0 {
		return nil, &syntaxError{msg: "unexpected end of script"}
	}
	return c, nil
}

func validName(s string) bool {
	if s == "" || !isNameStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isNameChar(s[i]) {
			return false
		}
	}
	return true
}

// isAssignment reports whether w starts with an unquoted NAME= (value may be quoted).
func isAssignment(w word) bool {
	if len(w) == 0 || w[0].param != "" || w[0].quoted {
		return false
	}
	eq := strings.IndexByte(w[0].lit, '=')
	return eq > 0 && validName(w[0].lit[:eq])
}

// shell is one running sh process.
type shell struct {
	p      *process
	vars   map[string]string
	export map[string]bool // names of vars passed to commands
	cwd    string
	args   []string // $0 $1 ...
	status int
	stdio  [3]any // io.Reader for 0, io.Writer for 1 and 2
}

// exitError unwinds the shell on `exit N` and after `exec`.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// runScript parses and runs src, returning the exit status.
func (s *shell) runScript(ctx context.Context, src string) (int, error) {
	toks, err := lex(src)
	var list []*andOr
	if err == nil {
		list, err = parse(toks)
	}
	if err != nil {
		fmt.Fprintf(s.stderr(), "sh: %v\n", err)
		return 2, nil
	}
	for _, ao := range list {
		if err := s.runAndOr(ctx, ao); err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return ee.code, nil
			}
			return 0, err
		}
	}
	return s.status, nil
}

func (s *shell) stderr() io.Writer { return s.stdio[2].(io.Writer) }

func (s *shell) runAndOr(ctx context.Context, ao *andOr) error {
	for i, pl := range ao.pipes {
		if i > 0 {
			if ao.ops[i-1] == "&&" && s.status != 0 || ao.ops[i-1] == "||" && s.status == 0 {
				continue
			}
		}
		if err := s.runPipeline(ctx, pl); err != nil {
			return err
		}
		// A signal to this shell (kill $$, Stop, Destroy) ends it after the current command.
		if err := s.p.checkKilled(); err != nil {
			return err
		}
	}
	return nil
}

func (s *shell) runPipeline(ctx context.Context, pl *pipeline) error {
	var code int
	var err error
	if len(pl.cmds) == 1 {
		code, err = s.runSimple(ctx, pl.cmds[0])
	} else {
		code, err = s.runPipe(ctx, pl.cmds)
	}
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) {
			return err
		}
		s.status = ee.code
		return err
	}
	if pl.neg {
		code = boolStatus(code != 0)
	}
	s.status = code
	return nil
}

func boolStatus(ok bool) int {
	if ok {
		return 0
	}
	return 1
}

// runPipe runs cmds concurrently joined by pipes; each runs in a copy of the shell, as in a
// subshell, and the status is the last one's.
func (s *shell) runPipe(ctx context.Context, cmds []*simpleCmd) (int, error) {
	type res struct {
		code int
		err  error
	}
	results := make([]chan res, len(cmds))
	var in io.Reader = s.stdio[0].(io.Reader)
	for i, c := range cmds {
		sub := s.subshell()
		sub.stdio[0] = in
		var pw *io.PipeWriter
		if i < len(cmds)-1 {
			var pr *io.PipeReader
			pr, pw = io.Pipe()
			sub.stdio[1] = pw
			in = pr
			defer pr.Close()
		}
		results[i] = make(chan res, 1)
		go func() {
			code, err := sub.runSimple(ctx, c)
			var ee *exitError
			if errors.As(err, &ee) {
				code, err = ee.code, nil
			}
			if pw != nil && errors.Is(err, io.ErrClosedPipe) {
				code, err = 128+13, nil // SIGPIPE: the reader went away
			}
			if pw != nil {
				pw.Close()
			}
			if r, ok := sub.stdio[0].(*io.PipeReader); ok && i > 0 {
				// The reader is done: writers upstream get a broken pipe, not a hang.
				r.CloseWithError(io.ErrClosedPipe)
			}
			results[i] <- res{code, err}
		}()
	}
	var last res
	var firstErr error
	for i := range results {
		r := <-results[i]
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		last = r
	}
	return last.code, firstErr
}

func (s *shell) subshell() *shell {
	vars := make(map[string]string, len(s.vars))
	for k, v := range s.vars {
		vars[k] = v
	}
	export := make(map[string]bool, len(s.export))
	for k, v := range s.export {
		export[k] = v
	}
	return &shell{p: s.p, vars: vars, export: export, cwd: s.cwd, args: s.args, status: s.status, stdio: s.stdio}
}

// expand expands w into fields.
func (s *shell) expand(w word) []string {
	var fields []string
	var cur strings.Builder
	have := false
	for _, part := range w {
		if part.param == "" {
			cur.WriteString(part.lit)
			have = true
			continue
		}
		if part.param == "@" && part.quoted {
			for i, a := range s.args[1:] {
				if i > 0 {
					fields = append(fields, cur.String())
					cur.Reset()
				}
				cur.WriteString(a)
				have = true
			}
			continue
		}
		val := s.param(part.param)
		if part.quoted {
			cur.WriteString(val)
			have = true
			continue
		}
		// Unquoted: split on whitespace (the default IFS).
		for i := 0; i < len(val); {
			if isIFS(val[i]) {
				if have {
					fields = append(fields, cur.String())
					cur.Reset()
					have = false
				}
				i++
				continue
			}
			j := i
			for j < len(val) && !isIFS(val[j]) {
				j++
			}
			cur.WriteString(val[i:j])
			have = true
			i = j
		}
	}
	if have {
		fields = append(fields, cur.String())
	}
	return fields
}

// expandOne expands w into a single string (assignments, redirection targets).
func (s *shell) expandOne(w word) string {
	var b strings.Builder
	for _, part := range w {
		if part.param == "" {
			b.WriteString(part.lit)
		} else {
			b.WriteString(s.param(part.param))
		}
	}
	return b.String()
}

func isIFS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

func (s *shell) param(name string) string {
	switch name {
	case "?":
		return strconv.Itoa(s.status)
	case "$":
		return strconv.Itoa(s.p.pid)
	case "#":
		return strconv.Itoa(len(s.args) - 1)
	case "@", "*":
		return strings.Join(s.args[1:], " ")
	}
	if allDigits(name) {
		n, _ := strconv.Atoi(name)
		if n < len(s.args) {
			return s.args[n]
		}
		return ""
	}
	return s.vars[name]
}

// runSimple runs one simple command with its redirections.
func (s *shell) runSimple(ctx context.Context, c *simpleCmd) (int, error) {
	var argv []string
	for _, w := range c.words {
		argv = append(argv, s.expand(w)...)
	}
	assigns := map[string]string{}
	for _, w := range c.assigns {
		v := s.expandOne(w)
		eq := strings.IndexByte(v, '=')
		assigns[v[:eq]] = v[eq+1:]
	}
	stdio := s.stdio
	var closers []func()
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	for _, r := range c.redirs {
		target := s.expandOne(r.target)
		switch r.op {
		case ">&", "<&":
			src, err := strconv.Atoi(target)
			if err != nil || src > 2 {
				fmt.Fprintf(s.stderr(), "sh: %s: bad file descriptor\n", target)
				return 1, nil
			}
			stdio[r.fd] = stdio[src]
		case "<":
			rd, err := s.p.rt.fs.open(s.cwd, target)
			if err != nil {
				fmt.Fprintf(s.stderr(), "sh: can't open %s: %s\n", target, errText(err))
				return 1, nil
			}
			stdio[r.fd] = rd
		case ">", ">>":
			n, err := s.p.rt.fs.create(s.cwd, target, 0o644, r.op == ">")
			if err != nil {
				fmt.Fprintf(s.stderr(), "sh: can't create %s: %s\n", target, errText(err))
				return 1, nil
			}
			stdio[r.fd] = &fileWriter{fs: s.p.rt.fs, n: n}
		}
	}
	if len(argv) == 0 {
		for k, v := range assigns {
			s.vars[k] = v
		}
		return 0, nil
	}
	switch argv[0] {
	case "exit":
		code := s.status
		if len(argv) > 1 {
			n, err := strconv.Atoi(argv[1])
			if err != nil {
				fmt.Fprintf(stdio[2].(io.Writer), "sh: exit: illegal number: %s\n", argv[1])
				return 2, nil
			}
			code = n & 0xff
		}
		return code, &exitError{code: code}
	case "exec":
		if len(argv) == 1 {
			return 0, unsupported("exec without a command")
		}
		code, err := s.runExternal(ctx, argv[1:], assigns, stdio)
		if err != nil {
			return code, err
		}
		return code, &exitError{code: code}
	case "cd":
		dir := s.vars["HOME"]
		if len(argv) > 1 && argv[1] == "--" {
			argv = argv[1:]
		}
		if len(argv) > 1 {
			dir = argv[1]
		}
		if dir == "" {
			dir = "/"
		}
		abs := absPath(s.cwd, dir)
		n, err := s.p.rt.fs.stat(s.cwd, abs, true)
		if err == nil && !n.isDir() {
			err = errNotDir
		}
		if err != nil {
			fmt.Fprintf(stdio[2].(io.Writer), "sh: cd: can't cd to %s: %s\n", dir, errText(err))
			return 2, nil
		}
		s.cwd = abs
		return 0, nil
	case "export":
		for _, a := range argv[1:] {
			name, val, set := strings.Cut(a, "=")
			if !validName(name) {
				fmt.Fprintf(stdio[2].(io.Writer), "sh: export: bad variable name %s\n", name)
				return 1, nil
			}
			if set {
				s.vars[name] = val
			}
			s.export[name] = true
		}
		return 0, nil
	case "set":
		if len(argv) > 1 && argv[1] == "--" {
			s.args = append([]string{s.args[0]}, argv[2:]...)
			return 0, nil
		}
		return 0, unsupported("set options")
	case ":":
		return 0, nil
	}
	return s.runExternal(ctx, argv, assigns, stdio)
}

// runExternal runs a builtin tool or user command as a child process of this shell.
func (s *shell) runExternal(ctx context.Context, argv []string, assigns map[string]string, stdio [3]any) (int, error) {
	env := make(map[string]string, len(s.export)+len(assigns))
	for k := range s.export {
		if v, ok := s.vars[k]; ok {
			env[k] = v
		}
	}
	for k, v := range assigns {
		env[k] = v
	}
	code, err := s.p.rt.run(s.p.ctx, &call{
		argv: argv, env: env, cwd: s.cwd,
		stdin: stdio[0].(io.Reader), stdout: stdio[1].(io.Writer), stderr: stdio[2].(io.Writer),
	})
	if errors.Is(err, errNotFoundCmd) {
		fmt.Fprintf(stdio[2].(io.Writer), "sh: %s: not found\n", argv[0])
		return 127, nil
	}
	return code, err
}

// fileWriter appends to a file in the in-memory filesystem.
type fileWriter struct {
	fs *memfs
	n  *node
}

func (w *fileWriter) Write(p []byte) (int, error) {
	w.fs.appendTo(w.n, p)
	return len(p), nil
}
