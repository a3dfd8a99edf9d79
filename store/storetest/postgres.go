package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/moatsh/moat/internal/testenv"
)

// PostgresServer returns the test server's URL from MOAT_TEST_POSTGRES (set by
// scripts/postgres-test.sh), skipping, or failing under MOAT_TEST_REQUIRE, without it.
func PostgresServer(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("MOAT_TEST_POSTGRES")
	if dsn == "" {
		testenv.Require(t, "postgres", `MOAT_TEST_POSTGRES is unset (start a server with: eval "$(scripts/postgres-test.sh)")`)
	}
	return dsn
}

// PostgresSchema creates an empty schema of its own for t on the test server (dropped when
// t ends) and returns a URL whose search_path points at it, so runs and tests never see
// each other's tables.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	dsn := PostgresServer(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		testenv.Require(t, "postgres", "cannot connect to MOAT_TEST_POSTGRES: "+err.Error())
	}
	defer admin.Close(ctx)
	b := make([]byte, 8)
	rand.Read(b)
	schema := "moat_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("MOAT_TEST_POSTGRES is not a URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
