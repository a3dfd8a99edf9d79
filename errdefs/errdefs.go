// Package errdefs answers "what kind of failure is this?": the error kinds every moat
// package returns, checkable with errors.Is and mapped to HTTP status codes and back.
//
// A kind is attached by wrapping: errdefs.NotFoundf("docker: container %s", id) or
// errdefs.Wrap(errdefs.ErrUnavailable, err). The original message and cause chain are kept.
//
// One rule: an error's kind is its outermost kind. KindOf and Is answer "what kind is
// this error?" and every moat package, the HTTP mapping and the conformance suites use
// them. errors.Is(err, errdefs.ErrNotFound) asks something else — whether a NotFound is
// anywhere in the chain — and is true of Unavailable("...: %w", notFound) too, an error
// the manager must not take for a vanished sandbox; so no moat code classifies with it (a
// test enforces this). errors.Is stays right for causes: context.Canceled, io.EOF,
// fs.ErrNotExist.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Kind names an error kind on the wire ("not_found", ...).
type Kind string

// The kinds. Their string values are part of the HTTP API.
const (
	KindUnknown            Kind = "unknown"
	KindNotFound           Kind = "not_found"
	KindAlreadyExists      Kind = "already_exists"
	KindInvalidArgument    Kind = "invalid_argument"
	KindFailedPrecondition Kind = "failed_precondition"
	KindConflict           Kind = "conflict"
	KindUnavailable        Kind = "unavailable"
	KindUnsupported        Kind = "unsupported"
	KindUnauthenticated    Kind = "unauthenticated"
	KindPermissionDenied   Kind = "permission_denied"
	KindResourceExhausted  Kind = "resource_exhausted"
	KindDeadlineExceeded   Kind = "deadline_exceeded"
	KindCanceled           Kind = "canceled"
)

// kindError is a sentinel. Every kind, Unsupported included, is this one type, so that
// KindOf's errors.As finds the outermost kind of a chain rather than a cause's.
type kindError struct {
	kind Kind
	std  error // the standard library's equivalent, if any
}

func (k *kindError) Error() string { return string(k.kind) }
func (k *kindError) Unwrap() error { return k.std }

// Sentinel errors, one per kind. Test with errors.Is.
var (
	ErrNotFound           error = &kindError{kind: KindNotFound}
	ErrAlreadyExists      error = &kindError{kind: KindAlreadyExists}
	ErrInvalidArgument    error = &kindError{kind: KindInvalidArgument}
	ErrFailedPrecondition error = &kindError{kind: KindFailedPrecondition}
	ErrConflict           error = &kindError{kind: KindConflict}
	ErrUnavailable        error = &kindError{kind: KindUnavailable}
	// ErrUnsupported wraps errors.ErrUnsupported so both checks hold.
	ErrUnsupported       error = &kindError{KindUnsupported, errors.ErrUnsupported}
	ErrUnauthenticated   error = &kindError{kind: KindUnauthenticated}
	ErrPermissionDenied  error = &kindError{kind: KindPermissionDenied}
	ErrResourceExhausted error = &kindError{kind: KindResourceExhausted}
	ErrDeadlineExceeded  error = &kindError{kind: KindDeadlineExceeded}
	ErrCanceled          error = &kindError{kind: KindCanceled}
)

var sentinels = map[Kind]error{
	KindNotFound:           ErrNotFound,
	KindAlreadyExists:      ErrAlreadyExists,
	KindInvalidArgument:    ErrInvalidArgument,
	KindFailedPrecondition: ErrFailedPrecondition,
	KindConflict:           ErrConflict,
	KindUnavailable:        ErrUnavailable,
	KindUnsupported:        ErrUnsupported,
	KindUnauthenticated:    ErrUnauthenticated,
	KindPermissionDenied:   ErrPermissionDenied,
	KindResourceExhausted:  ErrResourceExhausted,
	KindDeadlineExceeded:   ErrDeadlineExceeded,
	KindCanceled:           ErrCanceled,
}

// Kinds lists every known kind except KindUnknown, for tests and docs.
func Kinds() []Kind {
	return []Kind{KindNotFound, KindAlreadyExists, KindInvalidArgument, KindFailedPrecondition,
		KindConflict, KindUnavailable, KindUnsupported, KindUnauthenticated, KindPermissionDenied,
		KindResourceExhausted, KindDeadlineExceeded, KindCanceled}
}

// Sentinel returns the sentinel error of kind k, or nil for KindUnknown and unknown kinds.
func Sentinel(k Kind) error { return sentinels[k] }

// wrapped carries a message, a kind and an optional cause.
type wrapped struct {
	kind  error
	msg   string
	cause error
}

func (w *wrapped) Error() string { return w.msg }

func (w *wrapped) Unwrap() []error {
	if w.cause != nil {
		return []error{w.kind, w.cause}
	}
	return []error{w.kind}
}

// New returns an error of kind with message msg.
func New(kind error, msg string) error { return &wrapped{kind: kind, msg: msg} }

// Newf returns an error of kind with a formatted message. %w verbs keep their causes.
func Newf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	var cause error
	if errors.Unwrap(err) != nil || isMultiWrap(err) {
		cause = err // keeps every %w target reachable
	}
	return &wrapped{kind: kind, msg: err.Error(), cause: cause}
}

func isMultiWrap(err error) bool {
	_, ok := err.(interface{ Unwrap() []error })
	return ok
}

// Wrap attaches kind to err, keeping err's message. Wrap(kind, nil) is nil.
func Wrap(kind error, err error) error {
	if err == nil {
		return nil
	}
	return &wrapped{kind: kind, msg: err.Error(), cause: err}
}

// Convenience constructors for the common kinds.
func NotFoundf(format string, args ...any) error { return Newf(ErrNotFound, format, args...) }
func InvalidArgumentf(format string, args ...any) error {
	return Newf(ErrInvalidArgument, format, args...)
}
func Unavailablef(format string, args ...any) error { return Newf(ErrUnavailable, format, args...) }
func Unsupportedf(format string, args ...any) error { return Newf(ErrUnsupported, format, args...) }
func FailedPreconditionf(format string, args ...any) error {
	return Newf(ErrFailedPrecondition, format, args...)
}
func Conflictf(format string, args ...any) error { return Newf(ErrConflict, format, args...) }
func AlreadyExistsf(format string, args ...any) error {
	return Newf(ErrAlreadyExists, format, args...)
}

// KindOf reports the kind of err. Context errors map to canceled / deadline_exceeded and
// errors.ErrUnsupported to unsupported, so callers need not wrap them.
func KindOf(err error) Kind {
	if err == nil {
		return KindUnknown
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return KindUnsupported
	case errors.Is(err, context.DeadlineExceeded):
		return KindDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return KindCanceled
	}
	return KindUnknown
}

// Is reports whether err is of kind k (KindOf(err) == k).
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

var statusByKind = map[Kind]int{
	KindNotFound:           http.StatusNotFound,
	KindAlreadyExists:      http.StatusConflict,
	KindInvalidArgument:    http.StatusBadRequest,
	KindFailedPrecondition: http.StatusPreconditionFailed,
	KindConflict:           http.StatusConflict,
	KindUnavailable:        http.StatusServiceUnavailable,
	KindUnsupported:        http.StatusNotImplemented,
	KindUnauthenticated:    http.StatusUnauthorized,
	KindPermissionDenied:   http.StatusForbidden,
	KindResourceExhausted:  http.StatusTooManyRequests,
	KindDeadlineExceeded:   http.StatusGatewayTimeout,
	KindCanceled:           499, // nginx's "client closed request"
}

// HTTPStatus maps a kind to the status code the HTTP API answers with.
func HTTPStatus(k Kind) int {
	if s, ok := statusByKind[k]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// FromHTTP builds an error from an HTTP API error answer. The kind named in the body wins;
// when it is missing the status code decides (409 is Conflict, 413 ResourceExhausted).
func FromHTTP(status int, kind Kind, msg string) error {
	if s := Sentinel(kind); s != nil {
		return New(s, msg)
	}
	switch status {
	case http.StatusNotFound:
		return New(ErrNotFound, msg)
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return New(ErrInvalidArgument, msg)
	case http.StatusConflict:
		return New(ErrConflict, msg)
	case http.StatusUnauthorized:
		return New(ErrUnauthenticated, msg)
	case http.StatusForbidden:
		return New(ErrPermissionDenied, msg)
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		return New(ErrResourceExhausted, msg)
	case http.StatusPreconditionFailed:
		return New(ErrFailedPrecondition, msg)
	case http.StatusNotImplemented:
		return New(ErrUnsupported, msg)
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return New(ErrUnavailable, msg)
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return New(ErrDeadlineExceeded, msg)
	}
	return errors.New(msg)
}
