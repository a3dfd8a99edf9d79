// Package memstore answers "where do records live when nothing must outlive the
// process?": an in-memory store.Store for tests, demos and `moat` runs with "mem:".
//
// Records and setting values are deep-copied on the way in and out, so callers can never
// change what the store holds except through its methods. Importing the package registers
// the "mem" scheme with store.Open; every Open("mem:") returns a new, empty store.
package memstore

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
)

func init() {
	store.Register("mem", func(ctx context.Context, url string) (store.Store, error) {
		switch url {
		case "mem:", "mem://", "": // "" in case an opener is handed only what follows "mem:"
		default:
			return nil, errdefs.InvalidArgumentf("memstore: %q: want plain \"mem:\"", url)
		}
		return New(), nil
	})
}

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	mu       sync.RWMutex
	records  map[string]*store.Record
	settings map[string][]byte
	closed   bool
}

// New returns an empty store.
func New() *Store {
	return &Store{records: map[string]*store.Record{}, settings: map[string][]byte{}}
}

// copyRecord deep-copies r, normalising times to UTC like the database stores do.
func copyRecord(r *store.Record) *store.Record {
	c := *r
	c.Spec = bytes.Clone(r.Spec)
	c.Handle.State = bytes.Clone(r.Handle.State)
	c.Labels = maps.Clone(r.Labels)
	c.CreatedAt = utc(r.CreatedAt)
	c.UpdatedAt = utc(r.UpdatedAt)
	c.LastUsed = utc(r.LastUsed)
	c.ExpiresAt = utc(r.ExpiresAt)
	return &c
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return errdefs.FailedPreconditionf("memstore: store is closed")
	}
	return nil
}

// write runs fn holding the write lock, once the store is known to be open and ctx live.
func (s *Store) write(ctx context.Context, fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	return fn()
}

// read runs fn holding the read lock, once the store is known to be open and ctx live.
func read[T any](ctx context.Context, s *Store, fn func() (T, error)) (T, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		var zero T
		return zero, err
	}
	return fn()
}

func validate(r *store.Record) error {
	if r == nil || r.ID == "" {
		return errdefs.InvalidArgumentf("memstore: record without id")
	}
	if len(r.Spec) > 0 && !json.Valid(r.Spec) {
		return errdefs.InvalidArgumentf("memstore: record %s: spec is not valid JSON", r.ID)
	}
	if len(r.Handle.State) > 0 && !json.Valid(r.Handle.State) {
		return errdefs.InvalidArgumentf("memstore: record %s: handle state is not valid JSON", r.ID)
	}
	return nil
}

// nameTaken reports whether a non-destroyed record other than id holds name.
func (s *Store) nameTaken(name, id string) bool {
	if name == "" {
		return false
	}
	for _, o := range s.records {
		if o.ID != id && o.Name == name && o.Status != store.StatusDestroyed {
			return true
		}
	}
	return false
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, r *store.Record) error {
	if err := validate(r); err != nil {
		return err
	}
	return s.write(ctx, func() error {
		if _, dup := s.records[r.ID]; dup {
			return errdefs.AlreadyExistsf("memstore: record %s already exists", r.ID)
		}
		if r.Status != store.StatusDestroyed && s.nameTaken(r.Name, r.ID) {
			return errdefs.AlreadyExistsf("memstore: name %q is in use", r.Name)
		}
		c := copyRecord(r)
		c.Version = 1
		s.records[r.ID] = c
		r.Version = 1
		return nil
	})
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (*store.Record, error) {
	return read(ctx, s, func() (*store.Record, error) {
		r, ok := s.records[id]
		if !ok {
			return nil, errdefs.NotFoundf("memstore: record %s not found", id)
		}
		return copyRecord(r), nil
	})
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*store.Record, error) {
	return read(ctx, s, func() ([]*store.Record, error) {
		var out []*store.Record
		for _, r := range s.records {
			if store.Match(f, r) {
				out = append(out, copyRecord(r))
			}
		}
		slices.SortFunc(out, func(a, b *store.Record) int {
			if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		return out, nil
	})
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, r *store.Record) error {
	if err := validate(r); err != nil {
		return err
	}
	return s.write(ctx, func() error {
		cur, ok := s.records[r.ID]
		if !ok {
			return errdefs.NotFoundf("memstore: record %s not found", r.ID)
		}
		if cur.Version != r.Version {
			return errdefs.Conflictf("memstore: record %s: version %d is stale (stored %d)", r.ID, r.Version, cur.Version)
		}
		if r.Status != store.StatusDestroyed && s.nameTaken(r.Name, r.ID) {
			return errdefs.AlreadyExistsf("memstore: name %q is in use", r.Name)
		}
		c := copyRecord(r)
		c.Version = cur.Version + 1
		s.records[r.ID] = c
		r.Version = c.Version
		return nil
	})
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	return s.write(ctx, func() error {
		if _, ok := s.records[id]; !ok {
			return errdefs.NotFoundf("memstore: record %s not found", id)
		}
		delete(s.records, id)
		return nil
	})
}

// GetSetting implements store.Store.
func (s *Store) GetSetting(ctx context.Context, key string) ([]byte, error) {
	return read(ctx, s, func() ([]byte, error) {
		v, ok := s.settings[key]
		if !ok {
			return nil, errdefs.NotFoundf("memstore: setting %q not found", key)
		}
		return append([]byte{}, v...), nil
	})
}

// PutSetting implements store.Store.
func (s *Store) PutSetting(ctx context.Context, key string, value []byte) error {
	return s.write(ctx, func() error {
		s.settings[key] = append([]byte{}, value...)
		return nil
	})
}

// CreateSetting implements store.Store.
func (s *Store) CreateSetting(ctx context.Context, key string, value []byte) error {
	return s.write(ctx, func() error {
		if _, ok := s.settings[key]; ok {
			return errdefs.AlreadyExistsf("memstore: setting %q already exists", key)
		}
		s.settings[key] = append([]byte{}, value...)
		return nil
	})
}

// DeleteSetting implements store.Store.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	return s.write(ctx, func() error {
		delete(s.settings, key)
		return nil
	})
}

// ListSettings implements store.Store.
func (s *Store) ListSettings(ctx context.Context, prefix string) (map[string][]byte, error) {
	return read(ctx, s, func() (map[string][]byte, error) {
		out := map[string][]byte{}
		for k, v := range s.settings {
			if strings.HasPrefix(k, prefix) {
				out[k] = append([]byte{}, v...)
			}
		}
		return out, nil
	})
}

// Close drops the data; later calls fail with FailedPrecondition. Closing twice is fine.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.records, s.settings = nil, nil
	return nil
}

var _ store.Store = (*Store)(nil)
