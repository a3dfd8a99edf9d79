// Package statedir answers "where does a local backend keep its sandboxes, and how are
// they found again?": the layout <StateDir>/sandboxes/<id>/ with a .moat.json meta file,
// shared by the bwrap and host backends — handles that carry the meta, Attach's checks,
// and List. Dir and Sandbox hold the rest of what the two backends do alike around that
// directory (Create's checks, limits groups, tracked commands, Status, Destroy), so each
// keeps only how it runs a command.
package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/limits"
	"github.com/moatsh/moat/errdefs"
)

// MetaFile is the name of the meta file in each sandbox directory.
const MetaFile = ".moat.json"

// Meta is what a backend's meta struct must tell this package.
type Meta interface {
	SandboxID() string
	SandboxRoot() string // <sandboxes dir>/<id>/root or similar: its parent is named id
}

// Handle encodes m as a handle of backend name.
func Handle(name string, version int, m Meta) backend.Handle {
	raw, _ := json.Marshal(m)
	return backend.Handle{Backend: name, Version: version, State: raw}
}

// Decode reads h into m and checks that it names an existing sandbox of backend name:
// InvalidArgument for a foreign or malformed handle, NotFound when the directory is gone.
func Decode(name string, version int, h backend.Handle, m Meta) error {
	if h.Backend != name {
		return errdefs.InvalidArgumentf("%s: handle belongs to backend %q", name, h.Backend)
	}
	if h.Version != version {
		return errdefs.InvalidArgumentf("%s: unsupported handle version %d", name, h.Version)
	}
	if err := json.Unmarshal(h.State, m); err != nil {
		return errdefs.InvalidArgumentf("%s: bad handle state: %v", name, err)
	}
	id, root := m.SandboxID(), m.SandboxRoot()
	if !limits.ValidID(id) || !filepath.IsAbs(root) || filepath.Base(filepath.Dir(root)) != id {
		return errdefs.InvalidArgumentf("%s: bad handle state", name)
	}
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return errdefs.NotFoundf("%s: sandbox %s is gone", name, id)
	}
	return nil
}

// List returns the sandboxes under dir whose meta file names their own directory; newMeta
// returns a fresh meta value to decode into. Half-created or half-removed directories are
// skipped.
func List(name, dir string, version int, newMeta func() Meta) ([]backend.Listed, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: list: %w", name, err)
	}
	var out []backend.Listed
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), MetaFile))
		if err != nil {
			continue
		}
		m := newMeta()
		if json.Unmarshal(raw, m) != nil || m.SandboxID() != e.Name() {
			continue
		}
		out = append(out, backend.Listed{ID: m.SandboxID(), Handle: Handle(name, version, m)})
	}
	return out, nil
}
