package moat

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// Session is a session's stored settings (backend, image, limits, network, env, labels,
// mode) that every sandbox created with its id starts from: the spec wins over the session,
// the session over the [sandbox] config.
type Session = moattype.Session

// SessionPatch changes some of a session's fields (PatchSession).
type SessionPatch = moattype.SessionPatch

// LimitsPatch changes some of a session's limits.
type LimitsPatch = moattype.LimitsPatch

// SessionMode is "isolated" (the default) or "host" (unsandboxed, only with
// [sandbox] allow_unisolated).
type SessionMode = moattype.SessionMode

// Session modes.
const (
	SessionIsolated = moattype.SessionIsolated
	SessionHost     = moattype.SessionHost
)

// MaxSessionIDBytes is the longest session id moat accepts.
const MaxSessionIDBytes = moattype.MaxSessionIDBytes

// SessionTeardown is what DestroySessionSandboxes did.
type SessionTeardown = moattype.SessionTeardown

// SandboxFailure is one sandbox a bulk operation could not act on.
type SandboxFailure = moattype.SandboxFailure

// Settings keys. A session record is JSON under "sessions/<id>". Before session records,
// a session had only a backend override, stored as text under "session/<id>/backend":
// that key is still read (a session without a record is its old override), and writing
// the record removes it, so overrides saved by older versions survive an upgrade.
const sessionPrefix = "sessions/"

func sessionRecordKey(id string) string { return sessionPrefix + id }

const (
	legacySessionPrefix = "session/"
	legacySessionSuffix = "/backend"
)

func legacySessionKey(id string) string { return legacySessionPrefix + id + legacySessionSuffix }

// sessionMu serializes the read-modify-write of session records in this process, so
// concurrent patches do not lose each other's fields. (The settings store has no
// compare-and-swap: two processes patching one session at the same instant may still race,
// the last write winning whole.)
var sessionMu sync.Mutex

// CheckSessionID reports whether id is a session id moat accepts: non-empty UTF-8 text of
// at most MaxSessionIDBytes bytes without control characters, and not "." or "..".
func CheckSessionID(id string) error {
	switch {
	case id == "":
		return errdefs.InvalidArgumentf("moat: empty session id")
	case len(id) > MaxSessionIDBytes:
		return errdefs.InvalidArgumentf("moat: session id is %d bytes long; the limit is %d", len(id), MaxSessionIDBytes)
	case !utf8.ValidString(id):
		return errdefs.InvalidArgumentf("moat: session id %q is not valid UTF-8", id)
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return errdefs.InvalidArgumentf("moat: session id %q contains a control character", id)
	case id == "." || id == "..":
		// A URL path segment cannot carry them: /v1/sessions/.. is /v1/.
		return errdefs.InvalidArgumentf("moat: session id %q is reserved", id)
	}
	return nil
}

// Session returns the stored session id; NotFound when it has none.
func (m *Manager) Session(ctx context.Context, id string) (Session, error) {
	if err := CheckSessionID(id); err != nil {
		return Session{}, err
	}
	s, ok, err := m.loadSession(ctx, id)
	if err != nil {
		return Session{}, err
	}
	if !ok {
		return Session{}, errdefs.NotFoundf("moat: no session %q", id)
	}
	return s, nil
}

// loadSession reads session id: its record, else its old backend override.
func (m *Manager) loadSession(ctx context.Context, id string) (Session, bool, error) {
	v, err := m.store.GetSetting(ctx, sessionRecordKey(id))
	if err == nil {
		var s Session
		if err := json.Unmarshal(v, &s); err != nil {
			return Session{}, false, fmt.Errorf("moat: session %q: stored record: %w", id, err)
		}
		s.ID = id
		if s.Mode == "" {
			s.Mode = SessionIsolated
		}
		return s, true, nil
	}
	if !errdefs.Is(err, errdefs.KindNotFound) {
		return Session{}, false, err
	}
	v, err = m.store.GetSetting(ctx, legacySessionKey(id))
	if errdefs.Is(err, errdefs.KindNotFound) {
		return Session{}, false, nil
	}
	if err != nil {
		return Session{}, false, err
	}
	return Session{ID: id, Backend: string(v), Mode: SessionIsolated}, true, nil
}

// Sessions lists every stored session, by id.
func (m *Manager) Sessions(ctx context.Context) ([]Session, error) {
	recs, err := m.store.ListSettings(ctx, sessionPrefix)
	if err != nil {
		return nil, err
	}
	legacy, err := m.store.ListSettings(ctx, legacySessionPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]Session, 0, len(recs)+len(legacy))
	for k, v := range recs {
		var s Session
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("moat: session %q: stored record: %w", strings.TrimPrefix(k, sessionPrefix), err)
		}
		s.ID = strings.TrimPrefix(k, sessionPrefix)
		if s.Mode == "" {
			s.Mode = SessionIsolated
		}
		out = append(out, s)
	}
	for k, v := range legacy {
		id, ok := strings.CutSuffix(strings.TrimPrefix(k, legacySessionPrefix), legacySessionSuffix)
		if !ok || id == "" {
			continue
		}
		if _, dup := recs[sessionRecordKey(id)]; dup {
			continue
		}
		out = append(out, Session{ID: id, Backend: string(v), Mode: SessionIsolated})
	}
	slices.SortFunc(out, func(a, b Session) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// PutSession stores s, replacing the whole session. It checks s first: see checkSession.
func (m *Manager) PutSession(ctx context.Context, s Session) (Session, error) {
	sessionMu.Lock()
	defer sessionMu.Unlock()
	return m.writeSession(ctx, s)
}

// PatchSession changes the fields of session id that p sets, creating the session when it
// has none. Concurrent patches of one Manager are serialized, so none loses another's
// fields.
func (m *Manager) PatchSession(ctx context.Context, id string, p SessionPatch) (Session, error) {
	if err := CheckSessionID(id); err != nil {
		return Session{}, err
	}
	sessionMu.Lock()
	defer sessionMu.Unlock()
	cur, _, err := m.loadSession(ctx, id)
	if err != nil {
		return Session{}, err
	}
	cur.ID = id
	return m.writeSession(ctx, p.Apply(cur))
}

// writeSession checks and stores s. The caller holds sessionMu.
func (m *Manager) writeSession(ctx context.Context, s Session) (Session, error) {
	s, err := m.checkSession(s)
	if err != nil {
		return Session{}, err
	}
	// A session's image reaches every later create of the session, the operator's own
	// included, so a host path in it is judged now, by who wrote it: through the API it
	// must lie under an allowed root for every backend the session may route to.
	names := []string{s.Backend}
	if s.Backend == "" || s.Backend == "auto" {
		names = m.backendNames()
	}
	for _, name := range names {
		if _, ok := m.backend(name); !ok {
			continue // checkSession has judged the name
		}
		if _, err := m.checkHostPaths(ctx, m.descriptor(name), Spec{Image: s.Image}); err != nil {
			return Session{}, err
		}
	}
	s.UpdatedAt = time.Now().UTC()
	v, err := json.Marshal(s)
	if err != nil {
		return Session{}, fmt.Errorf("moat: encode session: %w", err)
	}
	if err := m.store.PutSetting(ctx, sessionRecordKey(s.ID), v); err != nil {
		return Session{}, err
	}
	// The record now holds the backend: the old override must not come back if the
	// record is deleted.
	if err := m.store.DeleteSetting(ctx, legacySessionKey(s.ID)); err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
		return Session{}, err
	}
	return s, nil
}

// DeleteSession removes session id's settings (its sandboxes stay: see
// DestroySessionSandboxes). Removing a session that has none succeeds.
func (m *Manager) DeleteSession(ctx context.Context, id string) error {
	if err := CheckSessionID(id); err != nil {
		return err
	}
	sessionMu.Lock()
	defer sessionMu.Unlock()
	for _, k := range []string{sessionRecordKey(id), legacySessionKey(id)} {
		if err := m.store.DeleteSetting(ctx, k); err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
			return err
		}
	}
	return nil
}

// SetSessionBackend makes sandboxes created with this session id use backend name (unless
// their spec names one): PatchSession of the backend alone. It is stored, so it survives
// restarts.
func (m *Manager) SetSessionBackend(ctx context.Context, session, name string) error {
	if name == "" {
		return errdefs.InvalidArgumentf("moat: empty backend name")
	}
	_, err := m.PatchSession(ctx, session, SessionPatch{Backend: &name})
	return err
}

// SessionBackend returns the session's backend; NotFound when it names none.
func (m *Manager) SessionBackend(ctx context.Context, session string) (string, error) {
	s, err := m.Session(ctx, session)
	if err != nil {
		return "", err
	}
	if s.Backend == "" {
		return "", errdefs.NotFoundf("moat: session %q has no backend override", session)
	}
	return s.Backend, nil
}

// ClearSessionBackend removes the session's backend, keeping its other settings.
func (m *Manager) ClearSessionBackend(ctx context.Context, session string) error {
	if err := CheckSessionID(session); err != nil {
		return err
	}
	sessionMu.Lock()
	defer sessionMu.Unlock()
	cur, ok, err := m.loadSession(ctx, session)
	if err != nil || !ok || cur.Backend == "" {
		return err
	}
	cur.Backend = ""
	_, err = m.writeSession(ctx, cur)
	return err
}

// checkSession validates s and returns it normalized (mode spelled out, maps copied). The
// errors: InvalidArgument for a bad id, mode, image, limits, env or labels; NotFound for an
// unknown backend; PermissionDenied for mode "host" without [sandbox] allow_unisolated and
// network "host" without [network] allow_outbound.
func (m *Manager) checkSession(s Session) (Session, error) {
	if err := CheckSessionID(s.ID); err != nil {
		return s, err
	}
	fail := func(err error) (Session, error) {
		return s, errdefs.Wrap(errdefs.ErrInvalidArgument, fmt.Errorf("moat: session %q: %w", s.ID, err))
	}
	if s.Mode == "" {
		s.Mode = SessionIsolated
	}
	switch s.Mode {
	case SessionIsolated:
	case SessionHost:
		if !m.cfg.Sandbox.AllowUnisolated {
			return s, errdefs.Newf(errdefs.ErrPermissionDenied, "moat: session %q: mode host runs sandboxes unisolated on this machine; set [sandbox] allow_unisolated = true", s.ID)
		}
	default:
		return fail(fmt.Errorf("invalid mode %q: want isolated or host", s.Mode))
	}
	if s.Backend == "auto" {
		s.Backend = ""
	}
	if s.Backend != "" {
		if _, ok := m.backend(s.Backend); !ok {
			return s, m.unknownBackend(s.Backend)
		}
	}
	if s.Mode == SessionHost {
		if s.Backend != "" && m.descriptor(s.Backend).Isolation != backend.IsolationNone {
			return fail(fmt.Errorf("mode host runs on the restricted host backend, not on %q: leave the backend out", s.Backend))
		}
		if _, err := m.hostBackend(); err != nil {
			return s, err
		}
	}
	if !utf8.ValidString(s.Image) || strings.IndexFunc(s.Image, unicode.IsControl) >= 0 {
		return fail(fmt.Errorf("image %q is not printable UTF-8 text", s.Image))
	}
	if s.Network == NetworkHost && !m.cfg.Network.AllowOutbound {
		return s, errdefs.Newf(errdefs.ErrPermissionDenied, "moat: session %q: network %q is not allowed; set [network] allow_outbound = true", s.ID, s.Network)
	}
	// The same rules as a spec's (limits, network, env, labels), without defaults.
	norm, err := normalizeSpec(Spec{Image: s.Image, Limits: s.Limits, Network: s.Network, Env: s.Env, Labels: s.Labels}, Spec{})
	if err != nil {
		return fail(err)
	}
	s.Env, s.Labels = norm.Env, norm.Labels
	return s, nil
}

// hostBackend names the backend mode "host" runs on: the registered backend of isolation
// none (the restricted host), the first by name if there were several.
func (m *Manager) hostBackend() (string, error) {
	for _, n := range m.backendNames() {
		if m.descriptor(n).Isolation == backend.IsolationNone {
			return n, nil
		}
	}
	return "", errdefs.FailedPreconditionf("moat: session mode host needs the restricted host backend, which this moat does not have")
}

// withSession returns spec with the settings of its session under it: each field the spec
// leaves empty takes the session's; env and labels merge key by key, the spec's winning.
// A session mode "host" routes to the host backend unless the spec names a backend.
func (m *Manager) withSession(ctx context.Context, spec Spec) (Spec, error) {
	if spec.SessionID == "" {
		return spec, nil
	}
	if err := CheckSessionID(spec.SessionID); err != nil {
		return spec, err
	}
	s, ok, err := m.loadSession(ctx, spec.SessionID)
	if err != nil || !ok {
		return spec, err
	}
	named := spec.Backend != "" && spec.Backend != "auto"
	if !named && s.Backend != "" {
		spec.Backend, named = s.Backend, true
	}
	if s.Mode == SessionHost {
		if !m.cfg.Sandbox.AllowUnisolated {
			return spec, errdefs.Newf(errdefs.ErrPermissionDenied, "moat: session %q is in mode host, which [sandbox] allow_unisolated does not allow", s.ID)
		}
		if !named {
			if spec.Backend, err = m.hostBackend(); err != nil {
				return spec, err
			}
		}
	}
	if spec.Image == "" {
		spec.Image = s.Image
	}
	if spec.Network == "" {
		spec.Network = s.Network
	}
	l := &spec.Limits
	if l.MemoryBytes == 0 {
		l.MemoryBytes = s.Limits.MemoryBytes
	}
	if l.CPUs == 0 {
		l.CPUs = s.Limits.CPUs
	}
	if l.PIDs == 0 {
		l.PIDs = s.Limits.PIDs
	}
	if l.DiskBytes == 0 {
		l.DiskBytes = s.Limits.DiskBytes
	}
	spec.Env = underlay(s.Env, spec.Env)
	spec.Labels = underlay(s.Labels, spec.Labels)
	return spec, nil
}

// underlay returns over with base's keys added where over has none, as a new map (nil when
// both are empty).
func underlay(base, over map[string]string) map[string]string {
	if len(base) == 0 {
		return over
	}
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// DestroySessionSandboxes destroys every live sandbox of session id, a few at a time, and
// says which were destroyed and which were not (each with its error). The error is nil
// when all were destroyed, else SessionTeardown.Err: of the first failure's kind, naming
// every sandbox left. The session's settings stay (DeleteSession removes them).
func (m *Manager) DestroySessionSandboxes(ctx context.Context, id string) (SessionTeardown, error) {
	t := SessionTeardown{Session: id, Destroyed: []string{}}
	if err := CheckSessionID(id); err != nil {
		return t, err
	}
	infos, err := m.List(ctx, ListFilter{SessionID: id})
	if err != nil {
		return t, err
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, 4)
	)
	for _, in := range infos {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := m.destroy(ctx, in.ID)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Failed = append(t.Failed, SandboxFailure{ID: in.ID, Kind: errdefs.KindOf(err), Error: err.Error()})
			} else {
				t.Destroyed = append(t.Destroyed, in.ID)
			}
		}()
	}
	wg.Wait()
	slices.Sort(t.Destroyed)
	slices.SortFunc(t.Failed, func(a, b SandboxFailure) int { return strings.Compare(a.ID, b.ID) })
	return t, t.Err()
}
