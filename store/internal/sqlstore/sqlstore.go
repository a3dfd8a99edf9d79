// Package sqlstore answers "how does a SQL database keep moat's records and settings?": the
// store.Store that the sqlite and postgres stores both are, over database/sql, with a
// Dialect for the little that differs between them (parameter markers, which errors are
// transient, error codes, label filtering, how migrations are serialised).
//
// The schema is the same in both (see their migrations): filterable fields are columns,
// JSON is kept byte for byte, times are 64-bit unix nanoseconds (NULL for the zero time,
// years 1678-2262), and records carry a Version column that makes Update a
// compare-and-swap.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/internal/migrations"
)

// Dialect is what one database engine does its own way. A Dialect is read-only once a
// Store uses it.
type Dialect struct {
	// Name prefixes every error message ("sqlite", "postgres").
	Name string
	// Placeholder returns the marker of the n-th query parameter, counting from 1.
	Placeholder func(n int) string
	// Retryable reports a transient failure that is worth another attempt (a busy
	// database, a serialization failure, a deadlock). Retries more attempts follow, the
	// k-th (from 0) after Backoff<<k; a failure still Retryable then is Unavailable, its
	// message saying Exhausted ("database busy").
	Retryable func(error) bool
	Retries   int
	Backoff   time.Duration
	Exhausted string
	// Kind is the errdefs kind of a driver error that is not Retryable, or KindUnknown.
	// A unique violation must be KindAlreadyExists.
	Kind func(error) errdefs.Kind
	// DuplicateID reports whether a unique violation on insert is of the record id (the
	// primary key) rather than of the name.
	DuplicateID func(error) bool
	// LabelsContain returns a WHERE condition that holds when the labels column contains
	// the JSON object passed as param; nil when labels are filtered in Go only.
	LabelsContain func(param string) string
	// MigrationLock runs first in the migration transaction to serialise concurrent
	// migrations; empty when beginning the transaction already does.
	MigrationLock string
}

// Retry runs fn, again after backoff while it fails Retryable, and returns its final error
// mapped by MapErr. A ctx already done runs nothing.
func (d *Dialect) Retry(ctx context.Context, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %s: %w", d.Name, op, err)
	}
	var err error
	for attempt := 0; ; attempt++ {
		err = fn()
		if err == nil || !d.Retryable(err) || attempt == d.Retries {
			break
		}
		t := time.NewTimer(d.Backoff << attempt)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %s: %w", d.Name, op, ctx.Err())
		case <-t.C:
		}
	}
	return d.MapErr(ctx, op, err)
}

// MapErr attaches errdefs kinds to driver errors and prefixes them with the dialect name
// and op. Errors that already carry a kind pass through unchanged; under a done ctx the
// error is the ctx's.
func (d *Dialect) MapErr(ctx context.Context, op string, err error) error {
	if err == nil || errdefs.KindOf(err) != errdefs.KindUnknown {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %s: %w", d.Name, op, cerr)
	}
	if d.Retryable(err) {
		return errdefs.Unavailablef("%s: %s: %s after retries: %w", d.Name, op, d.Exhausted, err)
	}
	if k := d.Kind(err); k != errdefs.KindUnknown {
		return errdefs.Newf(errdefs.Sentinel(k), "%s: %s: %w", d.Name, op, err)
	}
	return fmt.Errorf("%s: %s: %w", d.Name, op, err)
}

// Store is a store.Store in a SQL database. Safe for concurrent use.
type Store struct {
	db        *sql.DB
	d         *Dialect
	insert    string
	update    string
	closeOnce sync.Once
	closeErr  error
}

// New returns a Store over db, which it owns from now on (Close closes it). It touches
// no database: Migrate brings the schema up to date.
func New(db *sql.DB, d *Dialect) *Store {
	ph := func(from, n int) string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = d.Placeholder(from + i)
		}
		return strings.Join(ps, ", ")
	}
	n := len(strings.Split(recordCols, ","))
	return &Store{
		db: db,
		d:  d,
		insert: `INSERT INTO records (id, version, ` + recordCols + `) VALUES (` +
			d.Placeholder(1) + `, 1, ` + ph(2, n) + `)`,
		update: `UPDATE records SET (` + recordCols + `) = (` + ph(1, n) + `), version = version + 1
			WHERE id = ` + d.Placeholder(n+1) + ` AND version = ` + d.Placeholder(n+2),
	}
}

// Close closes the database. Closing twice is fine.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

// Migrate applies the migrations ms that the database lacks, in one transaction, and
// records them in schema_migrations. A database with a newer schema than ms knows is
// FailedPrecondition; database names it in that message ("database /x/moat.db").
func (s *Store) Migrate(ctx context.Context, ms []migrations.Migration, database string) error {
	latest := migrations.Latest(ms)
	return s.d.Retry(ctx, "migrate", func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if s.d.MigrationLock != "" {
			// Held to the end of the transaction: a second process waits here, then finds
			// the migrations applied.
			if _, err := tx.ExecContext(ctx, s.d.MigrationLock); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			applied_at BIGINT  NOT NULL
		)`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return err
		}
		if cur > latest {
			return errdefs.FailedPreconditionf("%s: %s has schema version %d, newer than this moat knows (%d): upgrade moat", s.d.Name, database, cur, latest)
		}
		for _, m := range ms {
			if m.Version <= cur {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (`+
				s.d.Placeholder(1)+`, `+s.d.Placeholder(2)+`)`, m.Version, time.Now().UnixNano()); err != nil {
				return err
			}
		}
		return tx.Commit()
	})
}

// Time encoding: unix nanoseconds, NULL for the zero time.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func (s *Store) encTime(field string, t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, errdefs.InvalidArgumentf("%s: %s %s is outside the storable range (years 1678-2262)", s.d.Name, field, t.Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

func decTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

func nullText(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// recordCols are a record's columns but id and version, in the order of recordArgs.
const recordCols = `name, backend, session_id, status, last_error, handle_backend, handle_version,
	handle_state, spec, labels, created_at, updated_at, last_used, expires_at`

func (s *Store) recordArgs(r *store.Record) ([]any, error) {
	if r == nil || r.ID == "" {
		return nil, errdefs.InvalidArgumentf("%s: record without id", s.d.Name)
	}
	if len(r.Spec) > 0 && !json.Valid(r.Spec) {
		return nil, errdefs.InvalidArgumentf("%s: record %s: spec is not valid JSON", s.d.Name, r.ID)
	}
	if len(r.Handle.State) > 0 && !json.Valid(r.Handle.State) {
		return nil, errdefs.InvalidArgumentf("%s: record %s: handle state is not valid JSON", s.d.Name, r.ID)
	}
	labels := []byte("{}")
	if len(r.Labels) > 0 {
		var err error
		if labels, err = json.Marshal(r.Labels); err != nil {
			return nil, errdefs.InvalidArgumentf("%s: record %s: labels: %w", s.d.Name, r.ID, err)
		}
	}
	args := []any{r.Name, r.Backend, r.SessionID, string(r.Status), r.LastError,
		r.Handle.Backend, r.Handle.Version, nullText(r.Handle.State), nullText(r.Spec), string(labels)}
	for _, t := range []struct {
		name string
		t    time.Time
	}{{"created_at", r.CreatedAt}, {"updated_at", r.UpdatedAt}, {"last_used", r.LastUsed}, {"expires_at", r.ExpiresAt}} {
		v, err := s.encTime(t.name, t.t)
		if err != nil {
			return nil, err
		}
		args = append(args, v)
	}
	return args, nil
}

// The JSON columns are read as text so they come back byte for byte.
const selectRecord = `SELECT id, version, name, backend, session_id, status, last_error, handle_backend,
	handle_version, CAST(handle_state AS TEXT), CAST(spec AS TEXT), CAST(labels AS TEXT),
	created_at, updated_at, last_used, expires_at
	FROM records`

type scanner interface{ Scan(dest ...any) error }

func scanRecord(sc scanner) (*store.Record, error) {
	var (
		r                                   store.Record
		status, labels                      string
		state, spec                         sql.NullString
		created, updated, lastUsed, expires sql.NullInt64
	)
	if err := sc.Scan(&r.ID, &r.Version, &r.Name, &r.Backend, &r.SessionID, &status, &r.LastError,
		&r.Handle.Backend, &r.Handle.Version, &state, &spec, &labels,
		&created, &updated, &lastUsed, &expires); err != nil {
		return nil, err
	}
	r.Status = store.Status(status)
	if state.Valid {
		r.Handle.State = json.RawMessage(state.String)
	}
	if spec.Valid {
		r.Spec = json.RawMessage(spec.String)
	}
	if labels != "" && labels != "{}" {
		if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
			return nil, fmt.Errorf("record %s: labels: %w", r.ID, err)
		}
		if len(r.Labels) == 0 {
			r.Labels = nil
		}
	}
	r.CreatedAt, r.UpdatedAt, r.LastUsed, r.ExpiresAt = decTime(created), decTime(updated), decTime(lastUsed), decTime(expires)
	return &r, nil
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, r *store.Record) error {
	args, err := s.recordArgs(r)
	if err != nil {
		return err
	}
	err = s.d.Retry(ctx, "create record", func() error {
		_, err := s.db.ExecContext(ctx, s.insert, append([]any{r.ID}, args...)...)
		return err
	})
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		if s.d.DuplicateID(err) {
			return errdefs.AlreadyExistsf("%s: record %s already exists", s.d.Name, r.ID)
		}
		return errdefs.AlreadyExistsf("%s: name %q is in use", s.d.Name, r.Name)
	}
	if err != nil {
		return err
	}
	r.Version = 1
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (*store.Record, error) {
	var r *store.Record
	err := s.d.Retry(ctx, "get record", func() error {
		var err error
		r, err = scanRecord(s.db.QueryRowContext(ctx, selectRecord+` WHERE id = `+s.d.Placeholder(1), id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFoundf("%s: record %s not found", s.d.Name, id)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// List implements store.Store. Scalar fields are filtered in SQL, labels too where the
// dialect can; Filter.Match runs over the result as well, so the two can never disagree.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*store.Record, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return s.d.Placeholder(len(args))
	}
	if f.Backend != "" {
		where = append(where, "backend = "+arg(f.Backend))
	}
	if f.SessionID != "" {
		where = append(where, "session_id = "+arg(f.SessionID))
	}
	if f.Name != "" {
		where = append(where, "name = "+arg(f.Name))
	}
	if len(f.Status) > 0 {
		ph := make([]string, len(f.Status))
		for i, st := range f.Status {
			ph[i] = arg(string(st))
		}
		where = append(where, "status IN ("+strings.Join(ph, ", ")+")")
	} else if !f.IncludeDestroyed {
		where = append(where, "status <> "+arg(string(store.StatusDestroyed)))
	}
	if len(f.Labels) > 0 && s.d.LabelsContain != nil {
		b, err := json.Marshal(f.Labels)
		if err != nil {
			return nil, errdefs.InvalidArgumentf("%s: labels filter: %w", s.d.Name, err)
		}
		where = append(where, s.d.LabelsContain(arg(string(b))))
	}
	q := selectRecord
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// NULL (zero) created_at sorts first, like the zero time.Time; ids compare bytewise.
	q += " ORDER BY created_at ASC NULLS FIRST, id"
	var out []*store.Record
	err := s.d.Retry(ctx, "list records", func() error {
		out = nil
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRecord(rows)
			if err != nil {
				return err
			}
			if store.Match(f, r) {
				out = append(out, r)
			}
		}
		return rows.Err()
	})
	return out, err
}

// Update implements store.Store: a compare-and-swap on the record's Version.
func (s *Store) Update(ctx context.Context, r *store.Record) error {
	args, err := s.recordArgs(r)
	if err != nil {
		return err
	}
	n, err := s.exec(ctx, "update record", s.update, append(args, r.ID, r.Version)...)
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		return errdefs.AlreadyExistsf("%s: name %q is in use", s.d.Name, r.Name)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		var cur int64
		err := s.d.Retry(ctx, "update record", func() error {
			return s.db.QueryRowContext(ctx, `SELECT version FROM records WHERE id = `+s.d.Placeholder(1), r.ID).Scan(&cur)
		})
		if errors.Is(err, sql.ErrNoRows) {
			return errdefs.NotFoundf("%s: record %s not found", s.d.Name, r.ID)
		}
		if err != nil {
			return err
		}
		return errdefs.Conflictf("%s: record %s: version %d is stale (stored %d)", s.d.Name, r.ID, r.Version, cur)
	}
	r.Version++
	return nil
}

// exec runs query under the dialect's retries (what names it in errors) and returns how
// many rows it changed.
func (s *Store) exec(ctx context.Context, what, query string, args ...any) (int64, error) {
	var n int64
	err := s.d.Retry(ctx, what, func() error {
		res, err := s.db.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	n, err := s.exec(ctx, "delete record", `DELETE FROM records WHERE id = `+s.d.Placeholder(1), id)
	if err != nil {
		return err
	}
	if n == 0 {
		return errdefs.NotFoundf("%s: record %s not found", s.d.Name, id)
	}
	return nil
}

// GetSetting implements store.Store.
func (s *Store) GetSetting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.d.Retry(ctx, "get setting", func() error {
		return s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = `+s.d.Placeholder(1), key).Scan(&v)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFoundf("%s: setting %q not found", s.d.Name, key)
	}
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{} // an empty value is still a value
	}
	return v, nil
}

// PutSetting implements store.Store.
func (s *Store) PutSetting(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	return s.d.Retry(ctx, "put setting", func() error {
		_, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (`+s.d.Placeholder(1)+`, `+s.d.Placeholder(2)+`)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}

// CreateSetting implements store.Store.
func (s *Store) CreateSetting(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	n, err := s.exec(ctx, "create setting", `INSERT INTO settings (key, value) VALUES (`+s.d.Placeholder(1)+`, `+s.d.Placeholder(2)+`)
		ON CONFLICT (key) DO NOTHING`, key, value)
	if err != nil {
		return err
	}
	if n == 0 {
		return errdefs.AlreadyExistsf("%s: setting %q already exists", s.d.Name, key)
	}
	return nil
}

// DeleteSetting implements store.Store.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	return s.d.Retry(ctx, "delete setting", func() error {
		_, err := s.db.ExecContext(ctx, `DELETE FROM settings WHERE key = `+s.d.Placeholder(1), key)
		return err
	})
}

// ListSettings implements store.Store. Keys compare bytewise (the schemas say so), so the
// keys with a prefix are the contiguous run starting at the prefix itself; no LIKE, so '%'
// and '_' are ordinary characters.
func (s *Store) ListSettings(ctx context.Context, prefix string) (map[string][]byte, error) {
	var out map[string][]byte
	err := s.d.Retry(ctx, "list settings", func() error {
		out = map[string][]byte{}
		rows, err := s.db.QueryContext(ctx, `SELECT key, value FROM settings WHERE key >= `+s.d.Placeholder(1)+` ORDER BY key`, prefix)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k string
				v []byte
			)
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			if !strings.HasPrefix(k, prefix) {
				break
			}
			if v == nil {
				v = []byte{}
			}
			out[k] = v
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

var _ store.Store = (*Store)(nil)
