package docker

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/moatsh/moat/agent"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// With the agent, ReadFile and WriteFile go through it (one unix-socket round trip, file
// operations done inside the container's mount namespace, so symlinks resolve inside the
// container); otherwise, and whenever the agent is unreachable, they fall back to what
// follows. The files side uses the Engine API's archive endpoints for content, which resolve
// symlinks inside the container's root (a link to "/" points at the container's "/", never
// the host's). ListDir instead runs a fixed script: the archive of a directory would carry
// the content of everything below it.

// spoolLimit is how much of a WriteFile body is buffered in memory; larger bodies go to a
// temporary file, because a tar header needs the size up front.
const spoolLimit = 8 << 20

// maxLinkHops bounds symlink chains ReadFile follows.
const maxLinkHops = 40

// WriteFile implements backend.FileTransferer. Missing parents are created 0755 (only the
// missing ones: existing directories keep their mode). An existing directory at p is
// InvalidArgument. An existing symlink at p is replaced by the file, not written through.
// Files are owned by root.
func (i *Instance) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	if i.agent != nil && !i.b.noAgentExec {
		err := i.agent.WriteFile(ctx, p, r, unixPerm(mode))
		if err == nil || !errors.Is(err, agent.ErrUnreachable) {
			return i.agentErr(ctx, err)
		}
		// r was not read: write the slow way.
	}
	body, size, cleanup, err := spool(r)
	if err != nil {
		return fmt.Errorf("docker: write %s: reading input: %w", p, err)
	}
	defer cleanup()

	st, err := i.b.cli.ContainerStatPath(ctx, i.id, p)
	switch {
	case err == nil && st.Mode.IsDir():
		return errdefs.InvalidArgumentf("docker: write %s: is a directory", p)
	case err != nil && !cerrdefs.IsNotFound(err):
		return i.b.mapErr(err, "docker: write %s", p)
	case err != nil && isNoContainer(err):
		return errdefs.NotFoundf("docker: container %s not found", i.name)
	}

	// Find the deepest existing ancestor; the archive creates the rest.
	parent := path.Dir(p)
	var missing []string
	for {
		st, err := i.b.cli.ContainerStatPath(ctx, i.id, parent)
		if err == nil {
			isDir := st.Mode.IsDir()
			if st.Mode&fs.ModeSymlink != 0 && st.LinkTarget != "" {
				if t, err := i.b.cli.ContainerStatPath(ctx, i.id, st.LinkTarget); err == nil {
					isDir = t.Mode.IsDir()
				}
			}
			if !isDir {
				return errdefs.InvalidArgumentf("docker: write %s: %s is not a directory", p, parent)
			}
			break
		}
		if !cerrdefs.IsNotFound(err) || isNoContainer(err) || parent == "/" {
			return i.mapPathErr(err, "write", p)
		}
		missing = append([]string{path.Base(parent)}, missing...)
		parent = path.Dir(parent)
	}

	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTar(pw, missing, path.Base(p), body, size, mode))
	}()
	err = i.b.cli.CopyToContainer(ctx, i.id, parent, pr, container.CopyToContainerOptions{})
	pr.Close()
	if err != nil {
		return i.mapPathErr(err, "write", p)
	}
	return nil
}

// writeTar writes an archive with the directories dirs (nested, in order) and the file
// name inside the innermost one.
func writeTar(w io.Writer, dirs []string, name string, body io.Reader, size int64, mode fs.FileMode) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	prefix := ""
	for _, d := range dirs {
		prefix += d + "/"
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: prefix, Mode: 0o755, ModTime: now}); err != nil {
			return err
		}
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     prefix + name,
		Mode:     int64(unixPerm(mode)),
		Size:     size,
		ModTime:  now,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, body); err != nil {
		return err
	}
	return tw.Close()
}

// unixPerm turns fs.FileMode permission and special bits into Unix mode bits.
func unixPerm(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// spool makes r's bytes re-readable with a known size: in memory up to spoolLimit, else in a
// temporary file.
func spool(r io.Reader) (io.Reader, int64, func(), error) {
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, spoolLimit+1)
	if err == io.EOF || (err == nil && n <= spoolLimit) {
		return &buf, n, func() {}, nil
	}
	if err != nil {
		return nil, 0, nil, err
	}
	f, err := os.CreateTemp("", "moat-docker-write-*")
	if err != nil {
		return nil, 0, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	size, err := io.Copy(f, io.MultiReader(&buf, r))
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	return f, size, cleanup, nil
}

// ReadFile implements backend.FileTransferer. Symlinks are followed inside the container.
func (i *Instance) ReadFile(ctx context.Context, p string, w io.Writer) error {
	if i.agent != nil && !i.b.noAgentExec {
		err := i.agent.ReadFile(ctx, p, w)
		if err == nil || !errors.Is(err, agent.ErrUnreachable) {
			return i.agentErr(ctx, err)
		}
	}
	for range maxLinkHops {
		rc, st, err := i.b.cli.CopyFromContainer(ctx, i.id, p)
		if err != nil {
			return i.mapPathErr(err, "read", p)
		}
		if st.Mode.IsDir() {
			rc.Close()
			return errdefs.InvalidArgumentf("docker: read %s: is a directory", p)
		}
		if st.Mode&fs.ModeSymlink != 0 {
			rc.Close()
			if st.LinkTarget == "" || st.LinkTarget == p {
				return errdefs.InvalidArgumentf("docker: read %s: unresolvable symlink", p)
			}
			p = st.LinkTarget
			continue
		}
		err = copyFirstEntry(rc, w)
		rc.Close()
		if err != nil {
			return fmt.Errorf("docker: read %s: %w", p, err)
		}
		return nil
	}
	return errdefs.InvalidArgumentf("docker: read %s: too many levels of symlinks", p)
}

func copyFirstEntry(r io.Reader, w io.Writer) error {
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		return fmt.Errorf("reading archive: %w", err)
	}
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
		return errdefs.InvalidArgumentf("not a regular file (tar type %q)", hdr.Typeflag)
	}
	_, err = io.Copy(w, tr)
	return err
}

// listScript prints, for each entry of directory $1, its name, a NUL, then
// "size rawmode-hex mtime" and a newline. Names may hold any byte but NUL; the glob pair
// covers dot files. Exit 2: missing; 3: not a directory.
const listScript = `cd -- "$1" 2>/dev/null || { [ -e "$1" ] && exit 3; exit 2; }
for f in .* *; do
  case "$f" in .|..) continue;; esac
  [ -e "$f" ] || [ -L "$f" ] || continue
  printf '%s\0' "$f"
  stat -c '%s %f %Y' -- "$f" || exit 4
done`

// ListDir implements backend.FileTransferer. It needs sh and stat in the image (every
// Debian and busybox image has them); see the note at the top of this file for why.
func (i *Instance) ListDir(ctx context.Context, p string) ([]backend.FileInfo, error) {
	var out, errb bytes.Buffer
	code, err := i.Exec(ctx, &backend.ExecRequest{
		Argv:    []string{"/bin/sh", "-c", listScript, "moat-ls", p},
		Workdir: "/",
		Stdout:  &out,
		Stderr:  &errb,
	})
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) && strings.Contains(err.Error(), "/bin/sh") {
			return nil, errdefs.Newf(errdefs.ErrUnsupported, "docker: list %s: the image has no /bin/sh: %w", p, err)
		}
		return nil, err
	}
	switch code {
	case 0:
	case 2:
		return nil, errdefs.NotFoundf("docker: list %s: no such directory", p)
	case 3:
		return nil, errdefs.InvalidArgumentf("docker: list %s: not a directory", p)
	default:
		return nil, fmt.Errorf("docker: list %s: exit %d: %s", p, code, strings.TrimSpace(errb.String()))
	}
	infos, err := parseListing(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("docker: list %s: %w", p, err)
	}
	return infos, nil
}

func parseListing(b []byte) ([]backend.FileInfo, error) {
	var infos []backend.FileInfo
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		name, err := br.ReadString(0)
		if err == io.EOF && name == "" {
			break
		}
		if err != nil {
			return nil, errors.New("truncated listing")
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, errors.New("truncated listing")
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("unexpected stat output %q", line)
		}
		size, err1 := strconv.ParseInt(f[0], 10, 64)
		raw, err2 := strconv.ParseUint(f[1], 16, 32)
		mtime, err3 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("unexpected stat output %q", line)
		}
		mode := fileMode(uint32(raw))
		infos = append(infos, backend.FileInfo{
			Name:    strings.TrimSuffix(name, "\x00"),
			Size:    size,
			Mode:    mode,
			ModTime: time.Unix(mtime, 0).UTC(),
			IsDir:   mode.IsDir(),
		})
	}
	sort.Slice(infos, func(a, b int) bool { return infos[a].Name < infos[b].Name })
	return infos, nil
}

// fileMode converts a raw Unix st_mode to fs.FileMode.
func fileMode(raw uint32) fs.FileMode {
	m := fs.FileMode(raw & 0o777)
	switch raw & 0o170000 {
	case 0o040000:
		m |= fs.ModeDir
	case 0o120000:
		m |= fs.ModeSymlink
	case 0o010000:
		m |= fs.ModeNamedPipe
	case 0o140000:
		m |= fs.ModeSocket
	case 0o020000:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case 0o060000:
		m |= fs.ModeDevice
	}
	if raw&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if raw&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if raw&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// isNoContainer tells a vanished container from a missing path; the daemon answers both
// with 404.
func isNoContainer(err error) bool {
	return err != nil && strings.Contains(err.Error(), "No such container")
}

func (i *Instance) mapPathErr(err error, op, p string) error {
	switch {
	case isNoContainer(err):
		return errdefs.NotFoundf("docker: container %s not found", i.name)
	case cerrdefs.IsNotFound(err):
		return errdefs.NotFoundf("docker: %s %s: no such file or directory", op, p)
	}
	return i.b.mapErr(err, "docker: %s %s", op, p)
}
