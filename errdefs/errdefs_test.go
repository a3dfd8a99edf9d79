package errdefs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestKindsRoundTripThroughHTTP(t *testing.T) {
	seenStatus := map[int]Kind{}
	for _, k := range Kinds() {
		err := Newf(Sentinel(k), "pkg: thing %d failed", 7)
		if KindOf(err) != k || !errors.Is(err, Sentinel(k)) {
			t.Fatalf("%s: KindOf = %s", k, KindOf(err))
		}
		st := HTTPStatus(k)
		if st < 400 {
			t.Fatalf("%s maps to %d", k, st)
		}
		back := FromHTTP(st, k, err.Error())
		if KindOf(back) != k || back.Error() != "pkg: thing 7 failed" {
			t.Fatalf("%s: round trip gave %s %q", k, KindOf(back), back)
		}
		// Without the kind in the body, the status alone must still give a sensible kind.
		if _, dup := seenStatus[st]; !dup {
			seenStatus[st] = k
			if got := KindOf(FromHTTP(st, "", "x")); got == KindUnknown && st != 499 {
				t.Errorf("status %d alone maps to unknown", st)
			}
		}
	}
	if HTTPStatus(KindUnknown) != http.StatusInternalServerError {
		t.Fatal("unknown kind must be 500")
	}
}

func TestWrapKeepsCauseAndMessage(t *testing.T) {
	cause := fmt.Errorf("dial: %w", context.DeadlineExceeded)
	err := Wrap(ErrUnavailable, cause)
	if err.Error() != cause.Error() || !errors.Is(err, context.DeadlineExceeded) || KindOf(err) != KindUnavailable {
		t.Fatalf("Wrap lost something: %v kind %s", err, KindOf(err))
	}
	if Wrap(ErrNotFound, nil) != nil {
		t.Fatal("Wrap(nil) must be nil")
	}
	a, b := errors.New("a"), errors.New("b")
	multi := Newf(ErrNotFound, "x: %w", errors.Join(a, b))
	if !errors.Is(multi, a) || !errors.Is(multi, b) || KindOf(multi) != KindNotFound {
		t.Fatal("Newf must keep joined causes")
	}
	if !errors.Is(Unsupportedf("no"), errors.ErrUnsupported) {
		t.Fatal("unsupported must satisfy errors.ErrUnsupported")
	}
	if KindOf(context.Canceled) != KindCanceled || KindOf(fmt.Errorf("x: %w", context.DeadlineExceeded)) != KindDeadlineExceeded {
		t.Fatal("context errors must map to their kinds")
	}
	if KindOf(errors.New("plain")) != KindUnknown || Is(nil, KindNotFound) {
		t.Fatal("plain errors are unknown; nil is no kind")
	}
}

// The outermost kind wins, for every kind: an Unsupported error that wraps a NotFound
// cause is Unsupported, as a NotFound wrapping an Unsupported cause is NotFound.
func TestOuterKindWins(t *testing.T) {
	for _, outer := range Kinds() {
		for _, inner := range Kinds() {
			err := Newf(Sentinel(outer), "pkg: outer: %w", Newf(Sentinel(inner), "pkg: inner"))
			if got := KindOf(err); got != outer {
				t.Errorf("%s wrapping %s: KindOf = %s", outer, inner, got)
			}
			if err := Wrap(Sentinel(outer), Newf(Sentinel(inner), "pkg: inner")); KindOf(err) != outer {
				t.Errorf("Wrap(%s, %s): KindOf = %s", outer, inner, KindOf(err))
			}
		}
	}
}
