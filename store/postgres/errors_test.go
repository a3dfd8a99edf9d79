package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/moatsh/moat/errdefs"
)

func TestMapErr(t *testing.T) {
	ctx := context.Background()
	for code, want := range map[string]error{
		"23505": errdefs.ErrAlreadyExists,
		"40001": errdefs.ErrUnavailable,
		"40P01": errdefs.ErrUnavailable,
		"08006": errdefs.ErrUnavailable,
		"57P01": errdefs.ErrUnavailable,
		"22021": errdefs.ErrInvalidArgument,
	} {
		err := dialect.MapErr(ctx, "op", fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, Message: "m"}))
		if !errors.Is(err, want) {
			t.Errorf("SQLSTATE %s mapped to %v (kind %s), want %v", code, err, errdefs.KindOf(err), want)
		}
	}
	if err := dialect.MapErr(ctx, "op", &pgconn.PgError{Code: "42P01"}); errdefs.KindOf(err) != errdefs.KindUnknown {
		t.Errorf("undefined_table got kind %s, want none", errdefs.KindOf(err))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := dialect.MapErr(cctx, "op", errors.New("driver noise")); !errors.Is(err, context.Canceled) {
		t.Errorf("error under a cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestRetrySerializationFailure(t *testing.T) {
	calls := 0
	err := dialect.Retry(context.Background(), "op", func() error {
		calls++
		if calls < 3 {
			return &pgconn.PgError{Code: "40001"}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("retry: err %v after %d calls; want success on the 3rd", err, calls)
	}
	calls = 0
	err = dialect.Retry(context.Background(), "op", func() error {
		calls++
		return &pgconn.PgError{Code: "40P01"}
	})
	if !errdefs.Is(err, errdefs.KindUnavailable) || calls != retries+1 {
		t.Fatalf("persistent deadlock: %v after %d calls; want Unavailable after %d", err, calls, retries+1)
	}
	calls = 0
	err = dialect.Retry(context.Background(), "op", func() error {
		calls++
		return &pgconn.PgError{Code: "23505"}
	})
	if !errdefs.Is(err, errdefs.KindAlreadyExists) || calls != 1 {
		t.Fatalf("unique violation: %v after %d calls; want AlreadyExists without retry", err, calls)
	}
}
