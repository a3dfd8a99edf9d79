package e2b

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

// Name is the backend's registered name.
const Name = "e2b"

// Defaults.
const (
	DefaultDomain   = "e2b.app"
	DefaultTemplate = "base"
	DefaultTimeout  = 5 * time.Minute // the official SDK's default sandbox lifetime
	DefaultUser     = "root"
	// DefaultRequestTimeout bounds a control-plane call that has no shorter deadline.
	DefaultRequestTimeout = time.Minute
	// DefaultMaxAttempts is how often a retryable call is tried.
	DefaultMaxAttempts = 4
)

// Config is the [backends.e2b] section of moat.toml. Environment aliases fill only the fields
// left empty: explicit config wins.
type Config struct {
	// Token is the E2B API key (sent as X-API-Key). Env alias: E2B_API_KEY.
	Token string `toml:"token" json:"-"` // never serialized: a secret
	// Domain is the E2B domain; the API is https://api.<domain> and sandboxes are reached at
	// https://sandbox.<domain> (or https://<port>-<id>.<domain>). Env alias: E2B_DOMAIN.
	// Default "e2b.app".
	Domain string `toml:"domain" json:"domain"`
	// APIURL overrides the control-plane base URL (self-hosted E2B, tests). Env alias:
	// E2B_API_URL. Default https://api.<domain>.
	APIURL string `toml:"api_url" json:"api_url"`
	// SandboxURL overrides the base URL of every sandbox's envd (requests carry the
	// E2b-Sandbox-Id routing header). Env alias: E2B_SANDBOX_URL.
	SandboxURL string `toml:"sandbox_url" json:"sandbox_url"`
	// Template is the default template (image) for sandboxes whose spec names none.
	// Default "base".
	Template string `toml:"template" json:"template"`
	// Timeout is the default sandbox lifetime (Go duration, whole seconds) when the spec
	// has no TTL; E2B kills (or, with auto_pause, pauses) the sandbox after it. Default
	// "5m". Deprecated form: a bare number of seconds (timeout = 300).
	Timeout confkey.Duration `toml:"timeout" json:"timeout"`
	// User is the OS user commands and file operations run as. Default "root" (E2B's own
	// default is "user", which cannot apt-get install).
	User string `toml:"user" json:"user"`
	// Metadata is added to every sandbox's E2B metadata (moat's labels are added too).
	Metadata map[string]string `toml:"metadata" json:"metadata"`
	// Envs are environment variables set for every sandbox, below the spec's env.
	Envs map[string]string `toml:"envs" json:"envs"`
	// MaxAttempts bounds how often a retryable call (429, 5xx, connection errors) is
	// tried, the first attempt included. Default 4.
	MaxAttempts int `toml:"max_attempts" json:"max_attempts,omitempty"`
	// MaxRetriesDeprecated is the old name of max_attempts (max_retries): it always
	// counted attempts, not retries, so its value carries over unchanged. Deprecated.
	MaxRetriesDeprecated int `toml:"max_retries" json:"-"`
	// RequestTimeout bounds every control-plane call that has no shorter deadline (Go
	// duration). Default "60s". Deprecated form: a bare number of seconds
	// (request_timeout = 60).
	RequestTimeout confkey.Duration `toml:"request_timeout" json:"request_timeout"`
	// endpointFromAPI and tokenFromAPI say that the endpoint (domain, api_url or
	// sandbox_url) and the token came from the settings API (fill sets them).
	endpointFromAPI, tokenFromAPI bool

	// requestTimeout and timeout are RequestTimeout and Timeout resolved by New.
	requestTimeout, timeout time.Duration
}

// The settings an operator may give through the environment or the settings API.
var (
	settingToken  = backend.Setting{Key: "token", Env: []string{"E2B_API_KEY"}, Secret: true, Doc: "E2B API key"}
	settingDomain = backend.Setting{Key: "domain", Env: []string{"E2B_DOMAIN"}, Endpoint: true,
		Doc: "domain the API and sandbox URLs derive from (default e2b.app)"}
	settingAPIURL     = backend.Setting{Key: "api_url", Env: []string{"E2B_API_URL"}, Endpoint: true, Doc: "control-plane API URL"}
	settingSandboxURL = backend.Setting{Key: "sandbox_url", Env: []string{"E2B_SANDBOX_URL"}, Endpoint: true,
		Doc: "URL of every sandbox's envd (self-hosted, tests)"}
	// Settings are the backend's settings, as its Descriptor states them.
	Settings = []backend.Setting{settingToken, settingDomain, settingAPIURL, settingSandboxURL}
)

// fill sets the fields left empty from the values saved through the settings API, else
// from the environment aliases.
func (c *Config) fill(cfg backend.Config) {
	c.endpointFromAPI = cfg.FromAPI(settingDomain, c.Domain) || cfg.FromAPI(settingAPIURL, c.APIURL) ||
		cfg.FromAPI(settingSandboxURL, c.SandboxURL)
	c.tokenFromAPI = cfg.FromAPI(settingToken, c.Token)
	cfg.Fill(settingToken, &c.Token)
	cfg.Fill(settingDomain, &c.Domain)
	cfg.Fill(settingAPIURL, &c.APIURL)
	cfg.Fill(settingSandboxURL, &c.SandboxURL)
}

func (c *Config) applyDefaults() {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.APIURL == "" {
		c.APIURL = "https://api." + c.Domain
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	c.SandboxURL = strings.TrimRight(c.SandboxURL, "/")
	if c.Template == "" {
		c.Template = DefaultTemplate
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.requestTimeout <= 0 {
		c.requestTimeout = DefaultRequestTimeout
	}
}

// resolveKeys folds the deprecated keys into their canonical fields (one warning each on
// log) and resolves the durations.
func (c *Config) resolveKeys(log *slog.Logger) error {
	if err := confkey.Fold(log, Name, "max_retries", "max_attempts", &c.MaxRetriesDeprecated, &c.MaxAttempts); err != nil {
		return err
	}
	var err error
	if c.timeout, err = c.Timeout.Resolve(log, Name, "timeout", time.Second); err != nil {
		return err
	}
	if c.timeout%time.Second != 0 {
		return errdefs.InvalidArgumentf("e2b: config: timeout %s is not a whole number of seconds", c.timeout)
	}
	c.requestTimeout, err = c.RequestTimeout.Resolve(log, Name, "request_timeout", time.Second)
	return err
}

func (c *Config) validate() error {
	for _, u := range []struct{ name, v string }{{"api_url", c.APIURL}, {"sandbox_url", c.SandboxURL}} {
		if !httpURL(u.v) {
			return errdefs.InvalidArgumentf("e2b: %s %q is not an http(s) URL", u.name, u.v)
		}
	}
	if strings.ContainsAny(c.Domain, "/:@ ") {
		return errdefs.InvalidArgumentf("e2b: domain %q must be a bare host name", c.Domain)
	}
	return nil
}

// httpURL reports whether v is empty or an http(s) URL with a host.
func httpURL(v string) bool {
	if v == "" {
		return true
	}
	p, err := url.Parse(v)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != ""
}

func init() {
	backend.Register(Name, func(cfg backend.Config) (backend.Backend, error) {
		var c Config
		if cfg.Decode != nil {
			if err := cfg.Decode(&c); err != nil {
				return nil, errdefs.InvalidArgumentf("e2b: config: %v", err)
			}
		}
		c.fill(cfg)
		return New(c, Options{Logger: cfg.Logger})
	})
}

// Options are programmatic knobs that have no place in moat.toml.
type Options struct {
	// HTTPClient replaces the default client (tests, proxies).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// BaseBackoff and MaxBackoff shape retry delays; defaults 200ms and 10s.
	BaseBackoff, MaxBackoff time.Duration
}

// New builds the backend from an already env-resolved Config. It does no I/O.
func New(c Config, o Options) (*Backend, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := c.resolveKeys(log); err != nil {
		return nil, err
	}
	c.applyDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport}
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	return &Backend{
		cfg: c,
		log: log.With("backend", Name),
		c: &client{
			http:   hc,
			apiURL: c.APIURL,
			apiKey: c.Token,
			policy: restapi.Policy{
				MaxAttempts:   c.MaxAttempts,
				BaseBackoff:   o.BaseBackoff,
				MaxBackoff:    o.MaxBackoff,
				RetryAfterCap: 2 * time.Minute,
			},
			userAgent:       "moat-e2b/1",
			endpointFromAPI: c.endpointFromAPI,
		},
	}, nil
}

// envdBase returns the envd base URL for sandbox id on domain, like the official SDK: an
// explicit sandbox URL, else https://sandbox.<domain> for E2B's own domains, else the
// per-sandbox host https://49983-<id>.<domain>.
func envdBase(sandboxURL, id, domain string) string {
	if sandboxURL != "" {
		return sandboxURL
	}
	switch domain {
	case "e2b.app", "e2b.dev", "e2b.pro", "e2b-staging.dev":
		return "https://sandbox." + domain
	}
	return fmt.Sprintf("https://%d-%s.%s", envdPort, id, domain)
}
