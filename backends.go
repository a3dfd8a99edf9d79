package moat

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

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
	// envNamed holds, by backend then key, the variable a <key>_env entry of moat.toml
	// names, for the settings view and the probe's reason.
	envNamed map[string]map[string]string
}

// buildBackends builds every factory's backend with the settings saved in the store, and
// adds the prebuilt instances.
func (m *Manager) buildBackends(ctx context.Context, factories map[string]backend.Factory, instances map[string]backend.Backend) (*backendSet, error) {
	saved, err := settings.Load(ctx, m.store, m.keyring)
	if err != nil {
		return nil, err
	}
	set := &backendSet{backends: map[string]backend.Backend{}, factories: factories, saved: map[string]map[string]string{},
		envNamed: map[string]map[string]string{}}
	for _, name := range slices.Sorted(maps.Keys(factories)) {
		b, named, err := m.buildBackend(name, factories[name], saved[name])
		if err != nil {
			return nil, err
		}
		set.backends[name] = b
		set.saved[name] = saved[name]
		set.envNamed[name] = named
	}
	maps.Copy(set.backends, instances)
	return set, nil
}

// buildBackend builds backend name with f from its moat.toml section and saved settings.
// named reports the variables the section's <key>_env entries name.
func (m *Manager) buildBackend(name string, f backend.Factory, saved map[string]string) (b backend.Backend, named map[string]string, err error) {
	section, named, unset, err := m.resolveEnvKeys(name, f, m.cfg.Backends[name])
	if err != nil {
		return nil, nil, err
	}
	getenv, saved := m.cfg.Getenv, maps.Clone(saved)
	if len(unset) > 0 {
		// The section names the variable a secret comes from and it is empty: the secret is
		// unset, never taken from another account's default variable or a saved value.
		hidden := map[string]bool{}
		for _, s := range unset {
			for _, e := range s.Env {
				hidden[e] = true
			}
			delete(saved, s.Key)
			for _, a := range s.Aliases {
				delete(saved, a)
			}
		}
		getenv = func(k string) string {
			if hidden[k] {
				return ""
			}
			return m.cfg.Getenv(k)
		}
	}
	b, err = f(backend.Config{
		Decode:   sectionDecoder(name, section),
		StateDir: filepath.Join(m.cfg.Home, "backends", name),
		Getenv:   getenv,
		Saved:    saved,
		Logger:   m.cfg.Logger.With("backend", name),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("moat: backend %s: %w", name, err)
	}
	return b, named, nil
}

// envVarRE is what an environment variable's name may look like.
var envVarRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// resolveEnvKeys replaces each "<key>_env = VAR" entry of a backend's section, for a secret
// setting key, by key = the value of VAR (read now: at start and at every rebuild), so a
// checked-in moat.toml names where a secret is instead of holding it, and one machine can
// hold several accounts. Which keys are secret comes from the backend's own descriptor. An
// unset VAR leaves the key unset; named records it so the probe and the settings view can
// say which variable was expected, and unset lists those settings.
func (m *Manager) resolveEnvKeys(name string, f backend.Factory, section map[string]any) (out map[string]any, named map[string]string, unset []backend.Setting, err error) {
	var indirect []string
	for k := range section {
		if strings.HasSuffix(k, "_env") {
			indirect = append(indirect, k)
		}
	}
	if len(indirect) == 0 {
		return section, nil, nil, nil
	}
	// The descriptor is static: a build from an empty section states the same settings.
	probe, err := f(backend.Config{StateDir: filepath.Join(m.cfg.Home, "backends", name), Getenv: func(string) string { return "" },
		Logger: m.cfg.Logger.With("backend", name)})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("moat: backend %s: %w", name, err)
	}
	out = maps.Clone(section)
	named = map[string]string{}
	slices.Sort(indirect)
	for _, k := range indirect {
		key := strings.TrimSuffix(k, "_env")
		s, ok := settings.Field(probe.Descriptor().Settings, key)
		if !ok {
			continue // not an indirection: the backend's own decoding judges the key
		}
		if !s.Secret {
			return nil, nil, nil, errdefs.InvalidArgumentf("config: [backends.%s] %s: only secret settings take an _env indirection; set %s itself", name, k, key)
		}
		for _, direct := range append([]string{s.Key}, s.Aliases...) {
			if _, both := section[direct]; both {
				return nil, nil, nil, errdefs.InvalidArgumentf("config: [backends.%s]: %s and %s are both set; keep one", name, direct, k)
			}
		}
		v, isString := section[k].(string)
		if !isString || !envVarRE.MatchString(v) {
			return nil, nil, nil, errdefs.InvalidArgumentf("config: [backends.%s] %s: want the name of an environment variable, like \"MY_TOKEN\"", name, k)
		}
		delete(out, k)
		named[s.Key] = v
		if val := strings.TrimSpace(m.cfg.Getenv(v)); val != "" {
			out[s.Key] = val
		} else {
			unset = append(unset, s)
		}
	}
	return out, named, unset, nil
}

// viewDescriptor is name's descriptor as the settings view explains it: a secret whose
// moat.toml entry names its variable (<key>_env) comes from that variable.
func (m *Manager) viewDescriptor(name string) backend.Descriptor {
	d := m.descriptor(name)
	named := m.backends().envNamed[name]
	if len(named) == 0 {
		return d
	}
	d.Settings = slices.Clone(d.Settings)
	for i, s := range d.Settings {
		if v, ok := named[s.Key]; ok {
			s.Env = []string{v}
			d.Settings[i] = s
		}
	}
	return d
}

// explainEnvKeys adds to an unavailable backend's reason the variables its moat.toml names
// for secrets that are not set.
func (m *Manager) explainEnvKeys(name string, h backend.Health) backend.Health {
	if h.State != backend.Unavailable {
		return h
	}
	named := m.backends().envNamed[name]
	for _, key := range slices.Sorted(maps.Keys(named)) {
		if v := named[key]; strings.TrimSpace(m.cfg.Getenv(v)) == "" {
			h.Reason += fmt.Sprintf("; [backends.%s] %s_env names %s, which is not set", name, key, v)
		}
	}
	return h
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
func (m *Manager) swapBackend(name string, b backend.Backend, saved, named map[string]string) {
	m.setMu.Lock()
	old := m.set
	next := &backendSet{backends: maps.Clone(old.backends), factories: old.factories, saved: maps.Clone(old.saved),
		envNamed: maps.Clone(old.envNamed)}
	next.backends[name] = b
	next.saved[name] = saved
	next.envNamed[name] = named
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
	d := m.viewDescriptor(name)
	if len(settings.Settable(d)) == 0 {
		return settings.View{}, errdefs.NotFoundf("moat: backend %s has no settings", name)
	}
	saved, err := settings.Get(ctx, m.store, m.keyring, name)
	if err != nil {
		return settings.View{}, err
	}
	return settings.ViewOf(d, m.viewSaved(name, saved), m.cfg.Getenv), nil
}

// AllBackendSettings returns the settings of every backend that has some, sorted by name.
func (m *Manager) AllBackendSettings(ctx context.Context) ([]settings.View, error) {
	saved, err := settings.Load(ctx, m.store, m.keyring)
	if err != nil {
		return nil, err
	}
	out := []settings.View{}
	for _, name := range m.backendNames() {
		if d := m.viewDescriptor(name); len(settings.Settable(d)) > 0 {
			out = append(out, settings.ViewOf(d, m.viewSaved(name, saved[name]), m.cfg.Getenv))
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
	d := m.viewDescriptor(name)
	cur, err := settings.Get(ctx, m.store, m.keyring, name)
	if err != nil {
		return settings.View{}, err
	}
	next, err := settings.Apply(d, cur, changes)
	if err != nil {
		return settings.View{}, err
	}
	fromVar := m.backends().envNamed[name]
	for k := range changes {
		if s, ok := settings.Field(d.Settings, k); ok && fromVar[s.Key] != "" {
			return settings.View{}, errdefs.FailedPreconditionf("moat: %s.%s comes from the environment variable %s (moat.toml %s_env), which the settings API does not override", name, s.Key, fromVar[s.Key], s.Key)
		}
	}
	f, rebuild := m.backends().factories[name]
	var nb backend.Backend
	var named map[string]string
	if rebuild {
		if nb, named, err = m.buildBackend(name, f, next); err != nil {
			return settings.View{}, err
		}
	}
	if err := settings.Save(ctx, m.store, m.keyring, name, next); err != nil {
		return settings.View{}, err
	}
	if rebuild {
		m.swapBackend(name, nb, next, named)
	} else {
		m.log.Warn("backend settings saved; this backend was given prebuilt and is not rebuilt", "backend", name)
	}
	return settings.ViewOf(d, m.viewSaved(name, next), m.cfg.Getenv), nil
}

// viewSaved is saved without the keys moat.toml takes from a named variable (<key>_env):
// the section wins over saved values.
func (m *Manager) viewSaved(name string, saved map[string]string) map[string]string {
	named := m.backends().envNamed[name]
	if len(named) == 0 {
		return saved
	}
	out := maps.Clone(saved)
	for key := range named {
		delete(out, key)
	}
	return out
}

// ReloadSettings reads the saved settings again and builds every backend whose settings
// changed since it was built (by another process sharing the store: a moatd replica, the
// CLI). Maintain calls it; a backend that cannot be built with the new values keeps its old
// build and the error is returned.
func (m *Manager) ReloadSettings(ctx context.Context) error {
	m.settingsMu.Lock()
	defer m.settingsMu.Unlock()
	saved, err := settings.Load(ctx, m.store, m.keyring)
	if err != nil {
		return err
	}
	set := m.backends()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(set.factories)) {
		if maps.Equal(saved[name], set.saved[name]) {
			continue
		}
		b, named, err := m.buildBackend(name, set.factories[name], saved[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.swapBackend(name, b, saved[name], named)
	}
	return errors.Join(errs...)
}

// RotateSettingsKey re-encrypts every saved setting with a new key in the key file and then
// drops the old keys (`moat settings rotate-key`). Other processes sharing the store must
// share the key file.
func (m *Manager) RotateSettingsKey(ctx context.Context) error {
	m.settingsMu.Lock()
	defer m.settingsMu.Unlock()
	return settings.Rotate(ctx, m.store, m.keyring)
}
