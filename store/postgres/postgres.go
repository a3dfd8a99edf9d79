// Package postgres answers "where do records live when several machines share them?": a
// store.Store in a PostgreSQL database (pgx v5, connection pool), for moatd deployments
// that outgrow one SQLite file.
//
// Open("postgres://user@host/db?sslmode=...") connects, then runs the embedded migrations
// (migrations/*.sql, tracked in schema_migrations) in one transaction under an advisory
// lock, so concurrent first starts apply them once. Tables live in the connection's
// search_path; add "search_path=moat" to the URL to keep them in their own schema. A
// database written by a newer moat is refused with FailedPrecondition.
//
// The schema mirrors the SQLite store's: filterable fields are columns, labels are JSONB
// (filtered with @>), times are BIGINT unix nanoseconds (NULL for the zero time, years
// 1678-2262). Unique violations are AlreadyExists; serialization failures and deadlocks
// are retried, then Unavailable, as are connection failures.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/internal/migrations"
)

func init() {
	store.Register("postgres", func(ctx context.Context, url string) (store.Store, error) {
		return Open(ctx, url)
	})
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLockID keys the advisory lock that serialises migrations ("moat" in ASCII).
const migrationLockID = 0x6d6f6174

// retries is how many more times an operation runs after a serialization failure or
// deadlock before it is reported as Unavailable.
const retries = 4

// Store is a store.Store in a PostgreSQL database. Safe for concurrent use, also by many
// processes sharing the database.
type Store struct {
	pool      *pgxpool.Pool
	closeOnce sync.Once
}

// Open connects to the database named by dsn ("postgres://…" or "postgresql://…", or a
// key=value connection string) and brings its schema up to date. Errors never include the
// password.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its parse errors.
		return nil, errdefs.InvalidArgumentf("postgres: connection string: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, mapErr(ctx, "connect", err)
	}
	s := &Store{pool: pool}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, mapErr(ctx, "connect", err)
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection pool. Closing twice is fine.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

func loadMigrations() ([]migrations.Migration, error) {
	return migrations.Load(migrationFS, "migrations", "postgres")
}

// LatestSchemaVersion is the schema version this package migrates databases to.
func LatestSchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil {
		return 0
	}
	return migrations.Latest(ms)
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	latest := migrations.Latest(ms)
	return s.retry(ctx, "migrate", func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// The lock is held to the end of the transaction: a second process waits here,
			// then finds the migrations applied.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    INTEGER NOT NULL PRIMARY KEY,
				applied_at BIGINT  NOT NULL
			)`); err != nil {
				return err
			}
			var cur int
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
				return err
			}
			if cur > latest {
				return errdefs.FailedPreconditionf("postgres: database has schema version %d, newer than this moat knows (%d): upgrade moat", cur, latest)
			}
			for _, m := range ms {
				if m.Version <= cur {
					continue
				}
				if _, err := tx.Exec(ctx, m.SQL); err != nil {
					return fmt.Errorf("migration %s: %w", m.Name, err)
				}
				if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
					m.Version, time.Now().UnixNano()); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// retry runs fn, again when Postgres reports a serialization failure or deadlock, and maps
// the final error to an errdefs kind.
func (s *Store) retry(ctx context.Context, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	var err error
	for attempt := 0; ; attempt++ {
		err = fn()
		if err == nil || !isRetryable(err) || attempt == retries {
			break
		}
		t := time.NewTimer(time.Duration(5<<attempt) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("postgres: %s: %w", op, ctx.Err())
		case <-t.C:
		}
	}
	return mapErr(ctx, op, err)
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isRetryable(err error) bool {
	switch sqlState(err) {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return true
	}
	return false
}

// mapErr attaches errdefs kinds to driver errors; errors that carry a kind pass through.
func mapErr(ctx context.Context, op string, err error) error {
	if err == nil || errdefs.KindOf(err) != errdefs.KindUnknown {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("postgres: %s: %w", op, cerr)
	}
	code := sqlState(err)
	switch {
	case code == "23505": // unique_violation
		return errdefs.AlreadyExistsf("postgres: %s: %w", op, err)
	case isRetryable(err):
		return errdefs.Unavailablef("postgres: %s: still conflicting after retries: %w", op, err)
	case code == "22021", code == "22P05": // bad byte sequence, untranslatable character (NUL)
		return errdefs.InvalidArgumentf("postgres: %s: %w", op, err)
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "57P"), code == "53300":
		// connection exceptions, shutdowns, too many connections
		return errdefs.Unavailablef("postgres: %s: %w", op, err)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || (code == "" && pgconn.SafeToRetry(err)) {
		return errdefs.Unavailablef("postgres: %s: %w", op, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func encTime(field string, t time.Time) (*int64, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, errdefs.InvalidArgumentf("postgres: %s %s is outside the storable range (years 1678-2262)", field, t.Format(time.RFC3339))
	}
	n := t.UnixNano()
	return &n, nil
}

func decTime(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.Unix(0, *v).UTC()
}

func nullJSON(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	return &s
}

const recordCols = `name, backend, session_id, status, last_error, handle_backend, handle_version,
	handle_state, spec, labels, created_at, updated_at, last_used, expires_at`

// recordArgs encodes r's columns in the order of recordCols.
func recordArgs(r *store.Record) ([]any, error) {
	if r == nil || r.ID == "" {
		return nil, errdefs.InvalidArgumentf("postgres: record without id")
	}
	if len(r.Spec) > 0 && !json.Valid(r.Spec) {
		return nil, errdefs.InvalidArgumentf("postgres: record %s: spec is not valid JSON", r.ID)
	}
	if len(r.Handle.State) > 0 && !json.Valid(r.Handle.State) {
		return nil, errdefs.InvalidArgumentf("postgres: record %s: handle state is not valid JSON", r.ID)
	}
	labels := r.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	args := []any{r.Name, r.Backend, r.SessionID, string(r.Status), r.LastError,
		r.Handle.Backend, r.Handle.Version, nullJSON(r.Handle.State), nullJSON(r.Spec), labels}
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

// The JSON columns are read as text so they come back byte for byte.
const selectRecord = `SELECT id, version, name, backend, session_id, status, last_error, handle_backend,
	handle_version, handle_state::text, spec::text, labels, created_at, updated_at, last_used, expires_at
	FROM records`

func scanRecord(row pgx.Row) (*store.Record, error) {
	var (
		r                                   store.Record
		status                              string
		state, spec                         *string
		labels                              map[string]string
		created, updated, lastUsed, expires *int64
	)
	if err := row.Scan(&r.ID, &r.Version, &r.Name, &r.Backend, &r.SessionID, &status, &r.LastError,
		&r.Handle.Backend, &r.Handle.Version, &state, &spec, &labels,
		&created, &updated, &lastUsed, &expires); err != nil {
		return nil, err
	}
	r.Status = store.Status(status)
	if state != nil {
		r.Handle.State = json.RawMessage(*state)
	}
	if spec != nil {
		r.Spec = json.RawMessage(*spec)
	}
	if len(labels) > 0 {
		r.Labels = labels
	}
	r.CreatedAt, r.UpdatedAt, r.LastUsed, r.ExpiresAt = decTime(created), decTime(updated), decTime(lastUsed), decTime(expires)
	return &r, nil
}

// placeholders returns "$from, $from+1, …" for n parameters.
func placeholders(from, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "$" + strconv.Itoa(from+i)
	}
	return strings.Join(ps, ", ")
}

var (
	insertRecord = `INSERT INTO records (id, version, ` + recordCols + `) VALUES ($1, 1, ` + placeholders(2, 14) + `)`
	updateRecord = `UPDATE records SET (` + recordCols + `) = (` + placeholders(1, 14) + `), version = version + 1
		WHERE id = $15 AND version = $16`
)

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, r *store.Record) error {
	args, err := recordArgs(r)
	if err != nil {
		return err
	}
	err = s.retry(ctx, "create record", func() error {
		_, err := s.pool.Exec(ctx, insertRecord, append([]any{r.ID}, args...)...)
		return err
	})
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.ConstraintName == "records_pkey" {
			return errdefs.AlreadyExistsf("postgres: record %s already exists", r.ID)
		}
		return errdefs.AlreadyExistsf("postgres: name %q is in use", r.Name)
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
		r, err = scanRecord(s.pool.QueryRow(ctx, selectRecord+` WHERE id = $1`, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errdefs.NotFoundf("postgres: record %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// List implements store.Store. Every filter field is applied in SQL; Filter.Match runs
// over the result as well, so the two can never disagree.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*store.Record, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
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
		st := make([]string, len(f.Status))
		for i, v := range f.Status {
			st[i] = string(v)
		}
		where = append(where, "status = ANY("+arg(st)+")")
	} else if !f.IncludeDestroyed {
		where = append(where, "status <> "+arg(string(store.StatusDestroyed)))
	}
	if len(f.Labels) > 0 {
		where = append(where, "labels @> "+arg(f.Labels))
	}
	q := selectRecord
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// NULL (zero) created_at sorts first, like the zero time.Time; ids are COLLATE "C".
	q += " ORDER BY created_at ASC NULLS FIRST, id"
	var out []*store.Record
	err := s.retry(ctx, "list records", func() error {
		out = nil
		rows, err := s.pool.Query(ctx, q, args...)
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
		tag, err := s.pool.Exec(ctx, updateRecord, append(args, r.ID, r.Version)...)
		n = tag.RowsAffected()
		return err
	})
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		return errdefs.AlreadyExistsf("postgres: name %q is in use", r.Name)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		var cur int64
		err := s.retry(ctx, "update record", func() error {
			return s.pool.QueryRow(ctx, `SELECT version FROM records WHERE id = $1`, r.ID).Scan(&cur)
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return errdefs.NotFoundf("postgres: record %s not found", r.ID)
		}
		if err != nil {
			return err
		}
		return errdefs.Conflictf("postgres: record %s: version %d is stale (stored %d)", r.ID, r.Version, cur)
	}
	r.Version++
	return nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	var n int64
	err := s.retry(ctx, "delete record", func() error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM records WHERE id = $1`, id)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return errdefs.NotFoundf("postgres: record %s not found", id)
	}
	return nil
}

// GetSetting implements store.Store.
func (s *Store) GetSetting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.retry(ctx, "get setting", func() error {
		return s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errdefs.NotFoundf("postgres: setting %q not found", key)
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
		_, err := s.pool.Exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}

// DeleteSetting implements store.Store.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	return s.retry(ctx, "delete setting", func() error {
		_, err := s.pool.Exec(ctx, `DELETE FROM settings WHERE key = $1`, key)
		return err
	})
}

// ListSettings implements store.Store. starts_with, not LIKE, so '%' and '_' in the
// prefix are ordinary characters.
func (s *Store) ListSettings(ctx context.Context, prefix string) (map[string][]byte, error) {
	var out map[string][]byte
	err := s.retry(ctx, "list settings", func() error {
		out = map[string][]byte{}
		rows, err := s.pool.Query(ctx, `SELECT key, value FROM settings WHERE starts_with(key, $1)`, prefix)
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
