// Package store answers "where do sandbox records live?": the durable record of every
// sandbox moat created (its moat id, backend handle, status, spec, labels, timestamps) and
// small settings, behind one interface with SQLite, Postgres and in-memory implementations.
//
// Open picks the implementation from a URL: "sqlite:/path/moat.db", "postgres://…",
// "mem:". Implementations register themselves (see Register), so importing store alone
// pulls in no database driver.
package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// Status is a sandbox record's lifecycle state (moattype.Status: the API shows it as it is).
type Status = moattype.Status

// The statuses a record goes through.
const (
	StatusCreating  = moattype.StatusCreating
	StatusActive    = moattype.StatusActive
	StatusPaused    = moattype.StatusPaused
	StatusStopped   = moattype.StatusStopped
	StatusError     = moattype.StatusError
	StatusDestroyed = moattype.StatusDestroyed
)

// Record is one sandbox as moat remembers it.
type Record struct {
	ID        string            `json:"id"`   // moat's own stable id
	Name      string            `json:"name"` // optional, unique among records not destroyed
	Backend   string            `json:"backend"`
	SessionID string            `json:"session_id,omitempty"`
	Handle    backend.Handle    `json:"handle"` // the backend's reference; the provider id lives inside
	Status    Status            `json:"status"`
	LastError string            `json:"last_error,omitempty"`
	Spec      json.RawMessage   `json:"spec"` // the full moat.Spec as created
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	LastUsed  time.Time         `json:"last_used"`
	ExpiresAt time.Time         `json:"expires_at"` // zero when it never expires
	// Version is the optimistic concurrency token: Update succeeds only when it matches the
	// stored one, and stores the record with Version+1.
	Version int64 `json:"version"`
}

// Filter selects records in List (moattype.ListFilter: the Manager's List passes it as it
// is). Zero fields match everything; Labels must all match.
type Filter = moattype.ListFilter

// Match reports whether r passes f. Implementations that cannot filter in their query
// language use it; all must agree with it.
func Match(f Filter, r *Record) bool {
	if f.Backend != "" && r.Backend != f.Backend {
		return false
	}
	if f.SessionID != "" && r.SessionID != f.SessionID {
		return false
	}
	if f.Name != "" && r.Name != f.Name {
		return false
	}
	if len(f.Status) > 0 {
		ok := false
		for _, s := range f.Status {
			ok = ok || r.Status == s
		}
		if !ok {
			return false
		}
	} else if !f.IncludeDestroyed && r.Status == StatusDestroyed {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := r.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Store keeps records and settings. Implementations are safe for concurrent use, also by
// several processes sharing one database.
//
// Every change that must not be lost to a concurrent one is a compare-and-swap: Update on
// the record's Version, Create and CreateSetting on the key's absence. The store holds no
// locks or leases across calls; callers that must decide something once among several
// processes (which replica recreates a lost sandbox) claim it with one of these.
type Store interface {
	// Create inserts r with Version 1 (it sets r.Version). AlreadyExists when the id, or the
	// name among records not destroyed, is taken.
	Create(ctx context.Context, r *Record) error
	// Get returns the record with id. NotFound when there is none.
	Get(ctx context.Context, id string) (*Record, error)
	// List returns matching records ordered by CreatedAt, then ID.
	List(ctx context.Context, f Filter) ([]*Record, error)
	// Update replaces the record when r.Version equals the stored version, then sets
	// r.Version to the new one. Conflict when the versions differ; NotFound when missing.
	Update(ctx context.Context, r *Record) error
	// Delete removes the record. NotFound when missing.
	Delete(ctx context.Context, id string) error

	// GetSetting returns the value stored under key. NotFound when unset.
	GetSetting(ctx context.Context, key string) ([]byte, error)
	// PutSetting stores value under key, replacing what was there.
	PutSetting(ctx context.Context, key string, value []byte) error
	// CreateSetting stores value under key unless the key is set: AlreadyExists then, and
	// the stored value is unchanged. Of concurrent callers (also in other processes) exactly
	// one succeeds, so it decides a value once for every process sharing the store.
	CreateSetting(ctx context.Context, key string, value []byte) error
	// DeleteSetting removes key; removing a missing key succeeds.
	DeleteSetting(ctx context.Context, key string) error
	// ListSettings returns every key starting with prefix and its value.
	ListSettings(ctx context.Context, prefix string) (map[string][]byte, error)

	Close() error
}

// Opener opens a store from the part of the URL after "scheme:".
type Opener func(ctx context.Context, url string) (Store, error)

var (
	openersMu sync.RWMutex
	openers   = map[string]Opener{}
)

// Register makes a store implementation available under a URL scheme ("sqlite").
func Register(scheme string, o Opener) {
	openersMu.Lock()
	defer openersMu.Unlock()
	if _, dup := openers[scheme]; dup {
		panic("store: Register called twice for " + scheme)
	}
	openers[scheme] = o
}

// Open opens the store named by url: "sqlite:/path/to/moat.db", "postgres://…", "mem:".
// The whole url is handed to the opener.
func Open(ctx context.Context, url string) (Store, error) {
	scheme, _, ok := strings.Cut(url, ":")
	if !ok {
		return nil, errdefs.InvalidArgumentf("store: %q has no scheme (want sqlite:PATH, postgres://…, or mem:)", url)
	}
	if scheme == "postgresql" {
		scheme = "postgres"
	}
	openersMu.RLock()
	o, found := openers[scheme]
	openersMu.RUnlock()
	if !found {
		return nil, errdefs.InvalidArgumentf("store: unknown scheme %q (is its package imported?)", scheme)
	}
	s, err := o(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", scheme, err)
	}
	return s, nil
}
