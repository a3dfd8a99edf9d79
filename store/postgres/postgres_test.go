package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/postgres"
	"github.com/moatsh/moat/store/storetest"
)

func openAt(t testing.TB, dsn string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.PostgresServer(t)
	storetest.RunOptions(t,
		func(t testing.TB) store.Store { return openAt(t, storetest.PostgresSchema(t)) },
		storetest.Options{Reopen: func(t testing.TB) func(t testing.TB) store.Store {
			dsn := storetest.PostgresSchema(t)
			return func(t testing.TB) store.Store { return openAt(t, dsn) }
		}})
}

func TestOpenPostgresqlScheme(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	s := openAt(t, "postgresql"+strings.TrimPrefix(dsn, "postgres"))
	if _, ok := s.(*postgres.Store); !ok {
		t.Fatalf("Open(postgresql://…) returned %T", s)
	}
}

func TestMigrations(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	ctx := context.Background()
	s := openAt(t, dsn)
	if err := s.Create(ctx, &store.Record{ID: "m1", Backend: "docker", Status: store.StatusActive}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openAt(t, dsn) // idempotent: nothing re-applied, nothing lost
	if _, err := s.Get(ctx, "m1"); err != nil {
		t.Fatalf("record after reopen: %v", err)
	}
	s.Close()

	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n, max int
	if err := c.QueryRow(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if latest := postgres.LatestSchemaVersion(); n != latest || max != latest {
		t.Fatalf("schema_migrations: %d rows, max %d; want %d and %d", n, max, latest, latest)
	}

	if _, err := c.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)`, postgres.LatestSchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(ctx, dsn)
	if !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("Open of a database from a newer moat: %v, want FailedPrecondition", err)
	}
}

func TestConcurrentFirstOpen(t *testing.T) {
	dsn := storetest.PostgresSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), dsn)
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent first Open: %v", err)
		}
	}
}

func TestInvalidInput(t *testing.T) {
	s := openAt(t, storetest.PostgresSchema(t))
	ctx := context.Background()
	for name, r := range map[string]*store.Record{
		"no id":       {Backend: "docker"},
		"bad spec":    {ID: "x", Spec: []byte("{nope")},
		"NUL in name": {ID: "y", Name: "a\x00b"},
	} {
		if err := s.Create(ctx, r); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("Create with %s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	// Port 1 on loopback: nothing listens, so the connection is refused at once.
	_, err := store.Open(context.Background(), "postgres://moat:s3cret-pw@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("Open of an unreachable server: %v, want Unavailable", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestBadDSN(t *testing.T) {
	_, err := store.Open(context.Background(), "postgres://moat:s3cret-pw@127.0.0.1:notaport/x")
	if !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("Open with a bad URL: %v, want InvalidArgument", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Fatalf("error leaks the password: %v", err)
	}
}
