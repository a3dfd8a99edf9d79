// Package settings answers "what has the operator saved for each backend, and how does the
// API show it?": backend settings (API tokens, team ids, URLs) kept in the record store beside
// the sandboxes, written through the settings API and handed to backend factories as
// backend.Config.Saved. The schema is each backend's own Descriptor.Settings; nothing here
// names a backend.
//
// A setting's value is, first to last: the [backends.<name>] section of moat.toml, the value
// saved here, the first set environment alias, the backend's default. Secrets are
// write-only: a View says whether one is configured and whether it came from the
// environment, never its value.
//
// The package reads and writes; it does not build backends. moat.Manager reads every
// backend's saved values once before it builds the backends, and builds a backend again when
// its saved values change (through the Manager, or in the store by another process), so a
// saved setting applies without a restart and a factory never does I/O.
package settings

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/moatsh/moat/moattype"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

// SecretState says whether a write-only setting has a value and where it came from.
type SecretState = moattype.SecretState

// View is one backend's settings as the API shows them (moattype.BackendSettings).
type View = moattype.BackendSettings

// maxValue bounds one setting's length; tokens are far shorter.
const maxValue = 8 << 10

// Settable returns the settings of d that the settings API takes: all but the operator-only
// ones.
func Settable(d backend.Descriptor) []backend.Setting {
	var out []backend.Setting
	for _, s := range d.Settings {
		if !s.OperatorOnly {
			out = append(out, s)
		}
	}
	return out
}

// keyPrefix is where saved settings live among the store's settings.
const keyPrefix = "backend/"

func key(backendName string) string { return keyPrefix + backendName + "/settings" }

// Load returns every backend's saved settings, by backend name then key, in one store
// query.
func Load(ctx context.Context, st store.Store, kr *Keyring) (map[string]map[string]string, error) {
	raw, err := st.ListSettings(ctx, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("settings: load: %w", err)
	}
	out := map[string]map[string]string{}
	for k, v := range raw {
		name, ok := strings.CutSuffix(strings.TrimPrefix(k, keyPrefix), "/settings")
		if !ok || name == "" || strings.Contains(name, "/") {
			continue
		}
		vals, err := decode(kr, k, v)
		if err != nil {
			return nil, err
		}
		out[name] = vals
	}
	return out, nil
}

// Get returns the settings saved for backendName (secrets included: for backends, never for
// the API); empty when none are.
func Get(ctx context.Context, st store.Store, kr *Keyring, backendName string) (map[string]string, error) {
	v, err := st.GetSetting(ctx, key(backendName))
	if errdefs.Is(err, errdefs.KindNotFound) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	return decode(kr, key(backendName), v)
}

// decode opens (when kr is set) and parses one stored value.
func decode(kr *Keyring, name string, v []byte) (map[string]string, error) {
	if kr != nil {
		var err error
		if v, err = kr.open(name, v); err != nil {
			return nil, err
		}
	}
	out := map[string]string{}
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("settings: %s: stored value: %w", name, err)
	}
	return out, nil
}

// Apply returns saved with changes applied, for d's backend: a nil or empty value removes
// the key (its environment alias applies again). Unknown keys, operator-only keys, values
// that are not one short line of UTF-8, and an endpoint saved without the secrets it would
// receive are errors. saved is not modified.
func Apply(d backend.Descriptor, saved map[string]string, changes map[string]*string) (map[string]string, error) {
	fields := Settable(d)
	if len(fields) == 0 {
		return nil, errdefs.NotFoundf("settings: backend %q has no settings", d.Name)
	}
	changes, err := canonical(d, changes)
	if err != nil {
		return nil, err
	}
	for k, v := range changes {
		f, ok := Field(d.Settings, k)
		if !ok {
			var keys []string
			for _, f := range fields {
				keys = append(keys, f.Key)
			}
			return nil, errdefs.InvalidArgumentf("settings: backend %s has no setting %q (known: %s)", d.Name, k, strings.Join(keys, ", "))
		}
		if f.OperatorOnly {
			return nil, errdefs.Newf(errdefs.ErrPermissionDenied, "settings: %s.%s names something on the host; only the operator sets it (moat.toml or the environment)", d.Name, k)
		}
		if v == nil {
			continue
		}
		if len(*v) > maxValue || !utf8.ValidString(*v) || strings.ContainsAny(*v, "\x00\r\n") {
			// The value is not quoted: it may be a secret.
			return nil, errdefs.InvalidArgumentf("settings: %s.%s: value must be one line of UTF-8 text of at most %d bytes", d.Name, k, maxValue)
		}
	}
	next := map[string]string{}
	for k, v := range saved { // values saved under a deprecated name move to the key
		if f, ok := Field(d.Settings, k); ok && f.Key != k {
			if _, set := saved[f.Key]; !set {
				next[f.Key] = v
			}
			continue
		}
		next[k] = v
	}
	for k, v := range changes {
		if v == nil || *v == "" {
			delete(next, k)
		} else {
			next[k] = *v
		}
	}
	if err := checkEndpointSecrets(d, next); err != nil {
		return nil, err
	}
	return next, nil
}

// Save stores saved as backendName's settings, replacing what was there, encrypted with
// kr's current key (kr nil: plaintext, for tests); an empty map removes them.
func Save(ctx context.Context, st store.Store, kr *Keyring, backendName string, saved map[string]string) error {
	if len(saved) == 0 {
		return st.DeleteSetting(ctx, key(backendName))
	}
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	if kr != nil {
		if b, err = kr.seal(key(backendName), b); err != nil {
			return err
		}
	}
	return st.PutSetting(ctx, key(backendName), b)
}

// Rotate re-encrypts every saved setting with a new key and then forgets the old keys. A
// crash part-way leaves every value readable (old and new keys are both in the file until
// the end); run it again to finish. Callers serialize it with other writers.
func Rotate(ctx context.Context, st store.Store, kr *Keyring) error {
	all, err := Load(ctx, st, kr)
	if err != nil {
		return err
	}
	if err := kr.beginRotation(); err != nil {
		return err
	}
	for name, vals := range all {
		if err := Save(ctx, st, kr, name, vals); err != nil {
			return err
		}
	}
	return kr.endRotation()
}

// Field finds the setting called k among fields, by its key or a deprecated alias.
func Field(fields []backend.Setting, k string) (backend.Setting, bool) {
	for _, f := range fields {
		if f.Key == k || slices.Contains(f.Aliases, k) {
			return f, true
		}
	}
	return backend.Setting{}, false
}

// canonical renames changes given under a deprecated alias to the setting's key. A change
// that names both is InvalidArgument.
func canonical(d backend.Descriptor, changes map[string]*string) (map[string]*string, error) {
	out := make(map[string]*string, len(changes))
	for k, v := range changes {
		name := k
		if f, ok := Field(d.Settings, k); ok {
			name = f.Key
		}
		if _, dup := out[name]; dup {
			return nil, errdefs.InvalidArgumentf("settings: %s.%s is given twice (once under its deprecated name)", d.Name, name)
		}
		out[name] = v
	}
	return out, nil
}

// checkEndpointSecrets refuses saved settings that would send a secret taken from the
// environment to an endpoint set through the API: whoever holds an API token could otherwise
// point api_url at their own server and collect the operator's provider token. With a saved
// endpoint, every secret must be saved too (in the same request, or before).
func checkEndpointSecrets(d backend.Descriptor, saved map[string]string) error {
	var endpoints []string
	for _, f := range d.Settings {
		if f.Endpoint && saved[f.Key] != "" {
			endpoints = append(endpoints, f.Key)
		}
	}
	if len(endpoints) == 0 {
		return nil
	}
	for _, f := range d.Settings {
		if f.Secret && saved[f.Key] == "" {
			return errdefs.FailedPreconditionf("settings: %s.%s is set through the API, so %s must be too (a %s from the environment is never sent to a URL chosen through the API): set both in one request",
				d.Name, strings.Join(endpoints, ", "), f.Key, f.Key)
		}
	}
	return nil
}

// ViewOf shows d's settings given what is saved and the environment getenv reads (nil: no
// environment), with secrets reduced to their state.
func ViewOf(d backend.Descriptor, saved map[string]string, getenv func(string) string) View {
	cfg := backend.Config{Saved: saved, Getenv: getenv}
	v := View{Name: d.Name, Values: map[string]string{}, Secrets: map[string]SecretState{}, TokenConfigured: true,
		Fields: Settable(d)}
	for _, f := range v.Fields {
		val := cfg.Value(f)
		if !f.Secret {
			if val != "" {
				v.Values[f.Key] = val
			}
			continue
		}
		fromEnv := val != "" && strings.TrimSpace(saved[f.Key]) == ""
		st := SecretState{Configured: val != "", FromEnv: fromEnv}
		if len(f.Env) > 0 {
			st.Env = f.Env[0]
		}
		v.Secrets[f.Key] = st
		v.TokenConfigured = v.TokenConfigured && val != ""
		v.FromEnv = v.FromEnv || fromEnv
	}
	return v
}
