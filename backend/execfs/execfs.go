// Package execfs answers "how do I move files in and out of a sandbox that can only run
// commands?": a backend.FileTransferer built from any backend.Instance by running small,
// fixed POSIX shell scripts inside it (sh, cat, mkdir, chmod, rm, mv, test, find, stat — all
// present in busybox and Debian). User data never becomes part of a script: paths and modes
// are passed as positional arguments ("$1", "$2", ...). Besides backend.FileTransferer it
// is a backend.FileRemover and a backend.DirMaker.
package execfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Exit codes the scripts use to say why they refused, chosen away from what cat, mkdir and
// chmod return (1) so the kind of failure is never guessed from a message.
const (
	exitNotFound = 66
	exitIsDir    = 67
	exitNotDir   = 68
	exitExists   = 69
)

// The fixed scripts. Each runs as: sh -c SCRIPT sh ARG1 ARG2 ...
const (
	// writeScript: $1 path, $2 octal mode, $3 parent directory, $4 a temporary file in it.
	// The content goes to $4; commitScript renames it over $1 only once all of the input
	// arrived, so a failed or cut-off upload leaves the old file as it was.
	writeScript = `[ -d "$1" ] && exit 67; mkdir -p -- "$3" || exit 1; ` +
		`cat > "$4" && chmod "$2" "$4" && exit 0; rm -f -- "$4"; exit 1`
	// commitScript: $1 temporary file, $2 path.
	commitScript = `[ -d "$2" ] && rm -f -- "$1"; [ -d "$2" ] && exit 67; mv -f -- "$1" "$2" && exit 0; rm -f -- "$1"; exit 1`
	// discardScript: $1 temporary file.
	discardScript = `exec rm -f -- "$1"`
	// readScript: $1 path. The checks come first so that a missing file or a directory is
	// told apart from a failing cat.
	readScript = `[ -e "$1" ] || exit 66; [ -d "$1" ] && exit 67; exec cat -- "$1"`
	// listScript: $1 directory. For each entry stat prints "size rawmode-hex mtime\n" and
	// find then prints the path NUL-terminated, so names may hold spaces, newlines and any
	// UTF-8: the metadata line never holds a newline and a path never holds a NUL. An entry
	// that vanishes between readdir and stat fails its -exec and is skipped whole.
	// It cds first so that a directory reached through a symlink is listed, not the link.
	listScript = `[ -e "$1" ] || exit 66; [ -d "$1" ] || exit 68; cd -- "$1" || exit 1; ` +
		`exec find . -mindepth 1 -maxdepth 1 -exec stat -c '%s %f %Y' -- {} ';' -print0`
	// removeScript: $1 path, $2 "1" for recursive. A symlink is removed itself, whatever it
	// points at; a directory only when recursive.
	removeScript = `[ -e "$1" ] || [ -L "$1" ] || exit 66; [ -L "$1" ] && exec rm -f -- "$1"; ` +
		`[ -d "$1" ] && [ "$2" != 1 ] && exit 67; exec rm -rf -- "$1"`
	// mkdirScript: $1 path, $2 octal mode. A directory (or a link to one) there is fine;
	// anything else is refused before mkdir runs.
	mkdirScript = `[ -d "$1" ] && exit 0; [ -e "$1" ] && exit 69; [ -L "$1" ] && exit 69; ` +
		`mkdir -p -- "$1" && exec chmod "$2" "$1"`
)

// maxStderr caps how much of a script's stderr is kept for error messages.
const maxStderr = 4 << 10

// FS is a backend.FileTransferer that works by running commands in an Instance.
type FS struct {
	inst backend.Instance
}

// New returns an FS that moves files through inst.Exec.
func New(inst backend.Instance) *FS {
	return &FS{inst: inst}
}

// WriteFile creates or replaces the file at p with r's bytes and mode's permission bits,
// creating missing parent directories.
func (f *FS) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	if r == nil {
		r = strings.NewReader("")
	}
	perm := strconv.FormatUint(uint64(unixPerm(mode)), 8)
	tmp := path.Join(path.Dir(p), ".moat-write-"+randSuffix())
	// A backend may see a failing reader as the end of its input: the reader's own error
	// decides whether the temporary file is committed.
	in := &errReader{r: r}
	var stderr capBuffer
	code, err := f.inst.Exec(ctx, &backend.ExecRequest{
		Argv:    []string{"sh", "-c", writeScript, "sh", p, perm, path.Dir(p), tmp},
		Workdir: "/",
		Stdin:   in,
		Stdout:  io.Discard,
		Stderr:  &stderr,
	})
	if err == nil && code == 0 {
		if err = in.err; err == nil {
			err = ctx.Err()
		}
		if err == nil {
			code, errOut, cerr := f.run(ctx, commitScript, tmp, p)
			switch {
			case cerr != nil:
				err = cerr
			case code == exitIsDir:
				return errdefs.InvalidArgumentf("execfs: write %s: is a directory", p)
			case code != 0:
				return scriptError("write", p, code, errOut)
			default:
				return nil
			}
		}
	}
	// Best effort: the temporary file must not outlive a failed write.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	_, _, _ = f.run(dctx, discardScript, tmp)
	cancel()
	if err != nil {
		return fmt.Errorf("execfs: write %s: %w", p, err)
	}
	switch code {
	case exitIsDir:
		return errdefs.InvalidArgumentf("execfs: write %s: is a directory", p)
	}
	return scriptError("write", p, code, &stderr)
}

// errReader remembers the first error other than EOF its reader returned.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// randSuffix names a temporary file.
func randSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ReadFile copies the file at p to w: NotFound when it does not exist, InvalidArgument when
// it is a directory.
func (f *FS) ReadFile(ctx context.Context, p string, w io.Writer) error {
	var stderr capBuffer
	code, err := f.inst.Exec(ctx, &backend.ExecRequest{
		Argv:    []string{"sh", "-c", readScript, "sh", p},
		Workdir: "/",
		Stdout:  w,
		Stderr:  &stderr,
	})
	if err != nil {
		return fmt.Errorf("execfs: read %s: %w", p, err)
	}
	switch code {
	case 0:
		return nil
	case exitNotFound:
		return errdefs.NotFoundf("execfs: read %s: no such file", p)
	case exitIsDir:
		return errdefs.InvalidArgumentf("execfs: read %s: is a directory", p)
	}
	return scriptError("read", p, code, &stderr)
}

// ListDir lists the entries of directory p sorted by name: NotFound when missing,
// InvalidArgument when p is not a directory.
func (f *FS) ListDir(ctx context.Context, p string) ([]backend.FileInfo, error) {
	var stdout bytes.Buffer
	var stderr capBuffer
	code, err := f.inst.Exec(ctx, &backend.ExecRequest{
		Argv:    []string{"sh", "-c", listScript, "sh", p},
		Workdir: "/",
		Stdout:  &stdout,
		Stderr:  &stderr,
	})
	if err != nil {
		return nil, fmt.Errorf("execfs: list %s: %w", p, err)
	}
	switch code {
	case 0:
	case exitNotFound:
		return nil, errdefs.NotFoundf("execfs: list %s: no such directory", p)
	case exitNotDir:
		return nil, errdefs.InvalidArgumentf("execfs: list %s: not a directory", p)
	default:
		return nil, scriptError("list", p, code, &stderr)
	}
	infos, err := ParseList(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("execfs: list %s: %w", p, err)
	}
	return infos, nil
}

// Remove deletes the file, symlink or (with recursive) directory tree at p: NotFound when
// nothing is there, FailedPrecondition for a directory without recursive.
func (f *FS) Remove(ctx context.Context, p string, recursive bool) error {
	rec := "0"
	if recursive {
		rec = "1"
	}
	code, stderr, err := f.run(ctx, removeScript, p, rec)
	if err != nil {
		return fmt.Errorf("execfs: remove %s: %w", p, err)
	}
	switch code {
	case 0:
		return nil
	case exitNotFound:
		return errdefs.NotFoundf("execfs: remove %s: no such file or directory", p)
	case exitIsDir:
		return errdefs.FailedPreconditionf("execfs: remove %s: is a directory (remove it recursively)", p)
	}
	return scriptError("remove", p, code, stderr)
}

// Mkdir creates directory p with mode's permission bits and its missing parents. An
// existing directory is fine; AlreadyExists when something else is there.
func (f *FS) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	perm := strconv.FormatUint(uint64(unixPerm(mode)), 8)
	code, stderr, err := f.run(ctx, mkdirScript, p, perm)
	if err != nil {
		return fmt.Errorf("execfs: mkdir %s: %w", p, err)
	}
	switch code {
	case 0:
		return nil
	case exitExists:
		return errdefs.AlreadyExistsf("execfs: mkdir %s: a file that is not a directory is there", p)
	}
	return scriptError("mkdir", p, code, stderr)
}

// run runs one of the fixed scripts with args, without input or output.
func (f *FS) run(ctx context.Context, script string, args ...string) (int, *capBuffer, error) {
	var stderr capBuffer
	code, err := f.inst.Exec(ctx, &backend.ExecRequest{
		Argv:    append([]string{"sh", "-c", script, "sh"}, args...),
		Workdir: "/",
		Stdout:  io.Discard,
		Stderr:  &stderr,
	})
	return code, &stderr, err
}

// ParseList parses listScript's output: records of "size rawmode-hex mtime-seconds\n" then
// "path\0". Entry names are the path's last element. The result is sorted by name.
func ParseList(out []byte) ([]backend.FileInfo, error) {
	var infos []backend.FileInfo
	for len(out) > 0 {
		nl := bytes.IndexByte(out, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("truncated entry %q", clip(out))
		}
		meta := string(out[:nl])
		out = out[nl+1:]
		nul := bytes.IndexByte(out, 0)
		if nul < 0 {
			return nil, fmt.Errorf("entry without terminating nul after %q", meta)
		}
		p := string(out[:nul])
		out = out[nul+1:]
		fields := strings.Fields(meta)
		if len(fields) != 3 {
			return nil, fmt.Errorf("bad stat line %q", meta)
		}
		size, err1 := strconv.ParseInt(fields[0], 10, 64)
		raw, err2 := strconv.ParseUint(fields[1], 16, 32)
		mtime, err3 := strconv.ParseInt(fields[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("bad stat line %q: %w", meta, err)
		}
		name := p[strings.LastIndexByte(p, '/')+1:]
		if name == "" {
			return nil, fmt.Errorf("empty name in %q", p)
		}
		mode := FromUnixMode(uint32(raw))
		infos = append(infos, backend.FileInfo{
			Name:    name,
			Size:    size,
			Mode:    mode,
			ModTime: time.Unix(mtime, 0).UTC(),
			IsDir:   mode.IsDir(),
		})
	}
	sortInfos(infos)
	return infos, nil
}

func sortInfos(infos []backend.FileInfo) {
	slices.SortFunc(infos, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
}

// Unix st_mode bits (stat's %f), spelled out because they are identical on every POSIX
// system and package syscall does not export them portably.
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
	sISUID  = 0o4000
	sISGID  = 0o2000
	sISVTX  = 0o1000
)

// FromUnixMode converts a raw st_mode to an fs.FileMode.
func FromUnixMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFIFO:
		mode |= fs.ModeNamedPipe
	case sIFSOCK:
		mode |= fs.ModeSocket
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	case sIFREG:
	default:
		mode |= fs.ModeIrregular
	}
	if m&sISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&sISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&sISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// ToUnixMode converts an fs.FileMode to a raw st_mode (type and permission bits).
func ToUnixMode(mode fs.FileMode) uint32 {
	m := unixPerm(mode)
	switch {
	case mode.IsDir():
		m |= sIFDIR
	case mode&fs.ModeSymlink != 0:
		m |= sIFLNK
	case mode&fs.ModeNamedPipe != 0:
		m |= sIFIFO
	case mode&fs.ModeSocket != 0:
		m |= sIFSOCK
	case mode&fs.ModeCharDevice != 0:
		m |= sIFCHR
	case mode&fs.ModeDevice != 0:
		m |= sIFBLK
	default:
		m |= sIFREG
	}
	return m
}

// unixPerm returns the permission, setuid, setgid and sticky bits of mode in Unix layout.
func unixPerm(mode fs.FileMode) uint32 {
	m := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		m |= sISUID
	}
	if mode&fs.ModeSetgid != 0 {
		m |= sISGID
	}
	if mode&fs.ModeSticky != 0 {
		m |= sISVTX
	}
	return m
}

func scriptError(op, p string, code int, stderr *capBuffer) error {
	msg := strings.TrimSpace(stderr.String())
	if msg == "" {
		return fmt.Errorf("execfs: %s %s: exit status %d", op, p, code)
	}
	return fmt.Errorf("execfs: %s %s: exit status %d: %s", op, p, code, msg)
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// capBuffer keeps the first maxStderr bytes written and discards the rest, so a chatty
// failing command cannot grow memory without bound.
type capBuffer struct{ bytes.Buffer }

func (c *capBuffer) Write(p []byte) (int, error) {
	if room := maxStderr - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

var (
	_ backend.FileTransferer = (*FS)(nil)
	_ backend.FileRemover    = (*FS)(nil)
	_ backend.DirMaker       = (*FS)(nil)
)
