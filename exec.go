package moat

import (
	"io"
	"strings"
	"unicode/utf8"

	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/errdefs"
)

// DefaultMaxOutput caps each captured stream (stdout, stderr) when ExecRequest leaves
// MaxOutputBytes at zero and gives no writer of its own.
const DefaultMaxOutput = moattype.DefaultMaxOutput

// ExecRequest is one command (moattype.ExecRequest). Cmd is argv and runs without a shell;
// Shell runs sh -c Shell. Exactly one of them is set.
type ExecRequest = moattype.ExecRequest

// ExitResult is how a command ended.
type ExitResult = moattype.ExitResult

// argvOf returns the argv r asks for: Cmd, or sh -c Shell.
func argvOf(r *ExecRequest) ([]string, error) {
	switch {
	case len(r.Cmd) > 0 && r.Shell != "":
		return nil, errdefs.InvalidArgumentf("moat: exec: set either cmd or shell, not both")
	case r.Shell != "":
		if strings.ContainsRune(r.Shell, 0) {
			return nil, errdefs.InvalidArgumentf("moat: exec: shell command contains a NUL byte")
		}
		return []string{"sh", "-c", r.Shell}, nil
	case len(r.Cmd) == 0:
		return nil, errdefs.InvalidArgumentf("moat: exec: empty command")
	case r.Cmd[0] == "":
		return nil, errdefs.InvalidArgumentf("moat: exec: empty program name")
	}
	for _, a := range r.Cmd {
		if strings.ContainsRune(a, 0) {
			return nil, errdefs.InvalidArgumentf("moat: exec: argument %q contains a NUL byte", clip(a))
		}
	}
	return append([]string(nil), r.Cmd...), nil
}

// checkArgSize checks that argv and env fit what every backend can start (see
// moattype.MaxArgBytes): each string within MaxArgStringBytes, all of them together within
// MaxArgBytes.
func checkArgSize(argv []string, env map[string]string) error {
	n := envBytes(env)
	for _, a := range argv {
		if len(a) > moattype.MaxArgStringBytes {
			return errdefs.InvalidArgumentf("moat: exec: an argument of %d bytes is over the limit of %d", len(a), moattype.MaxArgStringBytes)
		}
		n += len(a) + 1
	}
	if n > moattype.MaxArgBytes {
		return errdefs.InvalidArgumentf("moat: exec: argv and environment take %d bytes, over the limit of %d", n, moattype.MaxArgBytes)
	}
	return nil
}

// capWriter passes at most max bytes to w and drains the rest, so a chatty command is never
// blocked on a full pipe. It holds back the bytes of a trailing incomplete UTF-8 sequence
// until the next write (or Close) so that a cut at the cap never splits a character.
// Bytes that are not UTF-8 at all pass through unchanged.
type capWriter struct {
	w         io.Writer
	max       int64 // < 0: unlimited
	written   int64
	pending   []byte // start of a possibly incomplete UTF-8 sequence
	truncated bool
	err       error // first error from w; later writes are dropped
}

func newCapWriter(w io.Writer, max int64) *capWriter { return &capWriter{w: w, max: max} }

func (c *capWriter) Write(p []byte) (int, error) {
	n := len(p)
	if c.truncated || c.err != nil {
		return n, nil
	}
	buf := p
	if len(c.pending) > 0 {
		buf = append(c.pending, p...)
		c.pending = nil
	}
	// Hold back a trailing incomplete sequence.
	if k := incompleteTail(buf); k > 0 {
		c.pending = append([]byte(nil), buf[len(buf)-k:]...)
		buf = buf[:len(buf)-k]
	}
	c.emit(buf)
	return n, nil
}

// emit writes buf within the cap.
func (c *capWriter) emit(buf []byte) {
	if c.max >= 0 && c.written+int64(len(buf)) > c.max {
		allowed := int(c.max - c.written)
		cut := allowed
		// Back up to a character boundary when the cut lands inside a valid character.
		for cut > 0 && cut > allowed-utf8.UTFMax && !utf8.RuneStart(buf[cut]) {
			cut--
		}
		if !utf8.RuneStart(buf[cut]) {
			cut = allowed // not UTF-8 around the cut: cut exactly
		}
		buf = buf[:cut]
		c.truncated = true
		c.pending = nil
	}
	if len(buf) == 0 {
		return
	}
	if _, err := c.w.Write(buf); err != nil {
		c.err = err
		return
	}
	c.written += int64(len(buf))
}

// Close flushes held-back bytes.
func (c *capWriter) Close() error {
	if len(c.pending) > 0 && !c.truncated && c.err == nil {
		p := c.pending
		c.pending = nil
		c.emit(p)
	}
	return c.err
}

// incompleteTail returns how many trailing bytes of b start a UTF-8 sequence that b ends
// before completing (0 when b ends on a boundary or the tail is not UTF-8).
func incompleteTail(b []byte) int {
	for k := 1; k <= utf8.UTFMax-1 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < utf8.RuneSelf {
			return 0
		}
		if utf8.RuneStart(c) {
			need := 0
			switch {
			case c&0xE0 == 0xC0:
				need = 2
			case c&0xF0 == 0xE0:
				need = 3
			case c&0xF8 == 0xF0:
				need = 4
			default:
				return 0
			}
			if need > k {
				return k
			}
			return 0
		}
	}
	return 0
}
