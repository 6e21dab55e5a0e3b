// Package errs defines Gatehouse's typed domain errors: a kind (which becomes the status code) and a
// stable machine-readable reason. The transport layer maps them to gRPC and Connect errors in one
// table; nothing else in the code base builds status errors.
package errs

import (
	"errors"
	"fmt"
)

// Kind classifies an error; each kind maps to exactly one status code.
type Kind int

// The kinds of domain error.
const (
	KindInternal Kind = iota
	KindInvalidArgument
	KindNotFound
	KindAlreadyExists
	KindFailedPrecondition
	KindPermissionDenied
	KindUnauthenticated
	KindResourceExhausted
	KindUnimplemented
	KindOutOfRange
	KindUnavailable
	KindAborted
)

// FieldViolation names one invalid request field and says what is wrong with it.
type FieldViolation struct {
	// Field is the field's path in the request, e.g. "user.email".
	Field string
	// Description says what is wrong.
	Description string
}

// Error is a domain error. Its Message is safe to show to the caller: it never contains secrets or
// SQL. The optional cause is for logs only.
type Error struct {
	Kind       Kind
	Reason     string
	Message    string
	Violations []FieldViolation
	Metadata   map[string]string
	cause      error
}

// Error implements error.
func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.cause }

// WithMetadata returns e with a metadata entry added (for example the termination reason of an
// ended session).
func (e *Error) WithMetadata(key, value string) *Error {
	if e.Metadata == nil {
		e.Metadata = map[string]string{}
	}
	e.Metadata[key] = value
	return e
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// KindOf returns the kind of err, KindInternal when err is not a domain error.
func KindOf(err error) Kind {
	if e, ok := As(err); ok {
		return e.Kind
	}
	return KindInternal
}

func newf(kind Kind, reason, format string, args ...any) *Error {
	return &Error{Kind: kind, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// InvalidArgument is a request that is wrong in itself; violations name the fields.
func InvalidArgument(reason, message string, violations ...FieldViolation) *Error {
	return &Error{Kind: KindInvalidArgument, Reason: reason, Message: message, Violations: violations}
}

// NotFound says the named resource does not exist.
func NotFound(reason, format string, args ...any) *Error {
	return newf(KindNotFound, reason, format, args...)
}

// AlreadyExists says the resource to create exists.
func AlreadyExists(reason, format string, args ...any) *Error {
	return newf(KindAlreadyExists, reason, format, args...)
}

// FailedPrecondition says the system is not in a state where the request can be carried out.
func FailedPrecondition(reason, format string, args ...any) *Error {
	return newf(KindFailedPrecondition, reason, format, args...)
}

// PermissionDenied says the caller may not do this.
func PermissionDenied(reason, format string, args ...any) *Error {
	return newf(KindPermissionDenied, reason, format, args...)
}

// Unauthenticated says the caller's credentials are missing or not valid.
func Unauthenticated(reason, format string, args ...any) *Error {
	return newf(KindUnauthenticated, reason, format, args...)
}

// ResourceExhausted says a limit was reached.
func ResourceExhausted(reason, format string, args ...any) *Error {
	return newf(KindResourceExhausted, reason, format, args...)
}

// Unimplemented says the RPC is not implemented yet.
func Unimplemented(format string, args ...any) *Error {
	return newf(KindUnimplemented, "UNIMPLEMENTED", format, args...)
}

// OutOfRange says a position or value is outside what is kept.
func OutOfRange(reason, format string, args ...any) *Error {
	return newf(KindOutOfRange, reason, format, args...)
}

// Unavailable says the service cannot answer now; the caller may retry.
func Unavailable(reason, format string, args ...any) *Error {
	return newf(KindUnavailable, reason, format, args...)
}

// Aborted says the request conflicted with a concurrent one; the caller may retry.
func Aborted(reason, format string, args ...any) *Error {
	return newf(KindAborted, reason, format, args...)
}

// Internal wraps an unexpected error. The caller sees only a generic message; the cause is logged by
// the transport.
func Internal(cause error) *Error {
	return &Error{Kind: KindInternal, Reason: "INTERNAL", Message: "internal error", cause: cause}
}
