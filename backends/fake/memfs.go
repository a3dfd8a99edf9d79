package fake

import (
	"bytes"
	"crypto/rand"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// device is a character device in the in-memory filesystem (/dev/null, /dev/zero, ...).
type device int

const (
	devNone device = iota
	devNull
	devZero
	devRandom
)

// node is one file, directory, symlink or device.
type node struct {
	mode     fs.FileMode // type and permission bits
	data     []byte      // regular file content; replaced, never truncated in place
	target   string      // symlink target
	children map[string]*node
	dev      device
	mtime    time.Time
}

func (n *node) isDir() bool     { return n.mode.IsDir() }
func (n *node) isSymlink() bool { return n.mode&fs.ModeSymlink != 0 }

func newDir(perm fs.FileMode) *node {
	return &node{mode: fs.ModeDir | perm, children: map[string]*node{}, mtime: time.Now()}
}

// memfs is one sandbox's filesystem. A single lock guards the whole tree; content is copied
// out before anything is written to a caller's writer, so a slow reader never holds it.
type memfs struct {
	mu   sync.Mutex
	root *node
}

// newBaseFS returns the filesystem every sandbox starts from: /tmp, /dev devices, /root.
func newBaseFS() *memfs {
	root := newDir(0o755)
	root.children["tmp"] = newDir(0o777 | fs.ModeSticky)
	root.children["root"] = newDir(0o700)
	root.children["etc"] = newDir(0o755)
	dev := newDir(0o755)
	for name, d := range map[string]device{"null": devNull, "zero": devZero, "urandom": devRandom, "random": devRandom} {
		dev.children[name] = &node{mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, dev: d, mtime: time.Now()}
	}
	root.children["dev"] = dev
	return &memfs{root: root}
}

// clone deep-copies the filesystem (snapshots).
func (m *memfs) clone() *memfs {
	m.mu.Lock()
	defer m.mu.Unlock()
	var cp func(n *node) *node
	cp = func(n *node) *node {
		c := *n
		if n.children != nil {
			c.children = make(map[string]*node, len(n.children))
			for k, v := range n.children {
				c.children[k] = cp(v)
			}
		}
		return &c // data slices are shared: they are replaced, never modified in place
	}
	return &memfs{root: cp(m.root)}
}

// errors with the wording of a POSIX tool, prefixed by the caller.
var (
	errNoEnt  = errdefs.NotFoundf("no such file or directory")
	errNotDir = errdefs.InvalidArgumentf("not a directory")
	errIsDir  = errdefs.InvalidArgumentf("is a directory")
	errExist  = errdefs.AlreadyExistsf("file exists")
	errLoop   = errdefs.InvalidArgumentf("too many levels of symbolic links")
	errNotEmp = errdefs.FailedPreconditionf("directory not empty")
)

// walk resolves p (absolute, or relative to cwd) inside the tree. It returns the parent
// directory, the last element's name and the node (nil when the last element is missing but
// its parent exists). Symlinks resolve inside this filesystem only: ".." stops at its root,
// so no path can leave it. The last element is followed when follow is true. Callers hold
// m.mu.
func (m *memfs) walk(cwd, p string, follow bool) (parent *node, name string, n *node, err error) {
	if !strings.HasPrefix(p, "/") {
		p = path.Join(cwd, p)
	}
	return m.walkFrom(p, follow, 0)
}

func (m *memfs) walkFrom(p string, follow bool, depth int) (*node, string, *node, error) {
	if depth > 40 {
		return nil, "", nil, errLoop
	}
	elems := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	if len(elems) == 1 && elems[0] == "" {
		return m.root, "", m.root, nil
	}
	// stack holds the directories from the root to the current one, for "..".
	stack := []*node{m.root}
	names := []string{}
	for i := 0; i < len(elems); i++ {
		e := elems[i]
		cur := stack[len(stack)-1]
		last := i == len(elems)-1
		switch e {
		case ".":
			if last {
				return parentOf(stack), lastName(names), cur, nil
			}
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
				names = names[:len(names)-1]
			}
			if last {
				return parentOf(stack), lastName(names), stack[len(stack)-1], nil
			}
			continue
		}
		if !cur.isDir() {
			return nil, "", nil, errNotDir
		}
		child := cur.children[e]
		if child == nil {
			if last {
				return cur, e, nil, nil
			}
			return nil, "", nil, errNoEnt
		}
		if child.isSymlink() && (!last || follow) {
			// Re-resolve: target (absolute, or relative to the link's directory) + the rest.
			base := "/" + strings.Join(names, "/")
			t := child.target
			if !strings.HasPrefix(t, "/") {
				t = path.Join(base, t)
			}
			rest := strings.Join(elems[i+1:], "/")
			return m.walkFrom(t+"/"+rest, follow, depth+1)
		}
		if last {
			return cur, e, child, nil
		}
		stack = append(stack, child)
		names = append(names, e)
	}
	// Unreachable: the loop returns on the last element.
	return nil, "", nil, errNoEnt
}

func parentOf(stack []*node) *node {
	if len(stack) > 1 {
		return stack[len(stack)-2]
	}
	return stack[0]
}

func lastName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
}

// lookup returns the node at p.
func (m *memfs) lookup(cwd, p string, follow bool) (*node, error) {
	_, _, n, err := m.walk(cwd, p, follow)
	if err == nil && n == nil {
		err = errNoEnt
	}
	return n, err
}

// stat returns a copy of the node's metadata at p.
func (m *memfs) stat(cwd, p string, follow bool) (node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(cwd, p, follow)
	if err != nil {
		return node{}, err
	}
	return *n, nil
}

func (n *node) size() int64 {
	switch {
	case n.isSymlink():
		return int64(len(n.target))
	case n.isDir():
		return 4096
	}
	return int64(len(n.data))
}

// mkdirAll creates p and its missing parents with perm.
func (m *memfs) mkdirAll(cwd, p string, perm fs.FileMode) error {
	if !strings.HasPrefix(p, "/") {
		p = path.Join(cwd, p)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mkdirAllLocked(path.Clean(p), perm)
}

func (m *memfs) mkdirAllLocked(p string, perm fs.FileMode) error {
	parent, name, n, err := m.walk("/", p, true)
	if err == errNoEnt && p != "/" {
		if err := m.mkdirAllLocked(path.Dir(p), 0o755); err != nil {
			return err
		}
		parent, name, n, err = m.walk("/", p, true)
	}
	if err != nil {
		return err
	}
	if n != nil {
		if !n.isDir() {
			return errNotDir
		}
		return nil
	}
	parent.children[name] = newDir(perm)
	parent.mtime = time.Now()
	return nil
}

// mkdir creates one directory.
func (m *memfs) mkdir(cwd, p string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, name, n, err := m.walk(cwd, p, false)
	if err != nil {
		return err
	}
	if n != nil {
		return errExist
	}
	parent.children[name] = newDir(perm)
	parent.mtime = time.Now()
	return nil
}

// create opens p for writing, creating it with perm when missing; trunc empties it.
// It returns the node to append to.
func (m *memfs) create(cwd, p string, perm fs.FileMode, trunc bool) (*node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, name, n, err := m.walk(cwd, p, true)
	if err != nil {
		return nil, err
	}
	if n == nil {
		if !parent.isDir() {
			return nil, errNotDir
		}
		n = &node{mode: perm, mtime: time.Now()}
		parent.children[name] = n
		parent.mtime = time.Now()
		return n, nil
	}
	if n.isDir() {
		return nil, errIsDir
	}
	if trunc && n.dev == devNone {
		n.data = nil // a new array: readers keep the old content they copied out
		n.mtime = time.Now()
	}
	return n, nil
}

// appendTo appends b to a node from create.
func (m *memfs) appendTo(n *node, b []byte) {
	if n.dev != devNone {
		return // /dev/null and friends swallow writes
	}
	m.mu.Lock()
	n.data = append(n.data, b...)
	n.mtime = time.Now()
	m.mu.Unlock()
}

// writeFile replaces p's content and permission bits, creating missing parents (0755).
func (m *memfs) writeFile(p string, data []byte, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, name, n, err := m.walk("/", p, true)
	if err == errNoEnt {
		if err := m.mkdirAllLocked(path.Dir(p), 0o755); err != nil {
			return err
		}
		parent, name, n, err = m.walk("/", p, true)
	}
	if err != nil {
		return err
	}
	if n == nil {
		parent.children[name] = &node{mode: perm, data: data, mtime: time.Now()}
		parent.mtime = time.Now()
		return nil
	}
	if n.isDir() {
		return errIsDir
	}
	if n.dev != devNone {
		return nil
	}
	n.data, n.mode, n.mtime = data, perm, time.Now()
	return nil
}

// open returns a reader of p's content as it is now.
func (m *memfs) open(cwd, p string) (io.Reader, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(cwd, p, true)
	if err != nil {
		return nil, err
	}
	switch {
	case n.isDir():
		return nil, errIsDir
	case n.dev == devNull:
		return bytes.NewReader(nil), nil
	case n.dev == devZero:
		return zeroReader{}, nil
	case n.dev == devRandom:
		return randReader{}, nil
	}
	return bytes.NewReader(n.data), nil // n.data is never modified in place
}

// readDir returns the entries of directory p sorted by name.
func (m *memfs) readDir(cwd, p string) ([]backend.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(cwd, p, true)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, errNotDir
	}
	infos := make([]backend.FileInfo, 0, len(n.children))
	for name, c := range n.children {
		infos = append(infos, backend.FileInfo{Name: name, Size: c.size(), Mode: c.mode, ModTime: c.mtime, IsDir: c.isDir()})
	}
	slices.SortFunc(infos, func(a, b backend.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, nil
}

// symlink creates link pointing at target.
func (m *memfs) symlink(cwd, target, link string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, name, n, err := m.walk(cwd, link, false)
	if err != nil {
		return err
	}
	if n != nil && n.isDir() {
		// ln -s T DIR makes DIR/basename(T).
		parent, name = n, path.Base(target)
		if parent.children[name] != nil {
			return errExist
		}
	} else if n != nil {
		return errExist
	}
	parent.children[name] = &node{mode: fs.ModeSymlink | 0o777, target: target, mtime: time.Now()}
	return nil
}

// chmod sets p's permission bits (following symlinks).
func (m *memfs) chmod(cwd, p string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(cwd, p, true)
	if err != nil {
		return err
	}
	n.mode = n.mode.Type() | perm
	return nil
}

// remove deletes p; recursive allows non-empty directories.
func (m *memfs) remove(cwd, p string, recursive bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, name, n, err := m.walk(cwd, p, false)
	if err != nil {
		return err
	}
	if n == nil {
		return errNoEnt
	}
	if n == m.root {
		return errdefs.InvalidArgumentf("refusing to remove /")
	}
	if n.isDir() && !recursive {
		return errIsDir
	}
	delete(parent.children, name)
	parent.mtime = time.Now()
	return nil
}

// touch creates p when missing, or updates its mtime.
func (m *memfs) touch(cwd, p string) error {
	n, err := m.create(cwd, p, 0o644, false)
	if err != nil {
		return err
	}
	m.mu.Lock()
	n.mtime = time.Now()
	m.mu.Unlock()
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }

// rename moves src to dst, replacing what dst names (a symlink is replaced, not followed);
// a directory at dst receives src under its own name, as mv does.
func (m *memfs) rename(cwd, src, dst string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sp, sname, sn, err := m.walk(cwd, src, false)
	if err != nil {
		return err
	}
	if sn == nil || sn == m.root {
		return errNoEnt
	}
	dp, dname, dn, err := m.walk(cwd, dst, false)
	if err != nil {
		return err
	}
	if dn != nil && dn.isDir() {
		dp, dname = dn, sname
		if c := dp.children[dname]; c != nil && c.isDir() {
			return errIsDir
		}
	} else if dn == m.root {
		return errIsDir
	}
	if dp == sp && dname == sname {
		return nil
	}
	delete(sp.children, sname)
	dp.children[dname] = sn
	sp.mtime, dp.mtime = time.Now(), time.Now()
	return nil
}
