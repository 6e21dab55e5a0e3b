// Package transport exposes Gatehouse's services over gRPC, Connect and REST: the cross-cutting
// interceptors (panic recovery, client info, authentication, validation, authorisation, access
// logging), each with a grpc twin and a connect twin over shared logic, the one table that maps
// domain errors to status codes, and the grpc-gateway mux that serves REST through the node's own
// gRPC port.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo detail Gatehouse returns.
const ErrorDomain = "gatehouse.dev"

// internalMessage is all a caller ever learns about an internal error.
const internalMessage = "internal error"

// kindCodes is the one table from domain error kinds to status codes. Connect codes are the same
// numbers (connect.Code mirrors google.golang.org/grpc/codes), so both adapters read this table.
var kindCodes = map[errs.Kind]codes.Code{
	errs.KindInternal:           codes.Internal,
	errs.KindInvalidArgument:    codes.InvalidArgument,
	errs.KindNotFound:           codes.NotFound,
	errs.KindAlreadyExists:      codes.AlreadyExists,
	errs.KindFailedPrecondition: codes.FailedPrecondition,
	errs.KindPermissionDenied:   codes.PermissionDenied,
	errs.KindUnauthenticated:    codes.Unauthenticated,
	errs.KindResourceExhausted:  codes.ResourceExhausted,
	errs.KindUnimplemented:      codes.Unimplemented,
	errs.KindOutOfRange:         codes.OutOfRange,
	errs.KindUnavailable:        codes.Unavailable,
	errs.KindAborted:            codes.Aborted,
}

// mapped is the protocol-neutral form of an error on its way to a client: a code, a message that
// is safe to show, and the details to attach.
type mapped struct {
	code    codes.Code
	message string
	details []proto.Message
}

// ToGRPC converts err, as returned by a handler or by any interceptor step, into a gRPC status
// error. Domain errors (*errs.Error) get the code from the kind table, their message, a
// google.rpc.ErrorInfo detail with their reason and metadata, and a google.rpc.BadRequest detail
// when they carry field violations. context.Canceled and context.DeadlineExceeded become CANCELLED
// and DEADLINE_EXCEEDED; an error that already is a gRPC status (or a *connect.Error) keeps its
// code, message and details. Everything else, and every internal domain error, is logged at Error
// level with its cause and reaches the caller only as INTERNAL "internal error". A nil err gives
// nil.
func ToGRPC(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if st, ok := nativeGRPC(err); ok {
		return st.Err()
	}
	m := toMapped(log, err)
	st := status.New(m.code, m.message)
	if len(m.details) > 0 {
		v1 := make([]protoadapt.MessageV1, 0, len(m.details))
		for _, d := range m.details {
			v1 = append(v1, protoadapt.MessageV1Of(d))
		}
		if withDetails, derr := st.WithDetails(v1...); derr == nil {
			st = withDetails
		}
	}
	return st.Err()
}

// ToConnect converts err like ToGRPC does, into a *connect.Error with the same code (connect codes
// equal gRPC codes numerically) and the same details. An error that already is a *connect.Error
// passes through; a gRPC status error keeps its code, message and details.
func ToConnect(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := nativeConnect(err); ok {
		return ce
	}
	m := toMapped(log, err)
	ce := connect.NewError(connect.Code(m.code), errors.New(m.message))
	for _, d := range m.details {
		if detail, derr := connect.NewErrorDetail(d); derr == nil {
			ce.AddDetail(detail)
		}
	}
	return ce
}

// nativeGRPC returns the status of an error that is already a protocol error and needs no
// mapping for gRPC. Domain errors are never native, even if something in their chain is.
func nativeGRPC(err error) (*status.Status, bool) {
	if _, ok := errs.As(err); ok {
		return nil, false
	}
	if isContextError(err) {
		return nil, false
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		st := status.New(codes.Code(ce.Code()), ce.Message())
		for _, d := range ce.Details() {
			v, verr := d.Value()
			if verr != nil {
				continue
			}
			if withDetails, derr := st.WithDetails(protoadapt.MessageV1Of(v)); derr == nil {
				st = withDetails
			}
		}
		return st, true
	}
	// NOTE: status.FromError reports ok only for errors with a GRPCStatus method somewhere in
	// their chain; for a plain error it would invent UNKNOWN with the error text, which must never
	// reach a client, so that case falls through to the internal-error path.
	if st, ok := status.FromError(err); ok {
		return st, true
	}
	return nil, false
}

// nativeConnect returns the *connect.Error form of an error that is already a protocol error.
func nativeConnect(err error) (*connect.Error, bool) {
	if _, ok := errs.As(err); ok {
		return nil, false
	}
	if isContextError(err) {
		return nil, false
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce, true
	}
	if st, ok := status.FromError(err); ok {
		out := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
		for _, d := range st.Proto().GetDetails() {
			v, uerr := d.UnmarshalNew()
			if uerr != nil {
				continue
			}
			if detail, derr := connect.NewErrorDetail(v); derr == nil {
				out.AddDetail(detail)
			}
		}
		return out, true
	}
	return nil, false
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// retryable is what a caller learns of a database error that store.Classify says a retry can get
// past: a conflict with a concurrent transaction (ABORTED) or a database that cannot answer now
// (UNAVAILABLE). The cause, with its SQL, goes only to the log.
var retryable = map[errs.Kind]*errs.Error{
	errs.KindAborted: errs.Aborted("CONCURRENT_CONFLICT",
		"the request conflicted with a concurrent one; retry it"),
	errs.KindUnavailable: errs.Unavailable("DATABASE_UNAVAILABLE",
		"the database is unavailable; retry later"),
}

// toMapped applies the kind table to a domain error, maps context errors and retryable database
// errors (store.Classify), and turns anything else into a logged, opaque internal error.
func toMapped(log *slog.Logger, err error) mapped {
	e, isDomain := errs.As(err)
	if isDomain && e.Kind != errs.KindInternal {
		if code, ok := kindCodes[e.Kind]; ok {
			return domainMapped(code, e)
		}
	}
	// NOTE: an internal error whose cause is the caller's own cancellation or deadline (a query
	// aborted because the client went away, wrapped by the store as errs.Internal) is reported as
	// what it is, not logged as a server fault.
	switch {
	case errors.Is(err, context.Canceled):
		return mapped{code: codes.Canceled, message: "the call was cancelled"}
	case errors.Is(err, context.DeadlineExceeded):
		return mapped{code: codes.DeadlineExceeded, message: "the call's deadline was exceeded"}
	}
	if r, ok := retryable[store.Classify(err)]; ok {
		logRetryable(log, err)
		return domainMapped(kindCodes[r.Kind], r)
	}
	logInternal(log, err)
	return mapped{
		code:    codes.Internal,
		message: internalMessage,
		details: []proto.Message{&errdetails.ErrorInfo{Reason: "INTERNAL", Domain: ErrorDomain}},
	}
}

// domainMapped builds the client-facing form of a non-internal domain error.
func domainMapped(code codes.Code, e *errs.Error) mapped {
	m := mapped{code: code, message: e.Message}
	m.details = append(m.details, &errdetails.ErrorInfo{
		Reason:   e.Reason,
		Domain:   ErrorDomain,
		Metadata: e.Metadata,
	})
	if len(e.Violations) > 0 {
		br := &errdetails.BadRequest{}
		for _, v := range e.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
				Field:       v.Field,
				Description: v.Description,
			})
		}
		m.details = append(m.details, br)
	}
	return m
}

// logInternal records an internal error with everything the caller must not see.
func logInternal(log *slog.Logger, err error) {
	if log == nil {
		log = slog.Default()
	}
	attrs := []slog.Attr{slog.String("error", err.Error())}
	var pe *panicError
	if errors.As(err, &pe) {
		attrs = append(attrs, slog.String("stack", string(pe.stack)))
	}
	log.LogAttrs(context.Background(), slog.LevelError, "internal error", attrs...)
}

// logRetryable records the cause of a database error that reaches the caller as ABORTED or
// UNAVAILABLE. It is a warning: the fault is transient, not a bug, but its rate is worth watching.
func logRetryable(log *slog.Logger, err error) {
	if log == nil {
		log = slog.Default()
	}
	log.LogAttrs(context.Background(), slog.LevelWarn, "retryable database error", slog.String("error", err.Error()))
}

// panicError carries a recovered panic to the error mapping, which logs it with its stack.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }
