// Package confkey answers "how does a backend keep an old moat.toml key working while its
// users move to the new one?": the one naming convention of backend config keys (the
// provider credential is `token`, a retry count is `max_attempts`, a timeout is a Go
// duration string such as "60s"), a Duration type for timeouts that still accepts the bare
// number a key used to take, and Fold, which moves a deprecated alias into its canonical
// field with one warning.
//
// Since moat.toml sections are decoded strictly, an alias key is a real field of the
// backend's Config struct (`APIKeyDeprecated string `+"`toml:\"api_key\"`"+`); the backend
// folds it into the canonical field before it uses the config.
package confkey

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/errdefs"
)

// Duration is a timeout in moat.toml: a Go duration string ("60s", "5m", "1h30m"). A key
// that used to take a bare number (of seconds, say) still accepts one, as a deprecated
// form: Resolve converts it in the key's old unit and says so. It marshals as a duration
// string. The zero value is "unset".
type Duration struct {
	time.Duration
	// bare is the number given instead of a duration string, when hasBare.
	bare    int64
	hasBare bool
}

// D returns a Duration of d, for Go callers building a Config.
func D(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalText implements encoding.TextUnmarshaler (TOML hands it a number's text too).
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration{Duration: v}
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*d = Duration{bare: n, hasBare: true}
		return nil
	}
	return fmt.Errorf("%q is not a duration (write it like \"60s\" or \"5m\")", s)
}

// MarshalText implements encoding.TextMarshaler: the duration string.
func (d Duration) MarshalText() ([]byte, error) {
	if d.hasBare {
		return []byte(strconv.FormatInt(d.bare, 10)), nil
	}
	return []byte(d.Duration.String()), nil
}

// Resolve returns the duration of the key named key of backend name, converting a bare
// number in unit (the key's old form) with one warning on log that names the duration
// form. A negative duration is InvalidArgument.
func (d Duration) Resolve(log *slog.Logger, name, key string, unit time.Duration) (time.Duration, error) {
	v := d.Duration
	if d.hasBare {
		v = time.Duration(d.bare) * unit
		if d.bare != 0 && v/unit != time.Duration(d.bare) {
			return 0, errdefs.InvalidArgumentf("%s: config: %s = %d is out of range", name, key, d.bare)
		}
		warn(log, name, fmt.Sprintf("%s = %d", key, d.bare), fmt.Sprintf("%s = %q", key, v.String()))
	}
	if v < 0 {
		return 0, errdefs.InvalidArgumentf("%s: config: %s must not be negative", name, key)
	}
	return v, nil
}

// Fold moves the value of the deprecated key oldKey (*old) into the canonical field of
// newKey (*canonical) and clears *old, logging one warning on log that names newKey. Both
// set to different values is InvalidArgument (the same value twice is accepted). A zero
// *old does nothing.
func Fold[T comparable](log *slog.Logger, name, oldKey, newKey string, old, canonical *T) error {
	var zero T
	if *old == zero {
		return nil
	}
	if *canonical != zero && *canonical != *old {
		return errdefs.InvalidArgumentf("%s: config: %s and its deprecated alias %s are both set; keep only %s", name, newKey, oldKey, newKey)
	}
	*canonical, *old = *old, zero
	warn(log, name, oldKey, newKey)
	return nil
}

func warn(log *slog.Logger, name, old, replacement string) {
	if log == nil {
		log = slog.Default()
	}
	log.Warn(fmt.Sprintf("%s: config key %s is deprecated; use %s", name, old, replacement),
		"backend", name, "deprecated", old, "use", replacement)
}
