package moat

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/settings"
)

// backendSet is the manager's backends at one moment. It is never modified: a settings
// change builds a new set and swaps it in, so readers hold no lock while they use it.
type backendSet struct {
	backends  map[string]backend.Backend
	factories map[string]backend.Factory   // the backends built from a factory
	saved     map[string]map[string]string // the saved settings each was built with
}

// buildBackends builds every factory's backend with the settings saved in the store, and
// adds the prebuilt instances.
func (m *Manager) buildBackends(ctx context.Context, factories map[string]backend.Factory, instances map[string]backend.Backend) (*backendSet, error) {
	saved, err := settings.Load(ctx, m.store)
	if err != nil {
		return nil, err
	}
	set := &backendSet{backends: map[string]backend.Backend{}, factories: factories, saved: map[string]map[string]string{}}
	for _, name := range slices.Sorted(maps.Keys(factories)) {
		b, err := m.buildBackend(name, factories[name], saved[name])
		if err != nil {
			return nil, err
		}
		set.backends[name] = b
		set.saved[name] = saved[name]
	}
	maps.Copy(set.backends, instances)
	return set, nil
}

func (m *Manager) buildBackend(name string, f backend.Factory, saved map[string]string) (backend.Backend, error) {
	b, err := f(backend.Config{
		Decode:   sectionDecoder(name, m.cfg.Backends[name]),
		StateDir: filepath.Join(m.cfg.Home, "backends", name),
		Getenv:   m.cfg.Getenv,
		Saved:    maps.Clone(saved),
		Logger:   m.cfg.Logger.With("backend", name),
	})
	if err != nil {
		return nil, fmt.Errorf("moat: backend %s: %w", name, err)
	}
	return b, nil
}

// backends returns the current set.
func (m *Manager) backends() *backendSet {
	m.setMu.RLock()
	defer m.setMu.RUnlock()
	return m.set
}

// backend returns the current backend called name.
func (m *Manager) backend(name string) (backend.Backend, bool) {
	b, ok := m.backends().backends[name]
	return b, ok
}

func (m *Manager) backendNames() []string {
	names := slices.Collect(maps.Keys(m.backends().backends))
	sort.Strings(names)
	return names
}

// swapBackend makes b (built with saved) the backend called name. Instances attached
// through the old build are dropped from the cache, so the next call re-attaches through b
// (new credentials, new endpoint); calls in flight finish on the old build.
func (m *Manager) swapBackend(name string, b backend.Backend, saved map[string]string) {
	m.setMu.Lock()
	old := m.set
	next := &backendSet{backends: maps.Clone(old.backends), factories: old.factories, saved: maps.Clone(old.saved)}
	next.backends[name] = b
	next.saved[name] = saved
	m.set = next
	m.setMu.Unlock()

	prev := old.backends[name]
	m.mu.Lock()
	for id, c := range m.instances {
		if c.backend == prev {
			delete(m.instances, id)
		}
	}
	m.mu.Unlock()
	m.healthMu.Lock()
	delete(m.health, name)
	m.healthMu.Unlock()
	m.log.Info("backend rebuilt with changed settings", "backend", name)
}

// BackendSettings returns backend name's settings as the API shows them (secrets reduced to
// whether they are configured). NotFound for an unknown backend or one without settings.
func (m *Manager) BackendSettings(ctx context.Context, name string) (settings.View, error) {
	if _, ok := m.backend(name); !ok {
		return settings.View{}, m.unknownBackend(name)
	}
	d := m.descriptor(name)
	if len(settings.Settable(d)) == 0 {
		return settings.View{}, errdefs.NotFoundf("moat: backend %s has no settings", name)
	}
	saved, err := settings.Get(ctx, m.store, name)
	if err != nil {
		return settings.View{}, err
	}
	return settings.ViewOf(d, saved, m.cfg.Getenv), nil
}

// AllBackendSettings returns the settings of every backend that has some, sorted by name.
func (m *Manager) AllBackendSettings(ctx context.Context) ([]settings.View, error) {
	saved, err := settings.Load(ctx, m.store)
	if err != nil {
		return nil, err
	}
	out := []settings.View{}
	for _, name := range m.backendNames() {
		if d := m.descriptor(name); len(settings.Settable(d)) > 0 {
			out = append(out, settings.ViewOf(d, saved[name], m.cfg.Getenv))
		}
	}
	return out, nil
}

// PutBackendSettings applies changes (a nil value removes a key) to backend name's saved
// settings and builds the backend again with them, so they apply at once, without a
// restart. The new build is checked before anything is written: a value the backend
// refuses changes nothing. Sandboxes keep talking to the endpoint they were created on.
func (m *Manager) PutBackendSettings(ctx context.Context, name string, changes map[string]*string) (settings.View, error) {
	if _, ok := m.backend(name); !ok {
		return settings.View{}, m.unknownBackend(name)
	}
	// settingsMu serializes the read-modify-write of saved settings; nothing else waits on
	// it.
	m.settingsMu.Lock()
	defer m.settingsMu.Unlock()
	d := m.descriptor(name)
	cur, err := settings.Get(ctx, m.store, name)
	if err != nil {
		return settings.View{}, err
	}
	next, err := settings.Apply(d, cur, changes)
	if err != nil {
		return settings.View{}, err
	}
	f, rebuild := m.backends().factories[name]
	var nb backend.Backend
	if rebuild {
		if nb, err = m.buildBackend(name, f, next); err != nil {
			return settings.View{}, err
		}
	}
	if err := settings.Save(ctx, m.store, name, next); err != nil {
		return settings.View{}, err
	}
	if rebuild {
		m.swapBackend(name, nb, next)
	} else {
		m.log.Warn("backend settings saved; this backend was given prebuilt and is not rebuilt", "backend", name)
	}
	return settings.ViewOf(d, next, m.cfg.Getenv), nil
}

// ReloadSettings reads the saved settings again and builds every backend whose settings
// changed since it was built (by another process sharing the store: a moatd replica, the
// CLI). Maintain calls it; a backend that cannot be built with the new values keeps its old
// build and the error is returned.
func (m *Manager) ReloadSettings(ctx context.Context) error {
	m.settingsMu.Lock()
	defer m.settingsMu.Unlock()
	saved, err := settings.Load(ctx, m.store)
	if err != nil {
		return err
	}
	set := m.backends()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(set.factories)) {
		if maps.Equal(saved[name], set.saved[name]) {
			continue
		}
		b, err := m.buildBackend(name, set.factories[name], saved[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.swapBackend(name, b, saved[name])
	}
	return errors.Join(errs...)
}
