package vercel

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/confkey"
	"github.com/moatsh/moat/errdefs"
)

// Name is the backend's registered name.
const Name = "vercel"

// Runtimes are the legacy runtime names Vercel accepts; DefaultRuntime is used when neither
// config nor the sandbox spec name one.
var Runtimes = []string{"node24", "node22", "python3.13", "node26"}

// DefaultRuntime is the runtime of sandboxes whose spec names no image.
const DefaultRuntime = "node24"

// Config is the [backends.vercel] section of moat.toml. Fields left empty fall back to the
// environment aliases named on each field; explicit config always wins.
type Config struct {
	// Token is a Vercel access token, or a Vercel OIDC token (a JWT whose owner_id and
	// project_id claims then fill TeamID and ProjectID when those are empty).
	// Env: VERCEL_TOKEN, then VERCEL_OIDC_TOKEN.
	Token string `toml:"token" json:"-"`
	// TeamID scopes every request (query teamId). Env: VERCEL_TEAM_ID.
	TeamID string `toml:"team_id" json:"team_id,omitempty"`
	// ProjectID is the project sandboxes are created in (required by the API).
	// Env: VERCEL_PROJECT_ID.
	ProjectID string `toml:"project_id" json:"project_id,omitempty"`
	// Runtime is the default runtime: node24 (default), node22, node26 or python3.13. A
	// sandbox spec's image overrides it. Any other value is rejected.
	Runtime string `toml:"runtime" json:"runtime,omitempty"`
	// Timeout is how long a sandbox runs before Vercel stops it (Go duration, e.g. "5m";
	// whole milliseconds) when the spec sets no TTL. Empty leaves Vercel's default of 5
	// minutes (max 45 min Hobby, 5 h Pro).
	Timeout confkey.Duration `toml:"timeout" json:"timeout,omitempty"`
	// TimeoutMsDeprecated is the old form of timeout: milliseconds (timeout_ms = 300000).
	// Deprecated: setting both is InvalidArgument.
	TimeoutMsDeprecated int64 `toml:"timeout_ms" json:"-"`
	// VCPUs is the default vCPU count (1 or an even number up to 8; 2048 MB RAM each) when
	// the spec sets no CPU or memory limit.
	VCPUs int `toml:"vcpus" json:"vcpus,omitempty"`
	// Ports are exposed on every sandbox at creation (public https URLs via PortExposer).
	Ports []int `toml:"ports" json:"ports,omitempty"`
	// Region is the region sandboxes run in (iad1 by default on Vercel's side).
	Region string `toml:"region" json:"region,omitempty"`
	// Persistent creates persistent sandboxes: Vercel snapshots them on stop and restores
	// them on start, so instances then offer Stop/Start (backend.Stopper).
	Persistent bool `toml:"persistent" json:"persistent,omitempty"`
	// APIURL is the API base URL (default https://vercel.com/api, the SDK's).
	// Env: VERCEL_API_URL.
	APIURL string `toml:"api_url" json:"api_url,omitempty"`
	// endpointFromAPI and tokenFromAPI say that APIURL and Token came from the settings
	// API (Fill sets them).
	endpointFromAPI, tokenFromAPI bool

	// timeout is Timeout resolved by New.
	timeout time.Duration
}

func init() {
	backend.Register(Name, func(cfg backend.Config) (backend.Backend, error) {
		var c Config
		if cfg.Decode != nil {
			if err := cfg.Decode(&c); err != nil {
				return nil, errdefs.InvalidArgumentf("vercel: config: %v", err)
			}
		}
		c.Fill(cfg)
		return New(c, cfg.Logger)
	})
}

// The settings an operator may give through the environment or the settings API.
var (
	settingToken = backend.Setting{Key: "token", Env: []string{"VERCEL_TOKEN", "VERCEL_OIDC_TOKEN"}, Secret: true,
		Doc: "Vercel access token or OIDC token"}
	settingTeamID    = backend.Setting{Key: "team_id", Env: []string{"VERCEL_TEAM_ID"}, Doc: "team every request is scoped to"}
	settingProjectID = backend.Setting{Key: "project_id", Env: []string{"VERCEL_PROJECT_ID"}, Doc: "project sandboxes are created in"}
	settingAPIURL    = backend.Setting{Key: "api_url", Env: []string{"VERCEL_API_URL"}, Endpoint: true,
		Doc: "API base URL (default https://vercel.com/api)"}
	// Settings are the backend's settings, as its Descriptor states them.
	Settings = []backend.Setting{settingToken, settingTeamID, settingProjectID, settingAPIURL}
)

// Fill sets the fields left empty from the values saved through the settings API, else
// from the environment aliases.
func (c *Config) Fill(cfg backend.Config) {
	c.endpointFromAPI = cfg.FromAPI(settingAPIURL, c.APIURL)
	c.tokenFromAPI = cfg.FromAPI(settingToken, c.Token)
	cfg.Fill(settingToken, &c.Token)
	cfg.Fill(settingTeamID, &c.TeamID)
	cfg.Fill(settingProjectID, &c.ProjectID)
	cfg.Fill(settingAPIURL, &c.APIURL)
}

// resolveKeys folds the deprecated keys into their canonical fields (one warning each on
// log) and resolves the durations.
func (c *Config) resolveKeys(log *slog.Logger) error {
	if c.TimeoutMsDeprecated != 0 {
		if c.Timeout != (confkey.Duration{}) {
			return errdefs.InvalidArgumentf("vercel: config: timeout and its deprecated alias timeout_ms are both set; keep only timeout")
		}
		if c.TimeoutMsDeprecated < 0 {
			return errdefs.InvalidArgumentf("vercel: timeout_ms must not be negative")
		}
		c.Timeout = confkey.D(time.Duration(c.TimeoutMsDeprecated) * time.Millisecond)
		log.Warn("vercel: config key timeout_ms is deprecated; use timeout (a duration such as \"5m\")",
			"backend", Name, "deprecated", "timeout_ms", "use", "timeout")
		c.TimeoutMsDeprecated = 0
	}
	d, err := c.Timeout.Resolve(log, Name, "timeout", time.Millisecond)
	if err != nil {
		return err
	}
	if d%time.Millisecond != 0 {
		return errdefs.InvalidArgumentf("vercel: config: timeout %s is not a whole number of milliseconds", d)
	}
	c.timeout = d
	return nil
}

// validate checks the fields that need no I/O; credentials are checked by Probe.
func (c *Config) validate() error {
	if c.APIURL != "" {
		u, err := url.Parse(c.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errdefs.InvalidArgumentf("vercel: api_url %q is not an http(s) URL", c.APIURL)
		}
	}
	if c.Runtime != "" && !slices.Contains(Runtimes, c.Runtime) {
		return errdefs.InvalidArgumentf("vercel: unknown runtime %q (want one of %s)", c.Runtime, strings.Join(Runtimes, ", "))
	}
	if c.VCPUs != 0 && !validVCPUs(c.VCPUs) {
		return errdefs.InvalidArgumentf("vercel: vcpus must be 1 or an even number up to 8, not %d", c.VCPUs)
	}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			return errdefs.InvalidArgumentf("vercel: port %d out of range", p)
		}
	}
	return nil
}

func validVCPUs(n int) bool { return n == 1 || (n >= 2 && n <= 8 && n%2 == 0) }

// oidcClaims decodes the unverified payload of a Vercel OIDC token, as the SDK does, to
// learn the team and project it is scoped to. ok is false for a non-JWT token.
func oidcClaims(token string) (team, project string, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", "", false
	}
	var claims struct {
		OwnerID   string `json:"owner_id"`
		ProjectID string `json:"project_id"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.OwnerID == "" {
		return "", "", false
	}
	return claims.OwnerID, claims.ProjectID, true
}

// String describes the config without its token.
func (c Config) String() string {
	tok := "unset"
	if c.Token != "" {
		tok = "set"
	}
	return fmt.Sprintf("vercel{team=%q project=%q runtime=%q token=%s api=%q}", c.TeamID, c.ProjectID, c.Runtime, tok, c.APIURL)
}

func nopLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
