package memstore_test

import (
	"context"
	"testing"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/store"
	"github.com/moatsh/moat/store/memstore"
	"github.com/moatsh/moat/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store {
		s := memstore.New()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, "mem:")
	if err != nil {
		t.Fatalf("Open(mem:): %v", err)
	}
	defer s.Close()
	if _, ok := s.(*memstore.Store); !ok {
		t.Fatalf("Open(mem:) returned %T", s)
	}
	// Each Open is a separate, empty store.
	if err := s.PutSetting(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s2, err := store.Open(ctx, "mem:")
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.GetSetting(ctx, "k"); !errdefs.Is(err, errdefs.KindNotFound) {
		t.Fatalf("second mem: store sees the first one's data (err %v)", err)
	}
	if _, err := store.Open(ctx, "mem:/some/path"); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("Open(mem:/some/path): %v, want InvalidArgument", err)
	}
}

func TestClosed(t *testing.T) {
	s := memstore.New()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get(context.Background(), "x"); !errdefs.Is(err, errdefs.KindFailedPrecondition) {
		t.Fatalf("Get after Close: %v, want FailedPrecondition", err)
	}
}

func TestInvalidInput(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx := context.Background()
	if err := s.Create(ctx, &store.Record{}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("Create without id: %v", err)
	}
	if err := s.Create(ctx, &store.Record{ID: "x", Spec: []byte("{nope")}); !errdefs.Is(err, errdefs.KindInvalidArgument) {
		t.Fatalf("Create with bad spec: %v", err)
	}
}
