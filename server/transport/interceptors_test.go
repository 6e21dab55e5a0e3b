package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// rpcError is the protocol-neutral view of an error a client received.
type rpcError struct {
	code    codes.Code
	message string
	details []proto.Message
}

// inspect reads a grpc status error or a *connect.Error.
func inspect(t *testing.T, err error) rpcError {
	t.Helper()
	if err == nil {
		return rpcError{code: codes.OK}
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		out := rpcError{code: codes.Code(ce.Code()), message: ce.Message()}
		for _, d := range ce.Details() {
			v, derr := d.Value()
			if derr != nil {
				t.Fatalf("connect error detail %s: %v", d.Type(), derr)
			}
			out.details = append(out.details, v)
		}
		return out
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error is neither a grpc status nor a connect error: %T %v", err, err)
	}
	out := rpcError{code: st.Code(), message: st.Message()}
	for _, d := range st.Details() {
		m, ok := d.(proto.Message)
		if !ok {
			t.Fatalf("grpc status detail %T: %v", d, d)
		}
		out.details = append(out.details, m)
	}
	return out
}

func (r rpcError) errorInfo() *errdetails.ErrorInfo {
	for _, d := range r.details {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

func (r rpcError) badRequestFields() []string {
	var fields []string
	for _, d := range r.details {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// withAuth returns ctx carrying an authorization header with value h (none when h is empty).
func withAuth(ctx context.Context, h string) context.Context {
	if h == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", h)
}

func bearer(token string) string { return "Bearer " + token }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestUnaryCalls sends the same calls through every protocol and expects the same status codes and
// details from each.
func TestUnaryCalls(t *testing.T) {
	e := newEnv(t, gwSecret)
	type result struct {
		resp proto.Message
		err  error
	}
	r := func(resp proto.Message, err error) result { return result{resp, err} }

	tests := []struct {
		name       string
		authz      string
		call       func(ctx context.Context, c identityClient) result
		wantCode   codes.Code
		wantReason string            // ErrorInfo reason; "" means no check
		wantMeta   map[string]string // ErrorInfo metadata that must be present
		wantFields []string          // BadRequest field paths, in order
		wantMsg    string            // exact message; "" means no check
		check      func(t *testing.T, resp proto.Message)
	}{
		{
			name:  "anonymous caller of a protected method",
			authz: "",
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.Unauthenticated, wantReason: "UNAUTHENTICATED",
		},
		{
			name:  "anonymous invalid request is unauthenticated, not invalid",
			authz: "",
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "bad name!"}))
			},
			wantCode: codes.Unauthenticated, wantReason: "UNAUTHENTICATED",
		},
		{
			name:  "unknown token",
			authz: bearer(tokenStale),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.Unauthenticated, wantReason: "SESSION_NOT_FOUND",
		},
		{
			name:  "malformed authorization header",
			authz: "Basic YWxpY2U6c2VjcmV0",
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.Unauthenticated, wantReason: "MALFORMED_AUTHORIZATION",
			wantMsg: `the authorization header must be "Bearer <session token>"`,
		},
		{
			name:  "bearer without a token",
			authz: "Bearer ",
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.Unauthenticated, wantReason: "MALFORMED_AUTHORIZATION",
		},
		{
			name:  "authenticated and allowed",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.OK,
			check: func(t *testing.T, resp proto.Message) {
				if got := resp.(*gatehousev1.CreateUserResponse).GetUser().GetUsername(); got != "alice" {
					t.Errorf("username = %q, want alice", got)
				}
			},
		},
		{
			name:  "lower-case bearer scheme",
			authz: "bearer " + tokenAdmin,
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.OK,
		},
		{
			name:  "authenticated but forbidden",
			authz: bearer(tokenReader),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "alice"}))
			},
			wantCode: codes.PermissionDenied, wantReason: "PERMISSION_DENIED",
		},
		{
			name:  "rule sees the request: own user allowed",
			authz: bearer(tokenReader),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.GetUser(ctx, &gatehousev1.GetUserRequest{UserId: readerID}))
			},
			wantCode: codes.OK,
		},
		{
			name:  "rule sees the request: other user forbidden",
			authz: bearer(tokenReader),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.GetUser(ctx, &gatehousev1.GetUserRequest{UserId: adminID}))
			},
			wantCode: codes.PermissionDenied, wantReason: "PERMISSION_DENIED",
		},
		{
			name:  "method without a rule is denied to everyone",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.ListUsers(ctx, &gatehousev1.ListUsersRequest{}))
			},
			wantCode: codes.PermissionDenied, wantReason: "PERMISSION_DENIED",
		},
		{
			name:  "invalid field",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "bad name!"}))
			},
			wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantFields: []string{"username"},
		},
		{
			name:  "several invalid fields",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "bad name!", Password: "short"}))
			},
			wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantFields: []string{"username", "password"},
		},
		{
			name:  "invalid nested field",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.UpdateUser(ctx, &gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: adminID, Email: "not an address"}}))
			},
			wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantFields: []string{"user.email"},
		},
		{
			name:  "validation runs before the rule",
			authz: bearer(tokenReader),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.GetUser(ctx, &gatehousev1.GetUserRequest{UserId: "not-a-uuid"}))
			},
			wantCode: codes.InvalidArgument, wantReason: "INVALID_ARGUMENT", wantFields: []string{"user_id"},
		},
		{
			name:  "domain not found carries reason and metadata",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.GetUser(ctx, &gatehousev1.GetUserRequest{UserId: missingID}))
			},
			wantCode: codes.NotFound, wantReason: "USER_NOT_FOUND",
			wantMeta: map[string]string{"user_id": missingID},
			wantMsg:  "user " + missingID + " does not exist",
		},
		{
			name:  "domain already exists",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.CreateUser(ctx, &gatehousev1.CreateUserRequest{Username: "taken"}))
			},
			wantCode: codes.AlreadyExists, wantReason: "USERNAME_TAKEN",
		},
		{
			name:  "internal error hides its cause",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.UpdateUser(ctx, &gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: adminID}}))
			},
			wantCode: codes.Internal, wantReason: "INTERNAL", wantMsg: "internal error",
		},
		{
			name:  "handler panic becomes internal",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.DeleteUser(ctx, &gatehousev1.DeleteUserRequest{UserId: adminID}))
			},
			wantCode: codes.Internal, wantReason: "INTERNAL", wantMsg: "internal error",
		},
		{
			name:  "public method, anonymous",
			authz: "",
			call: func(ctx context.Context, c identityClient) result {
				return r(c.LookupUser(ctx, &gatehousev1.LookupUserRequest{Username: "alice"}))
			},
			wantCode: codes.OK,
			check:    wantCaller("anonymous"),
		},
		{
			name:  "public method, stale token proceeds as anonymous",
			authz: bearer(tokenStale),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.LookupUser(ctx, &gatehousev1.LookupUserRequest{Username: "alice"}))
			},
			wantCode: codes.OK,
			check:    wantCaller("anonymous"),
		},
		{
			name:  "public method, authenticated caller is known to the handler",
			authz: bearer(tokenReader),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.LookupUser(ctx, &gatehousev1.LookupUserRequest{Username: "alice"}))
			},
			wantCode: codes.OK,
			check:    wantCaller("reader"),
		},
		{
			name:  "public method, session store down is not anonymous",
			authz: bearer(tokenDown),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.LookupUser(ctx, &gatehousev1.LookupUserRequest{Username: "alice"}))
			},
			wantCode: codes.Unavailable, wantReason: "SESSION_STORE_UNAVAILABLE",
		},
		{
			name:  "public method, malformed header",
			authz: "Token abc",
			call: func(ctx context.Context, c identityClient) result {
				return r(c.LookupUser(ctx, &gatehousev1.LookupUserRequest{Username: "alice"}))
			},
			wantCode: codes.Unauthenticated, wantReason: "MALFORMED_AUTHORIZATION",
		},
		{
			name:  "password in the request",
			authz: bearer(tokenAdmin),
			call: func(ctx context.Context, c identityClient) result {
				return r(c.SetPassword(ctx, &gatehousev1.SetPasswordRequest{UserId: adminID, NewPassword: passwordTxt}))
			},
			wantCode: codes.OK,
		},
	}

	for _, cl := range e.clients(t) {
		t.Run(cl.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					ctx := withAuth(testContext(t), tt.authz)
					res := tt.call(ctx, cl.identity)
					got := inspect(t, res.err)
					if got.code != tt.wantCode {
						t.Fatalf("code = %v (%q), want %v", got.code, got.message, tt.wantCode)
					}
					if tt.wantCode == codes.OK {
						if tt.check != nil {
							tt.check(t, res.resp)
						}
						return
					}
					for _, leak := range []string{panicText, sqlText, "password_hash", "panic", "goroutine"} {
						if strings.Contains(got.message, leak) {
							t.Errorf("message %q leaks %q", got.message, leak)
						}
					}
					if tt.wantMsg != "" && got.message != tt.wantMsg {
						t.Errorf("message = %q, want %q", got.message, tt.wantMsg)
					}
					info := got.errorInfo()
					if info == nil {
						t.Fatalf("no ErrorInfo detail in %v", got.details)
					}
					if info.GetDomain() != "gatehouse.dev" {
						t.Errorf("ErrorInfo domain = %q", info.GetDomain())
					}
					if tt.wantReason != "" && info.GetReason() != tt.wantReason {
						t.Errorf("ErrorInfo reason = %q, want %q", info.GetReason(), tt.wantReason)
					}
					for k, v := range tt.wantMeta {
						if info.GetMetadata()[k] != v {
							t.Errorf("ErrorInfo metadata[%q] = %q, want %q", k, info.GetMetadata()[k], v)
						}
					}
					fields := got.badRequestFields()
					if strings.Join(fields, ",") != strings.Join(tt.wantFields, ",") {
						t.Errorf("BadRequest fields = %q, want %q", fields, tt.wantFields)
					}
					if len(tt.wantFields) > 0 && !strings.HasPrefix(got.message, "invalid request: "+tt.wantFields[0]+": ") {
						t.Errorf("message %q does not name the first violation", got.message)
					}
				})
			}
		})
	}

	t.Run("log", func(t *testing.T) {
		logs := e.logs.String()
		// Secrets never reach the log.
		for _, secret := range []string{"Bearer", `"` + tokenAdmin + `"`, tokenReader, tokenStale, tokenDown, passwordTxt, "YWxpY2U6c2VjcmV0"} {
			if strings.Contains(logs, secret) {
				t.Errorf("log contains %q", secret)
			}
		}
		// Internal causes and panics do, with the stack.
		for _, want := range []string{sqlText, panicText, "goroutine"} {
			if !strings.Contains(logs, want) {
				t.Errorf("log lacks %q", want)
			}
		}
		protocols := map[string]bool{}
		var sawUser bool
		for line := range strings.Lines(logs) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if rec["msg"] != "rpc" {
				continue
			}
			if rec["level"] != "INFO" {
				t.Errorf("access log level = %v", rec["level"])
			}
			for _, k := range []string{"protocol", "method", "code", "duration", "client_ip"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("access log line lacks %q: %s", k, line)
				}
			}
			protocols[rec["protocol"].(string)] = true
			if rec["user_id"] == adminID && rec["session_id"] == sessionID &&
				rec["method"] == "/gatehouse.v1.IdentityService/CreateUser" && rec["code"] == "OK" {
				sawUser = true
			}
		}
		for _, p := range []string{"grpc", "connect", "grpcweb"} {
			if !protocols[p] {
				t.Errorf("no access log line with protocol %q (saw %v)", p, protocols)
			}
		}
		if !sawUser {
			t.Error("no access log line names the authenticated user and session")
		}
	})
}

func wantCaller(who string) func(t *testing.T, resp proto.Message) {
	return func(t *testing.T, resp proto.Message) {
		t.Helper()
		if got := resp.(*gatehousev1.LookupUserResponse).GetUser().GetId(); got != who {
			t.Errorf("handler saw caller %q, want %q", got, who)
		}
	}
}

// TestServerStream checks validation, authentication, authorisation, context propagation and
// panic recovery on a server-streaming method, for every protocol.
func TestServerStream(t *testing.T) {
	e := newEnv(t, gwSecret)
	tests := []struct {
		name       string
		authz      string
		req        *gatehousev1.WatchEventsRequest
		wantCode   codes.Code
		wantN      int
		wantFields []string
	}{
		{"anonymous", "", &gatehousev1.WatchEventsRequest{}, codes.Unauthenticated, 0, nil},
		{"unknown token", bearer(tokenStale), &gatehousev1.WatchEventsRequest{}, codes.Unauthenticated, 0, nil},
		{"forbidden", bearer(tokenReader), &gatehousev1.WatchEventsRequest{}, codes.PermissionDenied, 0, nil},
		{"allowed", bearer(tokenAdmin), &gatehousev1.WatchEventsRequest{}, codes.OK, 2, nil},
		{"invalid", bearer(tokenAdmin), &gatehousev1.WatchEventsRequest{UserId: "nope"}, codes.InvalidArgument, 0, []string{"user_id"}},
		{"invalid repeated item", bearer(tokenAdmin), &gatehousev1.WatchEventsRequest{Types: []gatehousev1.EventType{0}}, codes.InvalidArgument, 0, []string{"types[0]"}},
		{"panic", bearer(tokenAdmin), &gatehousev1.WatchEventsRequest{UserId: missingID}, codes.Internal, 0, nil},
	}
	for _, cl := range e.clients(t) {
		t.Run(cl.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					n, err := cl.watch(withAuth(testContext(t), tt.authz), tt.req)
					got := inspect(t, err)
					if got.code != tt.wantCode {
						t.Fatalf("code = %v (%q), want %v", got.code, got.message, tt.wantCode)
					}
					if n != tt.wantN {
						t.Errorf("received %d messages, want %d", n, tt.wantN)
					}
					if strings.Contains(got.message, panicText) {
						t.Errorf("message %q leaks the panic", got.message)
					}
					if fields := got.badRequestFields(); strings.Join(fields, ",") != strings.Join(tt.wantFields, ",") {
						t.Errorf("BadRequest fields = %q, want %q", fields, tt.wantFields)
					}
				})
			}
		})
	}
}

// TestForwardedFor checks that x-forwarded-for sets the client address only on the gRPC port and
// only with the gateway secret.
func TestForwardedFor(t *testing.T) {
	const spoofed = "203.0.113.7"
	tests := []struct {
		name     string
		secret   string // the node's GatewaySecret
		md       []string
		wantGRPC string // client IP the grpc server sees
	}{
		{"no header", gwSecret, nil, "127.0.0.1"},
		{"x-forwarded-for alone", gwSecret, []string{"x-forwarded-for", spoofed}, "127.0.0.1"},
		{"wrong secret", gwSecret, []string{"x-forwarded-for", spoofed, "x-gatehouse-gateway", "guess"}, "127.0.0.1"},
		{"gateway secret", gwSecret, []string{"x-forwarded-for", spoofed + ", 10.0.0.1", "x-gatehouse-gateway", gwSecret}, spoofed},
		{"gateway secret, not an address", gwSecret, []string{"x-forwarded-for", "unknown", "x-gatehouse-gateway", gwSecret}, "127.0.0.1"},
		{"no secret configured", "", []string{"x-forwarded-for", spoofed, "x-gatehouse-gateway", ""}, "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.secret)
			for _, cl := range e.clients(t) {
				t.Run(cl.name, func(t *testing.T) {
					ctx := metadata.AppendToOutgoingContext(testContext(t), tt.md...)
					resp, err := cl.identity.LookupUser(ctx, &gatehousev1.LookupUserRequest{Username: "alice"})
					if err != nil {
						t.Fatal(err)
					}
					want := "127.0.0.1" // connect never trusts forwarding headers
					if cl.name == "grpc" {
						want = tt.wantGRPC
					}
					if got := resp.GetUser().GetDisplayName(); got != want {
						t.Errorf("client IP = %q, want %q", got, want)
					}
					if ua := resp.GetUser().GetEmail(); ua == "" {
						t.Error("handler saw no user agent")
					}
				})
			}
		})
	}
}

// TestConnectStrictJSON: Connect JSON refuses unknown fields and enum value names with the same
// INVALID_ARGUMENT, ErrorInfo and BadRequest as REST, bounds the values its parse errors repeat,
// and leaves the binary codec alone.
func TestConnectStrictJSON(t *testing.T) {
	e := newEnv(t, gwSecret)
	long := strings.Repeat("7", 100_000)
	tests := []struct {
		name, procedure, body string
		wantReason            string
		wantFields            []string
		wantInMessage         string
	}{
		{"unknown field", "IdentityService/CreateUser", `{"username": "alice", "usrname": "x"}`, "UNKNOWN_FIELD", []string{"usrname"}, `"usrname"`},
		{"nested unknown field", "IdentityService/UpdateUser", `{"user": {"id": "` + adminID + `", "dispalyName": "x"}}`, "UNKNOWN_FIELD", []string{"user.dispalyName"}, `"user.dispalyName"`},
		{"long unknown field", "IdentityService/CreateUser", `{"` + long + `": 1}`, "UNKNOWN_FIELD", nil, "(100000 bytes)"},
		{"unknown enum value", "SessionService/WatchEvents", `{"types": ["EVENT_TYPE_BOGUS"]}`, "MALFORMED_REQUEST", []string{"types[0]"}, `"EVENT_TYPE_BOGUS"`},
		{"long malformed value", "IdentityService/CreateUser", `{"username": ` + long + `}`, "MALFORMED_REQUEST", []string{"username"}, "(100000 bytes)"},
		{"value of the wrong type", "IdentityService/CreateUser", `{"username": "alice", "disabled": "yes"}`, "MALFORMED_REQUEST", []string{"disabled"}, `"yes"`},
		{"not JSON", "IdentityService/CreateUser", `{"username": `, "MALFORMED_REQUEST", nil, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			contentType := "application/json"
			body := []byte(tt.body)
			if strings.HasPrefix(tt.procedure, "SessionService/Watch") {
				contentType = "application/connect+json"
				body = envelope(body)
			}
			req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, e.connectURL+"/gatehouse.v1."+tt.procedure, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", contentType)
			req.Header.Set("Authorization", bearer(tokenAdmin))
			resp, err := e.httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if contentType != "application/json" {
				// A streaming response: the error is in the end-of-stream envelope.
				var end struct {
					Error json.RawMessage `json:"error"`
				}
				if len(raw) < 5 || json.Unmarshal(raw[5:], &end) != nil {
					t.Fatalf("not a Connect end of stream: %q", raw)
				}
				raw = end.Error
			}
			got := connectError(t, raw)
			if got.code != codes.InvalidArgument {
				t.Fatalf("code %s (%q), want INVALID_ARGUMENT", got.code, got.message)
			}
			if reason := got.errorInfo().GetReason(); reason != tt.wantReason {
				t.Errorf("reason %q (%q), want %q", reason, got.message, tt.wantReason)
			}
			if tt.wantFields != nil && !slices.Equal(got.badRequestFields(), tt.wantFields) {
				t.Errorf("fields %q, want %q", got.badRequestFields(), tt.wantFields)
			}
			if !strings.Contains(got.message, tt.wantInMessage) || len(got.message) > 512 {
				t.Errorf("message %.300q, want it to contain %s and be short", got.message, tt.wantInMessage)
			}
		})
	}
	if strings.Contains(e.logs.String(), "CreateUser\",\"code\":\"OK") {
		t.Errorf("a refused request reached the handler: %s", e.logs)
	}

	// Known fields, by JSON or proto name, pass; the binary codec passes unknown fields on, as
	// protobuf does.
	for _, body := range []string{`{"username": "alice"}`, `{"display_name": "A", "username": "alice"}`} {
		req, _ := http.NewRequestWithContext(testContext(t), http.MethodPost, e.connectURL+"/gatehouse.v1.IdentityService/CreateUser", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", bearer(tokenAdmin))
		resp, err := e.httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: HTTP %d", body, resp.StatusCode)
		}
	}
	withUnknown := &gatehousev1.CreateUserRequest{Username: "alice"}
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	for _, c := range e.clients(t) {
		if _, err := c.identity.CreateUser(withAuth(testContext(t), bearer(tokenAdmin)), withUnknown); err != nil {
			t.Errorf("%s: binary request with an unknown field: %v", c.name, err)
		}
	}
}

// TestIDsAreCaseInsensitive: an upper-case id reaches the handler and the rules in lower case,
// through every protocol.
func TestIDsAreCaseInsensitive(t *testing.T) {
	e := newEnv(t, gwSecret)
	for _, c := range e.clients(t) {
		t.Run(c.name, func(t *testing.T) {
			// The rule lets a user read itself: the upper-case id is the caller's own.
			resp, err := c.identity.GetUser(withAuth(testContext(t), bearer(tokenReader)), &gatehousev1.GetUserRequest{UserId: strings.ToUpper(readerID)})
			if err != nil {
				t.Fatalf("GetUser of the caller's own id in upper case: %v", err)
			}
			if got := resp.GetUser().GetId(); got != readerID {
				t.Errorf("the handler saw id %q, want %q", got, readerID)
			}
			_, err = c.identity.GetUser(withAuth(testContext(t), bearer(tokenAdmin)), &gatehousev1.GetUserRequest{UserId: strings.ToUpper(missingID)})
			if got := inspect(t, err); got.code != codes.NotFound || got.errorInfo().GetMetadata()["user_id"] != missingID {
				t.Errorf("GetUser of an unknown id in upper case: %v, want NOT_FOUND for %s", err, missingID)
			}
		})
	}
}
