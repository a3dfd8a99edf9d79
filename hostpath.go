package moat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Caller says who asks the manager for something: the operator (in-process library use,
// the local CLI on the operator's machine) or a remote API caller. Only the operator names
// paths on the host (DESIGN.md principle 12).
type Caller int

const (
	// CallerOperator is the default: a context without WithCaller is the operator's.
	CallerOperator Caller = iota
	// CallerRemote is an API caller; httpapi marks every request's context with it.
	CallerRemote
)

type callerKey struct{}

// WithCaller returns ctx marked as coming from c. httpapi marks each request with
// CallerRemote; a front end of its own that serves other people should do the same.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns who ctx comes from (CallerOperator when unmarked).
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// SecurityConfig is the [security] section.
type SecurityConfig struct {
	// AllowedHostPaths are host directories under which an API caller may name host paths
	// (a bwrap image directory or tarball, any create field a backend declares in its
	// Descriptor.HostPaths). Empty: API callers name no host path at all; the operator
	// (moat.toml, the in-process library, the local CLI) always may.
	AllowedHostPaths []string
}

// checkHostPaths is the one place the manager guards host paths: for every field of spec
// that backend d declares a host path (Descriptor.HostPaths), a value from a remote caller
// must lie under an operator-listed root once cleaned and with its symlinks resolved, or
// the create is permission_denied. It returns spec with each such value replaced by the
// canonical path it checked, so ".." or a symlink cannot move it elsewhere afterwards.
// Values the operator configured (the backend's default image, [sandbox] image) pass.
func (m *Manager) checkHostPaths(ctx context.Context, d backend.Descriptor, spec Spec) (Spec, error) {
	if CallerFrom(ctx) != CallerRemote || len(d.HostPaths) == 0 {
		return spec, nil
	}
	for _, field := range d.HostPaths {
		switch {
		case field == "image":
			if spec.Image == "" || !filepath.IsAbs(spec.Image) ||
				spec.Image == d.DefaultImage || spec.Image == m.cfg.Sandbox.Image {
				continue
			}
			p, err := m.allowedHostPath(d.Name, "image", spec.Image)
			if err != nil {
				return spec, err
			}
			spec.Image = p
		case strings.HasPrefix(field, "options."):
			if len(spec.Options) == 0 {
				continue
			}
			var v any
			if err := json.Unmarshal(spec.Options, &v); err != nil {
				return spec, errdefs.InvalidArgumentf("moat: options are not valid JSON")
			}
			keys := strings.Split(strings.TrimPrefix(field, "options."), ".")
			changed := false
			nv, err := walkOption(v, keys, func(s string) (string, error) {
				p, err := m.allowedHostPath(d.Name, field, s)
				changed = changed || p != s
				return p, err
			})
			if err != nil {
				return spec, err
			}
			if changed {
				raw, err := json.Marshal(nv)
				if err != nil {
					return spec, fmt.Errorf("moat: encode options: %w", err)
				}
				spec.Options = raw
			}
		default:
			return spec, fmt.Errorf("moat: backend %s declares an unknown host path field %q", d.Name, field)
		}
	}
	return spec, nil
}

// walkOption applies f to every string reached through keys in v (arrays are walked
// element by element) and returns v with the results in place.
func walkOption(v any, keys []string, f func(string) (string, error)) (any, error) {
	switch t := v.(type) {
	case []any:
		for i := range t {
			nv, err := walkOption(t[i], keys, f)
			if err != nil {
				return nil, err
			}
			t[i] = nv
		}
		return t, nil
	case string:
		if len(keys) == 0 && t != "" {
			return f(t)
		}
		return t, nil
	case map[string]any:
		if len(keys) == 0 {
			return t, nil
		}
		if c, ok := t[keys[0]]; ok {
			nv, err := walkOption(c, keys[1:], f)
			if err != nil {
				return nil, err
			}
			t[keys[0]] = nv
		}
		return t, nil
	}
	return v, nil
}

// allowedHostPath returns p canonicalized when it lies under one of the operator's allowed
// roots. A path outside every root is permission_denied whether or not it exists, so the
// answer tells a caller nothing about the host.
func (m *Manager) allowedHostPath(backendName, field, p string) (string, error) {
	deny := errdefs.Newf(errdefs.ErrPermissionDenied,
		"moat: %s %s %q is a host path; an API caller may name one only under a [security] allowed_host_paths root (the operator names host paths)",
		backendName, field, p)
	if !filepath.IsAbs(p) || len(m.cfg.Security.AllowedHostPaths) == 0 {
		return "", deny
	}
	// The roots as written and with their own symlinks resolved (a root that does not
	// exist allows nothing).
	var roots []string
	for _, root := range m.cfg.Security.AllowedHostPaths {
		if rr, err := filepath.EvalSymlinks(filepath.Clean(root)); err == nil {
			roots = append(roots, filepath.Clean(root), rr)
		}
	}
	under := func(p string) bool {
		for _, r := range roots {
			if within(r, p) {
				return true
			}
		}
		return false
	}
	// Look at nothing outside the roots: the answer must not tell what exists there.
	clean := filepath.Clean(p)
	if !under(clean) {
		return "", deny
	}
	real, err := filepath.EvalSymlinks(clean)
	if errors.Is(err, fs.ErrNotExist) {
		// Say "not found" only when the nearest existing ancestor is inside a root: a
		// symlink out of it must not tell what is missing outside.
		dir := filepath.Dir(clean)
		for {
			if rd, derr := filepath.EvalSymlinks(dir); derr == nil {
				if under(rd) {
					return "", errdefs.NotFoundf("moat: %s %s %q: no such file or directory", backendName, field, p)
				}
				return "", deny
			}
			if dir == filepath.Dir(dir) {
				return "", deny
			}
			dir = filepath.Dir(dir)
		}
	}
	if err != nil || !filepath.IsAbs(real) || !under(real) {
		return "", deny
	}
	return real, nil
}

// within reports whether p is root or below it (both clean and absolute).
func within(root, p string) bool {
	if root == "/" {
		return true
	}
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}
