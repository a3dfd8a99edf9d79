// Package postgres answers "where do records live when several machines share them?": a
// store.Store in a PostgreSQL database (pgx v5's connection pool, used through
// database/sql so the queries are the SQLite store's, in store/internal/sqlstore), for
// moatd deployments that outgrow one SQLite file.
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
	"database/sql/driver"
	"embed"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/internal/migrations"
	"github.com/moatsh/moat/store/internal/sqlstore"
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
	*sqlstore.Store
	pool *pgxpool.Pool
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
		return nil, dialect.MapErr(ctx, "connect", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, dialect.MapErr(ctx, "connect", err)
	}
	ms, err := migrations.Load(migrationFS, "migrations", "postgres")
	if err != nil {
		pool.Close()
		return nil, err
	}
	// database/sql over the pool, so the queries are sqlstore's, shared with SQLite.
	s := &Store{Store: sqlstore.New(stdlib.OpenDBFromPool(pool), dialect), pool: pool}
	if err := s.Migrate(ctx, ms, "database"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection pool. Closing twice is fine.
func (s *Store) Close() error {
	err := s.Store.Close()
	s.pool.Close()
	return err
}

// LatestSchemaVersion is the schema version this package migrates databases to.
func LatestSchemaVersion() int {
	ms, _ := migrations.Load(migrationFS, "migrations", "postgres") // nil on error: 0
	return migrations.Latest(ms)
}

var dialect = &sqlstore.Dialect{
	Name:        "postgres",
	Placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	Retryable:   isRetryable,
	Retries:     retries,
	Backoff:     5 * time.Millisecond,
	Exhausted:   "still conflicting",
	Kind:        kind,
	DuplicateID: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.ConstraintName == "records_pkey"
	},
	LabelsContain: func(param string) string { return "labels @> " + param },
	// Held to the end of the migration transaction.
	MigrationLock: "SELECT pg_advisory_xact_lock(" + strconv.Itoa(migrationLockID) + ")",
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

// kind is the errdefs kind of a driver error that is not retryable.
func kind(err error) errdefs.Kind {
	code := sqlState(err)
	switch {
	case code == "23505": // unique_violation
		return errdefs.KindAlreadyExists
	case code == "22021", code == "22P05": // bad byte sequence, untranslatable character (NUL)
		return errdefs.KindInvalidArgument
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "57P"), code == "53300":
		// connection exceptions, shutdowns, too many connections
		return errdefs.KindUnavailable
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || (code == "" && pgconn.SafeToRetry(err)) || errors.Is(err, driver.ErrBadConn) {
		return errdefs.KindUnavailable
	}
	return errdefs.KindUnknown
}

var _ store.Store = (*Store)(nil)
