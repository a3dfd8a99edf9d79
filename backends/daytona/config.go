package daytona

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/internal/confkey"
	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// Name is the name the backend registers under.
const Name = "daytona"

// DefaultAPIURL is Daytona's hosted platform API.
const DefaultAPIURL = "https://app.daytona.io/api"

// Config is the [backends.daytona] section of moat.toml. Environment aliases fill only
// fields left empty: explicit configuration wins.
type Config struct {
	// APIKey is the Daytona API key (or a JWT, then set OrganizationID), sent as
	// "Authorization: Bearer"; key token, like every provider's credential. Env:
	// DAYTONA_API_KEY, then DAYTONA_JWT_TOKEN. Never logged.
	APIKey string `toml:"token" json:"-"` // never serialized: a secret
	// APIKeyDeprecated is the old name of token (api_key). Deprecated: setting both to
	// different values is InvalidArgument.
	APIKeyDeprecated string `toml:"api_key" json:"-"`
	// APIURL is the platform API base URL, including the /api prefix. Self-hosted Daytona
	// needs it. Env: DAYTONA_API_URL (deprecated DAYTONA_SERVER_URL). Default
	// https://app.daytona.io/api.
	APIURL string `toml:"api_url" json:"api_url,omitempty"`
	// OrganizationID is sent as X-Daytona-Organization-ID; needed only with a JWT.
	// Env: DAYTONA_ORGANIZATION_ID.
	OrganizationID string `toml:"organization_id" json:"organization_id,omitempty"`
	// Target is the region sandboxes are created in ("us", "eu"); empty means the
	// organization's default. Env: DAYTONA_TARGET.
	Target string `toml:"target" json:"target,omitempty"`
	// Snapshot is the Daytona snapshot new sandboxes start from when the spec names no
	// image; empty means the platform's default snapshot (Debian-based, apt-get).
	Snapshot string `toml:"snapshot" json:"snapshot,omitempty"`
	// User is the user commands run as inside the sandbox; empty means the snapshot's
	// default ("daytona").
	User string `toml:"user" json:"user,omitempty"`
	// AutoStopMinutes stops an idle sandbox after this many minutes (Daytona's
	// autoStopInterval); 0 leaves the provider default (15), -1 disables auto-stop.
	AutoStopMinutes int `toml:"auto_stop_minutes" json:"auto_stop_minutes,omitempty"`
	// StartTimeout bounds how long Create and Start wait for the sandbox to reach
	// "started" (Go duration, default "2m").
	StartTimeout string `toml:"start_timeout" json:"start_timeout,omitempty"`
	// MaxAttempts is how many times an idempotent call is tried on 429, 5xx and connection
	// errors (default 5).
	MaxAttempts int `toml:"max_attempts" json:"max_attempts,omitempty"`
	// endpointFromAPI and tokenFromAPI say that APIURL and the token came from the
	// settings API (fill sets them).
	endpointFromAPI, tokenFromAPI bool
}

// The settings an operator may give through the environment or the settings API.
var (
	settingAPIKey = backend.Setting{Key: "token", Aliases: []string{"api_key"}, Env: []string{"DAYTONA_API_KEY", "DAYTONA_JWT_TOKEN"},
		Secret: true, Doc: "Daytona API key (or a JWT, with organization_id)"}
	settingAPIURL = backend.Setting{Key: "api_url", Env: []string{"DAYTONA_API_URL", "DAYTONA_SERVER_URL"}, Endpoint: true,
		Doc: "platform API URL including /api (default https://app.daytona.io/api)"}
	settingOrganizationID = backend.Setting{Key: "organization_id", Env: []string{"DAYTONA_ORGANIZATION_ID"},
		Doc: "organization, needed with a JWT"}
	settingTarget = backend.Setting{Key: "target", Env: []string{"DAYTONA_TARGET"}, Doc: "region sandboxes are created in"}
	// Settings are the backend's settings, as its Descriptor states them.
	Settings = []backend.Setting{settingAPIKey, settingAPIURL, settingOrganizationID, settingTarget}
)

// fill sets the fields left empty from the values saved through the settings API, else
// from the environment aliases.
func (c *Config) fill(cfg backend.Config) {
	c.endpointFromAPI = cfg.FromAPI(settingAPIURL, c.APIURL)
	c.tokenFromAPI = cfg.FromAPI(settingAPIKey, c.APIKey)
	cfg.Fill(settingAPIKey, &c.APIKey)
	cfg.Fill(settingAPIURL, &c.APIURL)
	cfg.Fill(settingOrganizationID, &c.OrganizationID)
	cfg.Fill(settingTarget, &c.Target)
}

func init() {
	backend.Register(Name, func(cfg backend.Config) (backend.Backend, error) {
		var c Config
		if cfg.Decode != nil {
			if err := cfg.Decode(&c); err != nil {
				return nil, errdefs.InvalidArgumentf("daytona: config: %v", err)
			}
		}
		// Deprecated keys first, so an explicit api_key still beats DAYTONA_API_KEY.
		if err := c.resolveKeys(cfg.Logger); err != nil {
			return nil, err
		}
		c.fill(cfg)
		return New(c)
	})
}

// New returns a Daytona backend for c (environment aliases are not consulted here; the
// registered factory applies them). It does no I/O. A deprecated key is folded into its
// canonical field with a warning on slog.Default (the backend has no logger of its own).
func New(c Config) (*Backend, error) {
	if err := c.resolveKeys(nil); err != nil {
		return nil, err
	}
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errdefs.InvalidArgumentf("daytona: config: api_url %q is not an http(s) URL", c.APIURL)
	}
	startTimeout := 2 * time.Minute
	if c.StartTimeout != "" {
		d, err := time.ParseDuration(c.StartTimeout)
		if err != nil || d <= 0 {
			return nil, errdefs.InvalidArgumentf("daytona: config: start_timeout %q is not a positive duration", c.StartTimeout)
		}
		startTimeout = d
	}
	if c.MaxAttempts < 0 {
		return nil, errdefs.InvalidArgumentf("daytona: config: max_attempts must not be negative")
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.AutoStopMinutes < -1 {
		return nil, errdefs.InvalidArgumentf("daytona: config: auto_stop_minutes must be -1, 0 or positive")
	}
	cl := newClient(strings.TrimRight(c.APIURL, "/"), c.APIKey, c.OrganizationID, restapi.Policy{
		MaxAttempts:   c.MaxAttempts,
		BaseBackoff:   200 * time.Millisecond,
		MaxBackoff:    10 * time.Second,
		RetryAfterCap: 2 * time.Minute,
	})
	cl.endpointFromAPI = c.endpointFromAPI
	return &Backend{
		cfg:          c,
		startTimeout: startTimeout,
		pollMin:      10 * time.Millisecond,
		pollMax:      500 * time.Millisecond,
		c:            cl,
	}, nil
}

// resolveKeys folds the deprecated keys into their canonical fields, with one warning each
// on log (nil: slog.Default). New calls it. Its place is right after decoding, before the
// environment aliases fill the fields left empty: only then does an explicit api_key beat
// DAYTONA_API_KEY (folded later, an api_key and a different DAYTONA_API_KEY count as both
// set). Calling it twice is harmless.
func (c *Config) resolveKeys(log *slog.Logger) error {
	return confkey.Fold(log, Name, "api_key", "token", &c.APIKeyDeprecated, &c.APIKey)
}

// SetHTTPClient replaces the HTTP client (tests, proxies). Call before use.
func (b *Backend) SetHTTPClient(hc *http.Client) { b.c.rc.HTTP = hc }

// SetRetryBackoff sets the first retry delay and the cap (tests). Call before use.
func (b *Backend) SetRetryBackoff(base, max time.Duration) {
	b.c.rc.Policy.BaseBackoff, b.c.rc.Policy.MaxBackoff = base, max
}

func (c Config) String() string {
	// Keep the key out of %v of a Config.
	return fmt.Sprintf("daytona.Config{APIURL:%q Target:%q configured:%t}", c.APIURL, c.Target, c.APIKey != "")
}
