package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/sqlite"
	"github.com/moatsh/moat/store/storetest"
)

func openAt(t testing.TB, path string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunOptions(t,
		func(t testing.TB) store.Store { return openAt(t, filepath.Join(t.TempDir(), "moat.db")) },
		storetest.Options{Reopen: func(t testing.TB) func(t testing.TB) store.Store {
			path := filepath.Join(t.TempDir(), "moat.db")
			return func(t testing.TB) store.Store { return openAt(t, path) }
		}})
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "moat")
	path := filepath.Join(dir, "moat.db")
	s := openAt(t, path)
	// Write something so the WAL exists too.
	if err := s.PutSetting(context.Background(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600, path + "-wal": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}
}

func TestOpenURLForms(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, url := range []string{"sqlite:" + dir + "/a.db", "sqlite://" + dir + "/b.db"} {
		s, err := store.Open(ctx, url)
		if err != nil {
			t.Fatalf("Open(%s): %v", url, err)
		}
		ss, ok := s.(*sqlite.Store)
		if !ok {
			t.Fatalf("Open(%s) returned %T", url, s)
		}
		if filepath.Dir(ss.Path()) != dir {
			t.Errorf("Open(%s) opened %s", url, ss.Path())
		}
		s.Close()
	}
	for _, url := range []string{"sqlite:", "sqlite:" + dir + "/x.db?mode=ro"} {
		if _, err := store.Open(ctx, url); !errdefs.Is(err, errdefs.KindInvalidArgument) {
			t.Errorf("Open(%q): %v, want InvalidArgument", url, err)
		}
	}
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "moat.db")
	ctx := context.Background()
	s := openAt(t, path)
	r := &store.Record{ID: "m1", Name: "keep", Backend: "docker", Status: store.StatusActive, Spec: []byte(`{}`)}
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openAt(t, path) // second open must not re-run migrations or lose data
	if _, err := s2.Get(ctx, "m1"); err != nil {
		t.Fatalf("record after reopen: %v", err)
	}
	var n, max int
	if err := rawDB(t, path).QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if max != sqlite.LatestSchemaVersion() || n != max {
		t.Fatalf("schema_migrations has %d rows, max version %d; want %d and %d", n, max, sqlite.LatestSchemaVersion(), sqlite.LatestSchemaVersion())
	}
}

func TestMigrationsRefuseNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "moat.db")
	openAt(t, path).Close()
	future := sqlite.LatestSchemaVersion() + 1
	if _, err := rawDB(t, path).Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`, future); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(context.Background(), "sqlite:"+path)
	if !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("Open of a database from a newer moat: %v, want FailedPrecondition", err)
	}
	if want := "schema version " + strconv.Itoa(future); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the version (%q)", err, want)
	}
}

func TestConcurrentFirstOpen(t *testing.T) {
	// Several Stores creating the same new database at once: migrations run exactly once.
	path := filepath.Join(t.TempDir(), "moat.db")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := sqlite.Open(context.Background(), path)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
	var n int
	if err := rawDB(t, path).QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != sqlite.LatestSchemaVersion() {
		t.Fatalf("schema_migrations has %d rows, want %d", n, sqlite.LatestSchemaVersion())
	}
}

func TestLockedDatabaseIsUnavailable(t *testing.T) {
	// Another process holding the write lock past the busy timeout and every retry makes a
	// write fail with Unavailable rather than hang or report an unknown error.
	defer sqlite.SetBusyTimeout(50 * time.Millisecond)()
	path := filepath.Join(t.TempDir(), "moat.db")
	s := openAt(t, path)
	db := rawDB(t, path)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), `ROLLBACK`)
	err = s.PutSetting(context.Background(), "k", []byte("v"))
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("write under a held lock: %v, want Unavailable", err)
	}
	// A ctx deadline cuts the wait short and says so.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.PutSetting(ctx, "k", []byte("v"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write under a held lock with a deadline: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("deadline of 100ms took %v to return", d)
	}
}

// TestHelperProcessIncrement is not a test: TestTwoProcesses runs the test binary with
// MOAT_SQLITE_HELPER set to make it a second moat process writing to the same database.
func TestHelperProcessIncrement(t *testing.T) {
	path := os.Getenv("MOAT_SQLITE_HELPER")
	if path == "" {
		t.Skip("helper process for TestTwoProcesses")
	}
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, _ := strconv.Atoi(os.Getenv("MOAT_SQLITE_HELPER_N"))
	if err := increment(s, n); err != nil {
		t.Fatal(err)
	}
}

// increment adds 1 to the "counter" label of record "shared" n times, retrying conflicts.
func increment(s store.Store, n int) error {
	ctx := context.Background()
	for i := 0; i < n; {
		r, err := s.Get(ctx, "shared")
		if err != nil {
			return err
		}
		c, _ := strconv.Atoi(r.Labels["counter"])
		r.Labels["counter"] = strconv.Itoa(c + 1)
		err = s.Update(ctx, r)
		if errdefs.Is(err, errdefs.KindConflict) {
			continue
		}
		if err != nil {
			return err
		}
		i++
	}
	return nil
}

func TestTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "moat.db")
	s := openAt(t, path)
	ctx := context.Background()
	if err := s.Create(ctx, &store.Record{ID: "shared", Backend: "docker", Status: store.StatusActive,
		Labels: map[string]string{"counter": "0"}}); err != nil {
		t.Fatal(err)
	}
	const perProc = 15
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessIncrement$", "-test.count=1")
		cmd.Env = append(os.Environ(), "MOAT_SQLITE_HELPER="+path, "MOAT_SQLITE_HELPER_N="+strconv.Itoa(perProc))
		out := &prefixWriter{t: t}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	if err := increment(s, perProc); err != nil {
		t.Errorf("parent: %v", err)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}
	r, err := s.Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * perProc; r.Labels["counter"] != strconv.Itoa(want) || r.Version != int64(want+1) {
		t.Fatalf("counter %s version %d after 3 processes × %d increments; want %d and %d",
			r.Labels["counter"], r.Version, perProc, want, want+1)
	}
}

type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Logf("helper: %s", p)
	return len(p), nil
}
