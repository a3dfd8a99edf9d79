// Package sqlite answers "where do records live on one machine?": a store.Store in a
// single SQLite file (modernc.org/sqlite, no cgo), safe for several moat processes at once.
//
// Open("sqlite:/path/moat.db") creates the parent directory (0700) and the file (0600)
// when missing, and runs the embedded migrations (migrations/*.sql, tracked in
// schema_migrations) in one immediate transaction. A database written by a newer moat is
// refused with FailedPrecondition rather than misread.
//
// Concurrency: the database runs in WAL mode with a busy timeout, and every write
// transaction takes the write lock up front (BEGIN IMMEDIATE), so writers from several
// processes queue instead of failing. A write still refused as busy after retries is
// Unavailable. Optimistic concurrency on records comes from their Version column.
//
// Times are stored as INTEGER unix nanoseconds (UTC), NULL for the zero time, so they
// must lie between the years 1678 and 2262.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/internal/migrations"
)

func init() {
	store.Register("sqlite", func(ctx context.Context, url string) (store.Store, error) {
		return Open(ctx, PathFromURL(url))
	})
}

// busyTimeout is how long SQLite itself waits for another connection's lock before
// reporting SQLITE_BUSY; busyRetries more attempts with backoff follow before giving up.
// A variable only so tests can shorten it.
var busyTimeout = 5 * time.Second

const busyRetries = 2

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a store.Store in one SQLite file. Safe for concurrent use.
type Store struct {
	db        *sql.DB
	path      string
	closeOnce sync.Once
	closeErr  error
}

// PathFromURL returns the file path of a "sqlite:PATH" URL. "sqlite:///abs/path" and a
// bare path (without the scheme) are accepted too.
func PathFromURL(url string) string {
	p := strings.TrimPrefix(url, "sqlite:")
	if strings.HasPrefix(p, "//") {
		p = p[2:] // sqlite:///abs/path → /abs/path
	}
	return p
}

// Open opens the database file at path, creating it and its directory when missing, and
// brings its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errdefs.InvalidArgumentf("sqlite: empty database path (want sqlite:/path/moat.db)")
	}
	if strings.ContainsAny(path, "?#") {
		// The driver would read what follows '?' as connection options.
		return nil, errdefs.InvalidArgumentf("sqlite: database path %q must not contain '?' or '#'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, errdefs.InvalidArgumentf("sqlite: database path %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: create directory: %w", err)
	}
	// Create the file ourselves so it is private from the start; SQLite gives the -wal and
	// -shm files the database file's mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: create database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: create database file: %w", err)
	}
	// busy_timeout first: switching to WAL itself may have to wait for another process.
	dsn := abs + "?_pragma=busy_timeout(" + strconv.Itoa(int(busyTimeout/time.Millisecond)) + ")" +
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)" +
		"&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s := &Store{db: db, path: abs}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database. Closing twice is fine.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

func loadMigrations() ([]migrations.Migration, error) {
	return migrations.Load(migrationFS, "migrations", "sqlite")
}

// LatestSchemaVersion is the schema version this package migrates databases to.
func LatestSchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil {
		return 0
	}
	return migrations.Latest(ms)
}

// migrate applies the missing migrations in one immediate transaction, so two processes
// opening a new database at once do not both apply them.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return s.retry(ctx, "migrate", func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			applied_at INTEGER NOT NULL
		)`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return err
		}
		latest := migrations.Latest(ms)
		if cur > latest {
			return errdefs.FailedPreconditionf("sqlite: database %s has schema version %d, newer than this moat knows (%d): upgrade moat", s.path, cur, latest)
		}
		for _, m := range ms {
			if m.Version <= cur {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.Version, time.Now().UnixNano()); err != nil {
				return err
			}
		}
		return tx.Commit()
	})
}

// retry runs fn, again after backoff when SQLite reports the database busy or locked.
// Other errors are mapped to errdefs kinds by mapErr.
func (s *Store) retry(ctx context.Context, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	var err error
	for attempt := 0; ; attempt++ {
		err = fn()
		if err == nil || !isBusy(err) || attempt == busyRetries {
			break
		}
		t := time.NewTimer(time.Duration(10<<attempt) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("sqlite: %s: %w", op, ctx.Err())
		case <-t.C:
		}
	}
	return mapErr(ctx, op, err)
}

func sqliteCode(err error) (int, bool) {
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code(), true
	}
	return 0, false
}

func isBusy(err error) bool {
	code, ok := sqliteCode(err)
	if !ok {
		return false
	}
	switch code & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// mapErr attaches errdefs kinds to driver errors. Errors that already carry a kind pass
// through unchanged.
func mapErr(ctx context.Context, op string, err error) error {
	if err == nil || errdefs.KindOf(err) != errdefs.KindUnknown {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("sqlite: %s: %w", op, cerr)
	}
	if isBusy(err) {
		return errdefs.Unavailablef("sqlite: %s: database busy after retries: %w", op, err)
	}
	if code, ok := sqliteCode(err); ok {
		switch code {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return errdefs.AlreadyExistsf("sqlite: %s: %w", op, err)
		}
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// Time encoding: unix nanoseconds, NULL for the zero time.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func encTime(field string, t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, errdefs.InvalidArgumentf("sqlite: %s %s is outside the storable range (years 1678-2262)", field, t.Format(time.RFC3339))
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

// recordArgs encodes r's columns (everything but id and version) in the order of
// recordCols.
const recordCols = `name, backend, session_id, status, last_error, handle_backend, handle_version,
	handle_state, spec, labels, created_at, updated_at, last_used, expires_at`

func recordArgs(r *store.Record) ([]any, error) {
	if r == nil || r.ID == "" {
		return nil, errdefs.InvalidArgumentf("sqlite: record without id")
	}
	if len(r.Spec) > 0 && !json.Valid(r.Spec) {
		return nil, errdefs.InvalidArgumentf("sqlite: record %s: spec is not valid JSON", r.ID)
	}
	if len(r.Handle.State) > 0 && !json.Valid(r.Handle.State) {
		return nil, errdefs.InvalidArgumentf("sqlite: record %s: handle state is not valid JSON", r.ID)
	}
	labels := []byte("{}")
	if len(r.Labels) > 0 {
		var err error
		if labels, err = json.Marshal(r.Labels); err != nil {
			return nil, errdefs.InvalidArgumentf("sqlite: record %s: labels: %w", r.ID, err)
		}
	}
	args := []any{r.Name, r.Backend, r.SessionID, string(r.Status), r.LastError,
		r.Handle.Backend, r.Handle.Version, nullText(r.Handle.State), nullText(r.Spec), string(labels)}
	for _, t := range []struct {
		name string
		t    time.Time
	}{{"created_at", r.CreatedAt}, {"updated_at", r.UpdatedAt}, {"last_used", r.LastUsed}, {"expires_at", r.ExpiresAt}} {
		v, err := encTime(t.name, t.t)
		if err != nil {
			return nil, err
		}
		args = append(args, v)
	}
	return args, nil
}

const selectRecord = `SELECT id, version, ` + recordCols + ` FROM records`

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
	}
	r.CreatedAt, r.UpdatedAt, r.LastUsed, r.ExpiresAt = decTime(created), decTime(updated), decTime(lastUsed), decTime(expires)
	return &r, nil
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, r *store.Record) error {
	args, err := recordArgs(r)
	if err != nil {
		return err
	}
	err = s.retry(ctx, "create record", func() error {
		_, err := s.db.ExecContext(ctx, `INSERT INTO records (id, version, `+recordCols+`)
			VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, append([]any{r.ID}, args...)...)
		return err
	})
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		if code, _ := sqliteCode(err); code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY {
			return errdefs.AlreadyExistsf("sqlite: record %s already exists", r.ID)
		}
		return errdefs.AlreadyExistsf("sqlite: name %q is in use", r.Name)
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
	err := s.retry(ctx, "get record", func() error {
		var err error
		r, err = scanRecord(s.db.QueryRowContext(ctx, selectRecord+` WHERE id = ?`, id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFoundf("sqlite: record %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// List implements store.Store. Scalar fields are filtered in SQL; labels with
// Filter.Match on the rows that query returns.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*store.Record, error) {
	var (
		where []string
		args  []any
	)
	if f.Backend != "" {
		where, args = append(where, "backend = ?"), append(args, f.Backend)
	}
	if f.SessionID != "" {
		where, args = append(where, "session_id = ?"), append(args, f.SessionID)
	}
	if f.Name != "" {
		where, args = append(where, "name = ?"), append(args, f.Name)
	}
	if len(f.Status) > 0 {
		ph := make([]string, len(f.Status))
		for i, st := range f.Status {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "status IN ("+strings.Join(ph, ", ")+")")
	} else if !f.IncludeDestroyed {
		where, args = append(where, "status != ?"), append(args, string(store.StatusDestroyed))
	}
	q := selectRecord
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// NULL (zero) created_at sorts first, like the zero time.Time; ids compare bytewise.
	q += " ORDER BY created_at, id"
	var out []*store.Record
	err := s.retry(ctx, "list records", func() error {
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
			if f.Match(r) {
				out = append(out, r)
			}
		}
		return rows.Err()
	})
	return out, err
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, r *store.Record) error {
	args, err := recordArgs(r)
	if err != nil {
		return err
	}
	var n int64
	err = s.retry(ctx, "update record", func() error {
		res, err := s.db.ExecContext(ctx, `UPDATE records SET (`+recordCols+`) =
			(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), version = version + 1
			WHERE id = ? AND version = ?`, append(args, r.ID, r.Version)...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		return errdefs.AlreadyExistsf("sqlite: name %q is in use", r.Name)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		var cur int64
		err := s.retry(ctx, "update record", func() error {
			return s.db.QueryRowContext(ctx, `SELECT version FROM records WHERE id = ?`, r.ID).Scan(&cur)
		})
		if errors.Is(err, sql.ErrNoRows) {
			return errdefs.NotFoundf("sqlite: record %s not found", r.ID)
		}
		if err != nil {
			return err
		}
		return errdefs.Conflictf("sqlite: record %s: version %d is stale (stored %d)", r.ID, r.Version, cur)
	}
	r.Version++
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	var n int64
	err := s.retry(ctx, "delete record", func() error {
		res, err := s.db.ExecContext(ctx, `DELETE FROM records WHERE id = ?`, id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return errdefs.NotFoundf("sqlite: record %s not found", id)
	}
	return nil
}

// GetSetting implements store.Store.
func (s *Store) GetSetting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.retry(ctx, "get setting", func() error {
		return s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFoundf("sqlite: setting %q not found", key)
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
	return s.retry(ctx, "put setting", func() error {
		_, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}

// DeleteSetting implements store.Store.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	return s.retry(ctx, "delete setting", func() error {
		_, err := s.db.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, key)
		return err
	})
}

// ListSettings implements store.Store. Keys compare bytewise, so the keys with a prefix
// are the contiguous run starting at the prefix itself; no LIKE, so '%' and '_' are
// ordinary characters.
func (s *Store) ListSettings(ctx context.Context, prefix string) (map[string][]byte, error) {
	var out map[string][]byte
	err := s.retry(ctx, "list settings", func() error {
		out = map[string][]byte{}
		rows, err := s.db.QueryContext(ctx, `SELECT key, value FROM settings WHERE key >= ? ORDER BY key`, prefix)
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
