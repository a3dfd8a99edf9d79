// Package moat answers "how do I get an isolated place to run code, on whatever backend is
// here?": the Manager creates, finds and destroys sandboxes on any registered backend
// (Docker, bubblewrap, the restricted host, hosted providers), keeps a durable record of
// each, and runs commands and moves files in them. It is shaped like database/sql: import
// the backends you want (or github.com/moatsh/moat/backends/all) and a store, then Open.
//
//	m, err := moat.Open(ctx, moat.Config{})
//	sb, err := m.Create(ctx, moat.Spec{})
//	res, err := sb.Exec(ctx, moat.ExecRequest{Cmd: []string{"echo", "hi"}})
//
// Backend authors implement package backend; users never touch it.
package moat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
	"github.com/moatsh/moat/router"
	"github.com/moatsh/moat/settings"
	"github.com/moatsh/moat/store"
)

// Manager creates and tracks sandboxes. It is safe for concurrent use; open one per process
// and share it, like *sql.DB. Several processes may share one store.
type Manager struct {
	cfg      Config
	store    store.Store
	ownStore bool
	log      *slog.Logger
	setMu    sync.RWMutex // guards set (the pointer; a set is never modified)
	set      *backendSet
	// settingsMu serializes writers of saved settings (PutBackendSettings, ReloadSettings).
	settingsMu sync.Mutex
	keyring    *settings.Keyring // encrypts saved settings at rest

	healthMu sync.Mutex
	health   map[string]cachedHealth

	mu        sync.Mutex
	instances map[string]cachedInstance // sandbox id → attached instance
	lastTouch map[string]time.Time
	prefix    string // see idPrefix

	prefixInit singleflight.Group

	// bg owns the manager's background work (last-used updates): Close cancels bgCtx and
	// waits for it.
	bgMu     sync.Mutex
	bgClosed bool
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// cachedInstance is an attached instance and the backend build it came from, so a rebuilt
// backend (changed settings) is not served stale instances.
type cachedInstance struct {
	inst    backend.Instance
	backend backend.Backend
}

type cachedHealth struct {
	h  backend.Health
	at time.Time
}

// healthTTL bounds how stale a cached probe may be when routing.
const healthTTL = 5 * time.Second

// Option adds to what Open builds from Config.
type Option func(*openOptions)

type openOptions struct {
	instances    map[string]backend.Backend
	factories    map[string]backend.Factory
	noRegistered bool
}

// WithBackend gives the manager backend b under name, in place of the registered backend of
// that name. b is used as it is: it is not built again when its settings change.
func WithBackend(name string, b backend.Backend) Option {
	return func(o *openOptions) { o.instances[name] = b }
}

// WithFactory builds backend name with f, in place of the registered factory of that name,
// and again whenever the backend's saved settings change.
func WithFactory(name string, f backend.Factory) Option {
	return func(o *openOptions) { o.factories[name] = f }
}

// WithoutRegistered leaves out the registered backends: the manager has only those given by
// WithBackend and WithFactory. For tests and embedders that choose their backends exactly.
func WithoutRegistered() Option {
	return func(o *openOptions) { o.noRegistered = true }
}

// Open builds the backends (every registered one, unless opts say otherwise) from cfg, with
// the settings saved in the store, and opens the store (or uses cfg.Storage). It does not
// reconcile records with the backends: moatd's maintenance loop and `moat reconcile` do
// (Reconcile, Maintain). Close releases it.
func Open(ctx context.Context, cfg Config, opts ...Option) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	o := openOptions{instances: map[string]backend.Backend{}, factories: map[string]backend.Factory{}}
	for _, opt := range opts {
		opt(&o)
	}
	factories := map[string]backend.Factory{}
	if !o.noRegistered {
		for _, name := range backend.Names() {
			f, _ := backend.Lookup(name)
			factories[name] = f
		}
	}
	maps.Copy(factories, o.factories)
	for name := range o.instances {
		delete(factories, name)
	}
	for name := range cfg.Backends {
		if _, ok := factories[name]; !ok {
			if _, ok := o.instances[name]; !ok {
				return nil, errdefs.InvalidArgumentf("config: [backends.%s]: unknown backend (registered: %s)", name, strings.Join(backend.Names(), ", "))
			}
		}
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Logger,
		health:    map[string]cachedHealth{},
		instances: map[string]cachedInstance{},
		lastTouch: map[string]time.Time{},
	}
	m.bgCtx, m.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	keyFile := cfg.SettingsKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.Home, "settings.key")
	}
	m.keyring = settings.NewKeyring(keyFile)
	if cfg.Storage != nil {
		m.store = cfg.Storage
	} else {
		if err := os.MkdirAll(cfg.Home, 0o700); err != nil {
			return nil, fmt.Errorf("moat: create home %s: %w", cfg.Home, err)
		}
		s, err := store.Open(ctx, cfg.Store)
		if err != nil {
			return nil, err
		}
		m.store, m.ownStore = s, true
	}
	set, err := m.buildBackends(ctx, factories, o.instances)
	if err != nil {
		_ = m.Close()
		return nil, err
	}
	m.set = set
	return m, nil
}

// Close stops the manager's background work, waits for it, and releases the store when Open
// opened it. Sandboxes keep running.
func (m *Manager) Close() error {
	m.bgMu.Lock()
	m.bgClosed = true
	m.bgMu.Unlock()
	m.bgCancel()
	m.bg.Wait()
	if m.ownStore {
		return m.store.Close()
	}
	return nil
}

// background runs f on a goroutine the manager owns: Close cancels f's ctx and waits for it.
// After Close it does nothing.
func (m *Manager) background(f func(ctx context.Context)) {
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	if m.bgClosed {
		return
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f(m.bgCtx)
	}()
}

// Store returns the record store (for servers that keep settings beside records).
func (m *Manager) Store() store.Store { return m.store }

// randomBase32 returns n random lowercase base32 characters.
func randomBase32(n int) string {
	b := make([]byte, (n*5+7)/8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:n]
}

// installationKey is the settings key of this installation's tag.
const installationKey = "moat/installation-tag"

// installationTagLen is the length of the tag every sandbox id of one installation (one
// store) starts with, after "sb-".
const installationTagLen = 6

// idPrefix returns "sb-<tag>", the prefix of every sandbox id this installation makes,
// creating the tag on first use. Several installations (moat homes, test runs) may share one
// Docker daemon or provider account; the reconciler removes only orphans with this prefix,
// so it never touches another installation's sandboxes.
func (m *Manager) idPrefix(ctx context.Context) (string, error) {
	m.mu.Lock()
	p := m.prefix
	m.mu.Unlock()
	if p != "" {
		return p, nil
	}
	// One store round trip for concurrent first callers, without holding m.mu across it.
	pv, err, _ := m.prefixInit.Do("", func() (any, error) { return m.loadTag(ctx) })
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.prefix == "" {
		m.prefix = "sb-" + pv.(string)
	}
	return m.prefix, nil
}

// loadTag reads the installation tag, creating it when the store has none.
func (m *Manager) loadTag(ctx context.Context) (string, error) {
	v, err := m.store.GetSetting(ctx, installationKey)
	if errdefs.Is(err, errdefs.KindNotFound) {
		// Replicas starting at once on an empty store must agree on one tag (each sweeps
		// only its own prefix): the first CreateSetting wins and everyone reads that.
		err = m.store.CreateSetting(ctx, installationKey, []byte(randomBase32(installationTagLen)))
		if err != nil && !errdefs.Is(err, errdefs.KindAlreadyExists) {
			return "", err
		}
		v, err = m.store.GetSetting(ctx, installationKey)
	}
	if err != nil {
		return "", err
	}
	return string(v), nil
}

// newID returns moat's id for a new sandbox: the installation prefix and 14 random
// lowercase base32 characters (70 bits).
func (m *Manager) newID(ctx context.Context) (string, error) {
	p, err := m.idPrefix(ctx)
	if err != nil {
		return "", err
	}
	return p + randomBase32(14), nil
}

// BackendStatus is one backend as `moat backends` and GET /v1/backends show it.
type BackendStatus = moattype.BackendStatus

// BackendReport lists every backend and what auto picks, with the reasons.
type BackendReport = moattype.BackendReport

// Backends probes every backend (concurrently, each bounded by a few seconds) and reports
// their state and which one auto picks.
func (m *Manager) Backends(ctx context.Context) BackendReport {
	names := m.backendNames()
	statuses := make([]BackendStatus, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = BackendStatus{Descriptor: m.descriptor(n), Health: m.probe(ctx, n, true)}
		}()
	}
	wg.Wait()
	rep := BackendReport{Backends: statuses}
	d, err := router.Auto(m.candidates(ctx, names), m.policy())
	if err != nil {
		rep.AutoExplain = err.Error()
	} else {
		rep.Auto, rep.AutoExplain = d.Chosen, d.Explain()
		for i := range rep.Backends {
			rep.Backends[i].Auto = rep.Backends[i].Name == d.Chosen
		}
	}
	return rep
}

func (m *Manager) descriptor(name string) backend.Descriptor {
	b, _ := m.backend(name)
	d := b.Descriptor()
	d.Name = name
	return d
}

func (m *Manager) policy() router.Policy {
	return router.Policy{AllowUnisolated: m.cfg.Sandbox.AllowUnisolated}
}

// probe returns the backend's health, cached for healthTTL unless fresh is set.
func (m *Manager) probe(ctx context.Context, name string, fresh bool) backend.Health {
	m.healthMu.Lock()
	c, ok := m.health[name]
	m.healthMu.Unlock()
	if ok && !fresh && time.Since(c.at) < healthTTL {
		return c.h
	}
	h := backend.Health{State: backend.Ready}
	b, _ := m.backend(name)
	if p, ok := b.(backend.Prober); ok {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h = p.Probe(pctx)
		cancel()
		if h.State == "" {
			h.State = backend.Unavailable
		}
	}
	h = m.explainEnvKeys(name, h)
	m.healthMu.Lock()
	m.health[name] = cachedHealth{h: h, at: time.Now()}
	m.healthMu.Unlock()
	return h
}

func (m *Manager) candidates(ctx context.Context, names []string) []router.Candidate {
	out := make([]router.Candidate, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = router.Candidate{Name: n, Descriptor: m.descriptor(n), Health: m.probe(ctx, n, false)}
		}()
	}
	wg.Wait()
	return out
}

func (m *Manager) unknownBackend(name string) error {
	return errdefs.NotFoundf("moat: unknown backend %q (available: %s)", name, strings.Join(m.backendNames(), ", "))
}

// route decides which backends to try for spec, in order.
func (m *Manager) route(ctx context.Context, spec Spec) (router.Decision, error) {
	name := spec.Backend // a session's backend is already in (withSession)
	if name == "" || name == "auto" {
		name = m.cfg.Sandbox.Backend
	}
	if name == "" || name == "auto" {
		return router.Auto(m.candidates(ctx, m.backendNames()), m.policy())
	}
	if _, ok := m.backend(name); !ok {
		return router.Decision{}, m.unknownBackend(name)
	}
	c := router.Candidate{Name: name, Descriptor: m.descriptor(name), Health: m.probe(ctx, name, false)}
	return router.Explicit(c, m.policy())
}

// Create routes spec to a backend, records the sandbox, and creates it. Fields the spec
// leaves empty come from its session's settings (Session), then from the [sandbox] config.
// The record is written as "creating" before the backend is called and "active" after, so
// a crash in between is found by the reconciler. With auto routing, a create that fails with
// Unavailable fails over to the next usable backend; the reasons are kept on the record.
func (m *Manager) Create(ctx context.Context, spec Spec) (*Sandbox, error) {
	spec, err := m.withSession(ctx, spec)
	if err != nil {
		return nil, err
	}
	defaults := Spec{
		Image: m.cfg.Sandbox.Image, Workdir: m.cfg.Sandbox.Workdir,
		TTL: m.cfg.Sandbox.TTL, Env: m.cfg.Sandbox.Env,
	}
	spec, err = normalizeSpec(spec, defaults)
	if err != nil {
		return nil, err
	}
	if spec.Network == NetworkHost && !m.cfg.Network.AllowOutbound {
		return nil, errdefs.Newf(errdefs.ErrPermissionDenied, "moat: network %q is not allowed; set [network] allow_outbound = true", spec.Network)
	}
	// Host path fields are checked before anything is recorded, so a refused create leaves
	// nothing behind: for a backend named explicitly first (a refusal does not depend on
	// its health), then for every candidate, so failover cannot reach an unchecked backend.
	if _, ok := m.backend(spec.Backend); ok {
		if spec, err = m.checkHostPaths(ctx, m.descriptor(spec.Backend), spec); err != nil {
			return nil, err
		}
	}
	dec, err := m.route(ctx, spec)
	if err != nil {
		return nil, err
	}
	for _, name := range append([]string{dec.Chosen}, dec.Rest...) {
		if spec, err = m.checkHostPaths(ctx, m.descriptor(name), spec); err != nil {
			return nil, err
		}
	}
	asked := spec.Limits
	if spec.Limits, err = effectiveLimits(asked, m.cfg.Sandbox.Limits, m.descriptor(dec.Chosen)); err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("moat: encode spec: %w", err)
	}
	id, err := m.newID(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	rec := &store.Record{
		ID: id, Name: spec.Name, Backend: dec.Chosen, SessionID: spec.SessionID,
		Status: store.StatusCreating, Spec: specJSON, Labels: spec.Labels,
		CreatedAt: now, UpdatedAt: now, LastUsed: now,
		Handle: pendingHandle(dec.Chosen),
	}
	if spec.TTL > 0 {
		rec.ExpiresAt = now.Add(time.Duration(spec.TTL))
	}
	if err := m.store.Create(ctx, rec); err != nil {
		return nil, err
	}
	tries := append([]string{dec.Chosen}, dec.Rest...)
	var failures []string
	for i, name := range tries {
		b, ok := m.backend(name)
		if !ok {
			err := m.unknownBackend(name)
			m.recordCreateFailure(ctx, rec, failures, err)
			return nil, err
		}
		inst, err := b.Create(ctx, m.createRequest(rec.ID, spec))
		if err == nil {
			h, failed := inst.Handle(), strings.Join(failures, "; ")
			// Expects the record as written above: a concurrent Destroy (or a reconciler
			// that took this create for interrupted) wins, and the new sandbox goes.
			err := m.update(ctx, rec, func(r *store.Record) {
				r.Backend, r.Handle, r.Status, r.LastError = name, h, store.StatusActive, failed
			})
			if err != nil {
				// The sandbox exists but its record could not say so: remove it rather
				// than leak it (the reconciler would do the same later).
				_ = inst.Destroy(context.WithoutCancel(ctx))
				m.recordCreateFailure(ctx, rec, failures, fmt.Errorf("%s: recording the new sandbox: %w", name, err))
				return nil, err
			}
			m.cacheInstance(rec.ID, inst, b)
			return newSandbox(m, rec, spec), nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", name, err))
		failover := i+1 < len(tries) && errdefs.Is(err, errdefs.KindUnavailable) && ctx.Err() == nil
		if !failover {
			m.recordCreateFailure(ctx, rec, failures, nil)
			if len(failures) > 1 {
				return nil, fmt.Errorf("moat: create failed on every candidate: %s: %w", strings.Join(failures[:len(failures)-1], "; "), err)
			}
			return nil, err
		}
		m.log.Warn("create failed, failing over", "id", rec.ID, "backend", name, "next", tries[i+1], "err", err)
		// The next backend's limits: a local one takes the defaults a hosted one left off.
		next := tries[i+1]
		nextLimits, lerr := effectiveLimits(asked, m.cfg.Sandbox.Limits, m.descriptor(next))
		if lerr != nil {
			m.recordCreateFailure(ctx, rec, failures, fmt.Errorf("%s: %w", next, lerr))
			return nil, lerr
		}
		spec.Limits = nextLimits
		nextSpec, err := json.Marshal(spec)
		if err != nil {
			m.recordCreateFailure(ctx, rec, failures, err)
			return nil, fmt.Errorf("moat: encode spec: %w", err)
		}
		failed := strings.Join(failures, "; ")
		if err := m.update(ctx, rec, func(r *store.Record) {
			r.Backend, r.Handle, r.LastError, r.Spec = next, pendingHandle(next), failed, nextSpec
		}); err != nil {
			m.recordCreateFailure(ctx, rec, failures, fmt.Errorf("recording the failover: %w", err))
			return nil, err
		}
	}
	panic("unreachable")
}

// recordCreateFailure marks rec as a failed create, so it does not stay "creating" while
// this process lives (the reconciler leaves in-flight creates of live processes alone). It
// writes even when ctx has ended: the caller leaving is what often got us here. It expects
// the record as this create last wrote it: when someone else changed it since (a Destroy),
// theirs stands.
func (m *Manager) recordCreateFailure(ctx context.Context, rec *store.Record, failures []string, last error) {
	if last != nil {
		failures = append(failures, last.Error())
	}
	msg := strings.Join(failures, "; ")
	err := m.update(context.WithoutCancel(ctx), rec, func(r *store.Record) {
		r.Status, r.LastError = store.StatusError, msg
	})
	if err != nil && !isStale(err) {
		m.log.Error("record create failure", "id", rec.ID, "err", err)
	}
}

// pendingHandle marks a record whose backend call is in flight, naming the process making
// it, so the reconciler can tell an interrupted create from one still running elsewhere.
func pendingHandle(backendName string) backend.Handle {
	host, _ := os.Hostname()
	st, _ := json.Marshal(pendingState{PID: os.Getpid(), Host: host, Boot: processStart()})
	return backend.Handle{Backend: backendName, Version: pendingVersion, State: st}
}

// pendingVersion marks a pending handle; backends never use negative versions.
const pendingVersion = -1

type pendingState struct {
	PID  int    `json:"pid"`
	Host string `json:"host"`
	Boot string `json:"start"` // the process's start time, so a reused pid is not mistaken
}

func (m *Manager) createRequest(id string, spec Spec) *backend.CreateRequest {
	return &backend.CreateRequest{
		ID: id, Name: spec.Name, Image: spec.Image, Env: cloneMap(spec.Env), Workdir: spec.Workdir,
		Labels: cloneMap(spec.Labels), Limits: spec.Limits, Network: spec.Network,
		TTL: time.Duration(spec.TTL), Options: spec.Options,
	}
}

// update stores a change to rec, a record the caller read, by compare-and-swap on
// rec.Version: change is applied to a copy, and the write succeeds only when the stored
// record is still the one the caller read. On success rec is the stored record (new
// Version); on failure rec is left as it was.
//
// The only write that may come between is a last-used touch, which changes nothing a
// decision rests on: then update reads the record again and applies change to it. Any other
// write (every one goes through update, which sets UpdatedAt) means the caller decided on a
// stale view, so update writes nothing and says so: NotFound when the record has been
// destroyed (or deleted) meanwhile, Conflict otherwise. Callers must not retry blindly: they
// read again and decide again (see isStale).
func (m *Manager) update(ctx context.Context, rec *store.Record, change func(r *store.Record)) error {
	read := rec
	for attempt := 0; ; attempt++ {
		next := *read
		change(&next)
		next.UpdatedAt = time.Now().UTC()
		err := m.store.Update(ctx, &next)
		if err == nil {
			*rec = next
			return nil
		}
		if !errdefs.Is(err, errdefs.KindConflict) {
			return err
		}
		cur, gerr := m.store.Get(ctx, rec.ID)
		switch {
		case errdefs.Is(gerr, errdefs.KindNotFound):
			return errdefs.NotFoundf("moat: sandbox %s: record deleted concurrently", rec.ID)
		case gerr != nil:
			return gerr
		case cur.Status == store.StatusDestroyed:
			return errdefs.NotFoundf("moat: sandbox %s was destroyed concurrently", rec.ID)
		case !sameState(cur, rec) || attempt >= 5:
			return errdefs.Conflictf("moat: sandbox %s changed concurrently (now %s, version %d; expected version %d)", rec.ID, cur.Status, cur.Version, rec.Version)
		}
		read = cur // only last-used moved: apply the change again
	}
}

// isStale reports whether err is update's answer that the record changed under the caller.
func isStale(err error) bool {
	return errdefs.Is(err, errdefs.KindConflict) || errdefs.Is(err, errdefs.KindNotFound)
}

// sameState reports whether two versions of a record agree on everything but the last-used
// time (the one field written outside update).
func sameState(a, b *store.Record) bool {
	return a.Status == b.Status && a.Backend == b.Backend && sameHandle(a.Handle, b.Handle) &&
		a.LastError == b.LastError && a.Name == b.Name && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.ExpiresAt.Equal(b.ExpiresAt) && bytes.Equal(a.Spec, b.Spec)
}

func sameHandle(a, b backend.Handle) bool {
	return a.Backend == b.Backend && a.Version == b.Version && bytes.Equal(a.State, b.State)
}

func (m *Manager) cacheInstance(id string, inst backend.Instance, from backend.Backend) {
	m.mu.Lock()
	m.instances[id] = cachedInstance{inst: inst, backend: from}
	m.mu.Unlock()
}

func (m *Manager) forgetInstance(id string) {
	m.mu.Lock()
	delete(m.instances, id)
	delete(m.lastTouch, id)
	m.mu.Unlock()
}

// instance returns the attached instance of rec, attaching on first use.
func (m *Manager) instance(ctx context.Context, rec *store.Record) (backend.Instance, error) {
	m.mu.Lock()
	c, ok := m.instances[rec.ID]
	m.mu.Unlock()
	if ok {
		return c.inst, nil
	}
	b, ok := m.backend(rec.Backend)
	if !ok {
		return nil, errdefs.Unavailablef("moat: sandbox %s is on backend %q, which this moat does not have", rec.ID, rec.Backend)
	}
	inst, err := b.Attach(ctx, rec.Handle)
	if err != nil {
		return nil, err
	}
	m.cacheInstance(rec.ID, inst, b)
	return inst, nil
}

// Get finds a sandbox by id or name. Destroyed sandboxes are NotFound.
func (m *Manager) Get(ctx context.Context, idOrName string) (*Sandbox, error) {
	rec, err := m.lookup(ctx, idOrName)
	if err != nil {
		return nil, err
	}
	var spec Spec
	if err := json.Unmarshal(rec.Spec, &spec); err != nil {
		return nil, fmt.Errorf("moat: sandbox %s: stored spec: %w", rec.ID, err)
	}
	return newSandbox(m, rec, spec), nil
}

func (m *Manager) lookup(ctx context.Context, idOrName string) (*store.Record, error) {
	if idOrName == "" {
		return nil, errdefs.InvalidArgumentf("moat: empty sandbox id")
	}
	rec, err := m.store.Get(ctx, idOrName)
	if errdefs.Is(err, errdefs.KindNotFound) {
		recs, lerr := m.store.List(ctx, store.Filter{Name: idOrName})
		if lerr != nil {
			return nil, lerr
		}
		if len(recs) == 1 {
			rec, err = recs[0], nil
		}
	}
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) {
			return nil, errdefs.NotFoundf("moat: no sandbox %q", idOrName)
		}
		return nil, err
	}
	if rec.Status == store.StatusDestroyed {
		return nil, errdefs.NotFoundf("moat: sandbox %s was destroyed", rec.ID)
	}
	return rec, nil
}

// ListFilter selects sandboxes in List.
type ListFilter = moattype.ListFilter

// List returns the records of matching sandboxes.
func (m *Manager) List(ctx context.Context, f ListFilter) ([]Info, error) {
	recs, err := m.store.List(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(recs))
	for _, r := range recs {
		info, err := infoOf(r)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// errGone reports whether err says the backend no longer has the sandbox.
func errGone(err error) bool { return errdefs.Is(err, errdefs.KindNotFound) }
