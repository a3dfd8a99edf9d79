// Package settings answers "what has the operator set for each remote backend, and what
// does a backend read?": backend settings (API tokens, team ids, URLs) stored in the record
// store beside the sandboxes, written through the API and read by backends through an
// environment overlay. Explicit settings win over environment aliases (VERCEL_TOKEN, ...),
// and secrets are write-only: views say whether one is configured and whether it came from
// the environment, never its value.
package settings

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// Field is one setting of a backend.
type Field struct {
	Key string
	// Env lists the environment aliases, most preferred first.
	Env []string
	// Secret settings are write-only.
	Secret bool
}

// Schema is the settings a backend takes through the API.
type Schema struct {
	Backend string
	Fields  []Field
}

// Schemas are the remote backends' settings. Keys match each backend's [backends.<name>]
// section keys.
var Schemas = []Schema{
	{"daytona", []Field{
		{Key: "api_key", Env: []string{"DAYTONA_API_KEY", "DAYTONA_JWT_TOKEN"}, Secret: true},
		{Key: "api_url", Env: []string{"DAYTONA_API_URL", "DAYTONA_SERVER_URL"}},
		{Key: "organization_id", Env: []string{"DAYTONA_ORGANIZATION_ID"}},
		{Key: "target", Env: []string{"DAYTONA_TARGET"}},
	}},
	{"e2b", []Field{
		{Key: "token", Env: []string{"E2B_API_KEY"}, Secret: true},
		{Key: "domain", Env: []string{"E2B_DOMAIN"}},
		{Key: "api_url", Env: []string{"E2B_API_URL"}},
	}},
	{"modal", []Field{
		{Key: "token_id", Env: []string{"MODAL_TOKEN_ID"}, Secret: true},
		{Key: "token_secret", Env: []string{"MODAL_TOKEN_SECRET"}, Secret: true},
	}},
	{"runloop", []Field{
		{Key: "api_key", Env: []string{"RUNLOOP_API_KEY"}, Secret: true},
	}},
	{"sprites", []Field{
		{Key: "token", Env: []string{"SPRITES_TOKEN"}, Secret: true},
	}},
	{"vercel", []Field{
		{Key: "token", Env: []string{"VERCEL_TOKEN", "VERCEL_OIDC_TOKEN"}, Secret: true},
		{Key: "team_id", Env: []string{"VERCEL_TEAM_ID"}},
		{Key: "project_id", Env: []string{"VERCEL_PROJECT_ID"}},
		{Key: "api_url", Env: []string{"VERCEL_API_URL"}},
	}},
}

// Lookup returns the schema of backend name.
func Lookup(name string) (Schema, bool) {
	for _, s := range Schemas {
		if s.Backend == name {
			return s, true
		}
	}
	return Schema{}, false
}

func (s Schema) field(key string) (Field, bool) {
	for _, f := range s.Fields {
		if f.Key == key {
			return f, true
		}
	}
	return Field{}, false
}

// SecretState says whether a write-only setting has a value and where it came from.
type SecretState struct {
	Configured bool `json:"configured"`
	FromEnv    bool `json:"from_env"`
	// Env is the environment alias the value may come from.
	Env string `json:"env,omitempty"`
}

// View is one backend's settings as the API shows them: non-secret values, and only the
// state of secrets.
type View struct {
	Name string `json:"name"`
	// Values are the effective non-secret settings (explicit, else from the environment).
	Values map[string]string `json:"values"`
	// Secrets are the write-only settings' states, by key.
	Secrets map[string]SecretState `json:"secrets"`
	// TokenConfigured is true when every secret of the backend has a value.
	TokenConfigured bool `json:"token_configured"`
	// FromEnv is true when a secret's value comes from the environment rather than an
	// explicit setting.
	FromEnv bool `json:"from_env"`
}

// maxValue bounds one setting's length; tokens are far shorter.
const maxValue = 8 << 10

// Settings reads and writes backend settings in a store. It is safe for concurrent use.
type Settings struct {
	mu     sync.Mutex // serializes read-modify-write of one process's Puts
	st     func() store.Store
	getenv func(string) string
}

// New returns Settings kept in the store st returns (a func, so a server can switch stores
// after start-up; nil from it means no store yet: nothing explicit), with getenv as the
// environment (nil: no environment).
func New(st func() store.Store, getenv func(string) string) *Settings {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	return &Settings{st: st, getenv: getenv}
}

func key(backend string) string { return "backend/" + backend + "/settings" }

// Explicit returns the settings stored for backend (secrets included: for backends, never
// for the API).
func (s *Settings) Explicit(ctx context.Context, backend string) (map[string]string, error) {
	st := s.st()
	if st == nil {
		return map[string]string{}, nil // no store yet (start-up): nothing explicit
	}
	v, err := st.GetSetting(ctx, key(backend))
	if errdefs.Is(err, errdefs.KindNotFound) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("settings: %s: stored value: %w", backend, err)
	}
	return out, nil
}

// Value returns the effective value of one setting: explicit, else the first set
// environment alias. fromEnv says which; ok is false when neither has one.
func (s *Settings) Value(ctx context.Context, backend, k string) (value string, fromEnv, ok bool, err error) {
	sch, found := Lookup(backend)
	if !found {
		return "", false, false, errdefs.NotFoundf("settings: backend %q has no settings", backend)
	}
	f, found := sch.field(k)
	if !found {
		return "", false, false, errdefs.NotFoundf("settings: backend %s has no setting %q", backend, k)
	}
	exp, err := s.Explicit(ctx, backend)
	if err != nil {
		return "", false, false, err
	}
	v, fe, ok := s.effective(exp, f)
	return v, fe, ok, nil
}

func (s *Settings) effective(explicit map[string]string, f Field) (string, bool, bool) {
	if v := explicit[f.Key]; v != "" {
		return v, false, true
	}
	for _, e := range f.Env {
		if v := s.getenv(e); v != "" {
			return v, true, true
		}
	}
	return "", false, false
}

// View returns backend's settings with secrets reduced to their state.
func (s *Settings) View(ctx context.Context, backend string) (View, error) {
	sch, ok := Lookup(backend)
	if !ok {
		return View{}, errdefs.NotFoundf("settings: backend %q has no settings (known: %s)", backend, strings.Join(names(), ", "))
	}
	exp, err := s.Explicit(ctx, backend)
	if err != nil {
		return View{}, err
	}
	v := View{Name: backend, Values: map[string]string{}, Secrets: map[string]SecretState{}, TokenConfigured: true}
	for _, f := range sch.Fields {
		val, fromEnv, ok := s.effective(exp, f)
		if !f.Secret {
			if ok {
				v.Values[f.Key] = val
			}
			continue
		}
		st := SecretState{Configured: ok, FromEnv: fromEnv}
		if len(f.Env) > 0 {
			st.Env = f.Env[0]
		}
		v.Secrets[f.Key] = st
		v.TokenConfigured = v.TokenConfigured && ok
		v.FromEnv = v.FromEnv || fromEnv
	}
	return v, nil
}

// ViewAll returns every backend's view, sorted by name.
func (s *Settings) ViewAll(ctx context.Context) ([]View, error) {
	out := make([]View, 0, len(Schemas))
	for _, n := range names() {
		v, err := s.View(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Put applies changes to backend's explicit settings: a nil value removes the key (its
// environment alias applies again). Unknown keys and values that are not short UTF-8 text
// are InvalidArgument; nothing is written then.
func (s *Settings) Put(ctx context.Context, backend string, changes map[string]*string) error {
	sch, ok := Lookup(backend)
	if !ok {
		return errdefs.NotFoundf("settings: backend %q has no settings (known: %s)", backend, strings.Join(names(), ", "))
	}
	for k, v := range changes {
		if _, ok := sch.field(k); !ok {
			var keys []string
			for _, f := range sch.Fields {
				keys = append(keys, f.Key)
			}
			return errdefs.InvalidArgumentf("settings: backend %s has no setting %q (known: %s)", backend, k, strings.Join(keys, ", "))
		}
		if v == nil {
			continue
		}
		if len(*v) > maxValue || !utf8.ValidString(*v) || strings.ContainsAny(*v, "\x00\r\n") {
			// The value is not quoted: it may be a secret.
			return errdefs.InvalidArgumentf("settings: %s.%s: value must be one line of UTF-8 text of at most %d bytes", backend, k, maxValue)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st() == nil {
		return errdefs.Unavailablef("settings: no store")
	}
	exp, err := s.Explicit(ctx, backend)
	if err != nil {
		return err
	}
	for k, v := range changes {
		if v == nil || *v == "" {
			delete(exp, k)
		} else {
			exp[k] = *v
		}
	}
	if err := checkEndpointSecrets(sch, exp); err != nil {
		return err
	}
	if len(exp) == 0 {
		return s.st().DeleteSetting(ctx, key(backend))
	}
	b, err := json.Marshal(exp)
	if err != nil {
		return err
	}
	return s.st().PutSetting(ctx, key(backend), b)
}

// checkEndpointSecrets refuses explicit settings that would send a secret taken from the
// environment to a URL set through the API: whoever holds an API token could otherwise
// point api_url at their own server and collect the operator's provider token. With an
// explicit endpoint (*_url, or E2B's domain, from which its URLs derive), every secret must
// be explicit too (set in the same request, or before).
func checkEndpointSecrets(sch Schema, exp map[string]string) error {
	var urls []string
	for k := range exp {
		if strings.HasSuffix(k, "_url") || k == "domain" {
			urls = append(urls, k)
		}
	}
	if len(urls) == 0 {
		return nil
	}
	slices.Sort(urls)
	for _, f := range sch.Fields {
		if f.Secret && exp[f.Key] == "" {
			return errdefs.FailedPreconditionf("settings: %s.%s is set through the API, so %s must be too (a %s from the environment is never sent to a URL chosen through the API): set both in one request",
				sch.Backend, strings.Join(urls, ", "), f.Key, f.Key)
		}
	}
	return nil
}

// Getenv returns an environment in which every alias of a setting that has an explicit
// value reads that value, and everything else reads base. Give it to backends as
// backend.Config.Getenv (moat.Config.Getenv) so that API settings beat the environment.
// Store errors fall back to base.
func (s *Settings) Getenv(base func(string) string) func(string) string {
	return func(name string) string {
		for _, sch := range Schemas {
			for _, f := range sch.Fields {
				if !slices.Contains(f.Env, name) {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				exp, err := s.Explicit(ctx, sch.Backend)
				cancel()
				if err == nil && exp[f.Key] != "" {
					return exp[f.Key]
				}
			}
		}
		return base(name)
	}
}

func names() []string {
	out := make([]string, 0, len(Schemas))
	for _, s := range Schemas {
		out = append(out, s.Backend)
	}
	slices.Sort(out)
	return out
}
