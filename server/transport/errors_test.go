package transport_test

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/transport"
)

// TestErrorMapping checks the kind table and the non-domain cases through both adapters, which
// must agree on the code and the details.
func TestErrorMapping(t *testing.T) {
	cause := errors.New("pq: connection refused to 10.0.0.5")
	withDetails, err := status.New(codes.FailedPrecondition, "from grpc").
		WithDetails(&errdetails.ErrorInfo{Reason: "UPSTREAM", Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		err        error
		wantCode   codes.Code
		wantMsg    string
		wantReason string
		wantLogged bool
	}{
		{"nil", nil, codes.OK, "", "", false},
		{"invalid argument", errs.InvalidArgument("BAD", "bad"), codes.InvalidArgument, "bad", "BAD", false},
		{"not found", errs.NotFound("NF", "nf"), codes.NotFound, "nf", "NF", false},
		{"already exists", errs.AlreadyExists("AE", "ae"), codes.AlreadyExists, "ae", "AE", false},
		{"failed precondition", errs.FailedPrecondition("FP", "fp"), codes.FailedPrecondition, "fp", "FP", false},
		{"permission denied", errs.PermissionDenied("PD", "pd"), codes.PermissionDenied, "pd", "PD", false},
		{"unauthenticated", errs.Unauthenticated("UA", "ua"), codes.Unauthenticated, "ua", "UA", false},
		{"resource exhausted", errs.ResourceExhausted("RE", "re"), codes.ResourceExhausted, "re", "RE", false},
		{"unimplemented", errs.Unimplemented("later"), codes.Unimplemented, "later", "UNIMPLEMENTED", false},
		{"out of range", errs.OutOfRange("OOR", "oor"), codes.OutOfRange, "oor", "OOR", false},
		{"unavailable", errs.Unavailable("UN", "un"), codes.Unavailable, "un", "UN", false},
		{"aborted", errs.Aborted("AB", "ab"), codes.Aborted, "ab", "AB", false},
		{"internal", errs.Internal(cause), codes.Internal, "internal error", "INTERNAL", true},
		{"wrapped domain", fmt.Errorf("store: %w", errs.NotFound("NF", "nf")), codes.NotFound, "nf", "NF", false},
		{"unknown kind", &errs.Error{Kind: errs.Kind(99), Reason: "X", Message: "secret detail"}, codes.Internal, "internal error", "INTERNAL", true},
		{"plain error", cause, codes.Internal, "internal error", "INTERNAL", true},
		{"canceled", context.Canceled, codes.Canceled, "", "", false},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", "", false},
		{"internal caused by cancel", errs.Internal(context.Canceled), codes.Canceled, "", "", false},
		{"grpc status", withDetails.Err(), codes.FailedPrecondition, "from grpc", "UPSTREAM", false},
		{"connect error", connect.NewError(connect.CodeAborted, errors.New("from connect")), codes.Aborted, "from connect", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, adapter := range []struct {
				name string
				fn   func(*slog.Logger, error) error
			}{{"grpc", transport.ToGRPC}, {"connect", transport.ToConnect}} {
				t.Run(adapter.name, func(t *testing.T) {
					var logs bytes.Buffer
					out := adapter.fn(slog.New(slog.NewTextHandler(&logs, nil)), tt.err)
					if tt.err == nil {
						if out != nil {
							t.Fatalf("got %v for nil", out)
						}
						return
					}
					if adapter.name == "connect" {
						var ce *connect.Error
						if !errors.As(out, &ce) {
							t.Fatalf("ToConnect gave %T", out)
						}
					}
					got := inspect(t, out)
					if got.code != tt.wantCode {
						t.Errorf("code = %v, want %v", got.code, tt.wantCode)
					}
					if tt.wantMsg != "" && got.message != tt.wantMsg {
						t.Errorf("message = %q, want %q", got.message, tt.wantMsg)
					}
					if strings.Contains(got.message, "pq:") || strings.Contains(got.message, "secret detail") {
						t.Errorf("message %q leaks the cause", got.message)
					}
					reason := ""
					if info := got.errorInfo(); info != nil {
						reason = info.GetReason()
					}
					if reason != tt.wantReason {
						t.Errorf("ErrorInfo reason = %q, want %q", reason, tt.wantReason)
					}
					logged := strings.Contains(logs.String(), "level=ERROR")
					if logged != tt.wantLogged {
						t.Errorf("logged = %v, want %v: %s", logged, tt.wantLogged, logs.String())
					}
					if tt.wantLogged && tt.name != "unknown kind" && !strings.Contains(logs.String(), cause.Error()) {
						t.Errorf("log lacks the cause: %s", logs.String())
					}
				})
			}
		})
	}
}

func TestConnectErrorPassesThrough(t *testing.T) {
	in := connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))
	if out := transport.ToConnect(nil, in); out != in {
		t.Errorf("ToConnect(%v) = %v, want the same error", in, out)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name       string
		msg        *gatehousev1.CreateUserRequest
		wantFields []string
		wantMsg    string
	}{
		{"valid", &gatehousev1.CreateUserRequest{Username: "alice"}, nil, ""},
		{"one violation", &gatehousev1.CreateUserRequest{Username: "bad name!"}, []string{"username"},
			"invalid request: username: does not match regex pattern `^[A-Za-z0-9_.@-]{1,64}$`"},
		{"two violations", &gatehousev1.CreateUserRequest{Username: "ok", Email: "nope", Password: "short"}, []string{"email", "password"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := transport.Validate(tt.msg)
			if tt.wantFields == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			e, ok := errs.As(err)
			if !ok || e.Kind != errs.KindInvalidArgument || e.Reason != "INVALID_ARGUMENT" {
				t.Fatalf("Validate = %#v, want an INVALID_ARGUMENT domain error", err)
			}
			var fields []string
			for _, v := range e.Violations {
				if v.Description == "" {
					t.Errorf("violation of %s has no description", v.Field)
				}
				fields = append(fields, v.Field)
			}
			if strings.Join(fields, ",") != strings.Join(tt.wantFields, ",") {
				t.Errorf("fields = %q, want %q", fields, tt.wantFields)
			}
			if tt.wantMsg != "" && e.Message != tt.wantMsg {
				t.Errorf("message = %q, want %q", e.Message, tt.wantMsg)
			}
		})
	}
	if err := transport.Validate(nil); err != nil {
		t.Errorf("Validate(nil) = %v", err)
	}
}

// TestRetryableDatabaseErrors checks that database errors a retry can get past reach the caller as
// ABORTED or UNAVAILABLE through both adapters, with a message free of SQL, and that their cause
// goes to the log. Other database errors stay INTERNAL. (server/store tests store.Classify with
// errors that real databases return.)
func TestRetryableDatabaseErrors(t *testing.T) {
	const query = "UPDATE sessions SET active = false WHERE id IN ($1)"
	pqErr := func(code, msg string) error {
		return fmt.Errorf("committing: %w (query %s)", &pq.Error{Code: pqerror.Code(code), Message: msg, Severity: "ERROR"}, query)
	}
	tests := []struct {
		name       string
		err        error
		wantCode   codes.Code
		wantReason string
	}{
		{"deadlock", errs.Internal(pqErr("40P01", "deadlock detected")), codes.Aborted, "CONCURRENT_CONFLICT"},
		{"serialization failure", pqErr("40001", "could not serialize access"), codes.Aborted, "CONCURRENT_CONFLICT"},
		{"lock timeout", pqErr("55P03", "canceling statement due to lock timeout"), codes.Aborted, "CONCURRENT_CONFLICT"},
		{"admin shutdown", pqErr("57P01", "terminating connection due to administrator command"), codes.Unavailable, "DATABASE_UNAVAILABLE"},
		{"cannot connect now", pqErr("57P03", "the database system is starting up"), codes.Unavailable, "DATABASE_UNAVAILABLE"},
		{"connection exception", pqErr("08006", "connection failure"), codes.Unavailable, "DATABASE_UNAVAILABLE"},
		{"bad connection", fmt.Errorf("%s: %w", query, driver.ErrBadConn), codes.Unavailable, "DATABASE_UNAVAILABLE"},
		{"connection refused", errs.Internal(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), codes.Unavailable, "DATABASE_UNAVAILABLE"},
		{"connection done", fmt.Errorf("%s: %w", query, sql.ErrConnDone), codes.Unavailable, "DATABASE_UNAVAILABLE"},
		{"unique violation", pqErr("23505", "duplicate key value"), codes.Internal, "INTERNAL"},
		{"syntax error", pqErr("42601", "syntax error"), codes.Internal, "INTERNAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, adapter := range []struct {
				name string
				fn   func(*slog.Logger, error) error
			}{{"grpc", transport.ToGRPC}, {"connect", transport.ToConnect}} {
				t.Run(adapter.name, func(t *testing.T) {
					var logs bytes.Buffer
					got := inspect(t, adapter.fn(slog.New(slog.NewTextHandler(&logs, nil)), tt.err))
					if got.code != tt.wantCode {
						t.Errorf("code = %v, want %v", got.code, tt.wantCode)
					}
					if reason := got.errorInfo().GetReason(); reason != tt.wantReason {
						t.Errorf("reason = %q, want %q", reason, tt.wantReason)
					}
					for _, leak := range []string{"UPDATE", "sessions", "pq:", "deadlock", "syscall", "connect"} {
						if strings.Contains(got.message, leak) {
							t.Errorf("message %q leaks %q", got.message, leak)
						}
					}
					if !strings.Contains(logs.String(), query) && !strings.Contains(logs.String(), "refused") {
						t.Errorf("the log lacks the cause: %s", logs.String())
					}
				})
			}
		})
	}
}
