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
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/internal/migrations"
	"github.com/moatsh/moat/store/internal/sqlstore"
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
	*sqlstore.Store
	path string
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
	ms, err := migrations.Load(migrationFS, "migrations", "sqlite")
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{Store: sqlstore.New(db, dialect), path: abs}
	// One immediate transaction, so two processes opening a new database at once do not
	// both apply the migrations.
	if err := s.Migrate(ctx, ms, "database "+abs); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// LatestSchemaVersion is the schema version this package migrates databases to.
func LatestSchemaVersion() int {
	ms, _ := migrations.Load(migrationFS, "migrations", "sqlite") // nil on error: 0
	return migrations.Latest(ms)
}

var dialect = &sqlstore.Dialect{
	Name:        "sqlite",
	Placeholder: func(int) string { return "?" },
	Retryable:   isBusy,
	Retries:     busyRetries,
	Backoff:     10 * time.Millisecond,
	Exhausted:   "database busy",
	Kind: func(err error) errdefs.Kind {
		switch code, _ := sqliteCode(err); code {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return errdefs.KindAlreadyExists
		}
		return errdefs.KindUnknown
	},
	DuplicateID: func(err error) bool {
		code, _ := sqliteCode(err)
		return code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	},
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

var _ store.Store = (*Store)(nil)
