package transport_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/transport"
)

// restError is grpc-gateway's JSON error body.
type restError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type            string            `json:"@type"`
		Reason          string            `json:"reason"`
		Domain          string            `json:"domain"`
		Metadata        map[string]string `json:"metadata"`
		FieldViolations []struct {
			Field       string `json:"field"`
			Description string `json:"description"`
		} `json:"fieldViolations"`
	} `json:"details"`
}

func (r restError) reason() string {
	for _, d := range r.Details {
		if d.Type == "type.googleapis.com/google.rpc.ErrorInfo" {
			return d.Reason
		}
	}
	return ""
}

func (r restError) fields() []string {
	var out []string
	for _, d := range r.Details {
		if d.Type == "type.googleapis.com/google.rpc.BadRequest" {
			for _, v := range d.FieldViolations {
				out = append(out, v.Field)
			}
		}
	}
	return out
}

// newGateway serves REST as a node does: through NewGatewayMux and a LocalConn with e's options,
// whose streams go over DialSelf to e's grpc server. The gateway's secret may differ from the
// node's to show what happens when they do not match.
func newGateway(t *testing.T, e *env, secret string) http.Handler {
	t.Helper()
	ctx := t.Context()
	conn, err := transport.DialSelf(ctx, e.grpcAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	local := transport.NewLocalConn(e.opts, conn)
	gatehousev1.RegisterIdentityServiceServer(local, &fakeIdentity{})
	o := e.opts
	o.GatewaySecret = secret
	mux := transport.NewGatewayMux(o)
	if err := gatehousev1.RegisterIdentityServiceHandlerClient(ctx, mux, gatehousev1.NewIdentityServiceClient(local)); err != nil {
		t.Fatal(err)
	}
	return mux
}

func TestGatewayErrors(t *testing.T) {
	e := newEnv(t, gwSecret)
	srv := httptest.NewServer(newGateway(t, e, gwSecret))
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		authz      string
		wantStatus int
		wantCode   int
		wantReason string
		wantFields []string
	}{
		{"invalid input", http.MethodPost, "/v1/users", `{"username":"bad name!"}`, bearer(tokenAdmin), 400, 3, "INVALID_ARGUMENT", []string{"username"}},
		{"anonymous", http.MethodPost, "/v1/users", `{"username":"alice"}`, "", 401, 16, "UNAUTHENTICATED", nil},
		{"malformed header", http.MethodPost, "/v1/users", `{"username":"alice"}`, "Basic eA==", 401, 16, "MALFORMED_AUTHORIZATION", nil},
		{"forbidden", http.MethodPost, "/v1/users", `{"username":"alice"}`, bearer(tokenReader), 403, 7, "PERMISSION_DENIED", nil},
		{"not found", http.MethodGet, "/v1/users/" + missingID, "", bearer(tokenAdmin), 404, 5, "USER_NOT_FOUND", nil},
		{"already exists", http.MethodPost, "/v1/users", `{"username":"taken"}`, bearer(tokenAdmin), 409, 6, "USERNAME_TAKEN", nil},
		{"internal", http.MethodPatch, "/v1/users/" + adminID, `{"displayName":"x"}`, bearer(tokenAdmin), 500, 13, "INTERNAL", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t), tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.authz != "" {
				req.Header.Set("Authorization", tt.authz)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("HTTP status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			var body restError
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if body.Code != tt.wantCode || body.Message == "" {
				t.Errorf("body code = %d message = %q, want code %d and a message", body.Code, body.Message, tt.wantCode)
			}
			if got := body.reason(); got != tt.wantReason {
				t.Errorf("ErrorInfo reason = %q, want %q", got, tt.wantReason)
			}
			if got := body.fields(); strings.Join(got, ",") != strings.Join(tt.wantFields, ",") {
				t.Errorf("BadRequest fields = %q, want %q", got, tt.wantFields)
			}
			if strings.Contains(body.Message, sqlText) || strings.Contains(body.Message, "password_hash") {
				t.Errorf("message %q leaks the cause", body.Message)
			}
		})
	}
}

// TestGatewayClient checks that the gateway passes the HTTP peer's address and user agent, and
// only those, to the service, and that responses use the standard JSON mapping.
func TestGatewayClient(t *testing.T) {
	e := newEnv(t, gwSecret)
	tests := []struct {
		name          string
		gatewaySecret string
		wantIP        string
	}{
		{"gateway with the node's secret", gwSecret, "198.51.100.4"},
		{"gateway with another secret", "not-the-secret", "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := newGateway(t, e, tt.gatewaySecret)
			req := httptest.NewRequestWithContext(testContext(t), http.MethodGet, "/v1/users:lookup?username=alice", nil)
			req.RemoteAddr = "198.51.100.4:43210"
			req.Header.Set("User-Agent", "rest-client/1.0")
			req.Header.Set("Authorization", bearer(tokenReader))
			// Attempts to spoof the address or the gateway.
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("Grpc-Metadata-X-Forwarded-For", "203.0.113.10")
			req.Header.Set("Grpc-Metadata-X-Gatehouse-Gateway", "forged")
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP status = %d: %s", rec.Code, rec.Body)
			}
			var body map[string]map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			user := body["user"]
			if got := user["displayName"]; got != tt.wantIP {
				t.Errorf("client IP = %v, want %s (body %s)", got, tt.wantIP, rec.Body)
			}
			if got := user["id"]; got != "reader" {
				t.Errorf("caller = %v, want reader: the Authorization header was not forwarded", got)
			}
			// Unpopulated fields are emitted, in lowerCamelCase.
			if _, ok := user["hasPassword"]; !ok {
				t.Errorf("body %s lacks hasPassword", rec.Body)
			}
			if tt.gatewaySecret == gwSecret {
				if got := user["email"]; got != "rest-client/1.0" {
					t.Errorf("user agent = %v, want the REST client's", got)
				}
			}
		})
	}
}

func TestDialSelfListenAddress(t *testing.T) {
	e := newEnv(t, gwSecret)
	_, port, _ := strings.Cut(e.grpcAddr, ":")
	conn, err := transport.DialSelf(t.Context(), ":"+port, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if got := conn.CanonicalTarget(); !strings.Contains(got, "127.0.0.1:"+port) {
		t.Errorf("target = %q, want the loopback address", got)
	}
	resp, err := gatehousev1.NewIdentityServiceClient(conn).LookupUser(testContext(t), &gatehousev1.LookupUserRequest{Username: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetUser().GetId(); got != "anonymous" {
		t.Errorf("caller = %q, want anonymous", got)
	}
}

// restCall sends one request to h and decodes the error body, if any.
func restCall(t *testing.T, h http.Handler, method, path, body string) (*httptest.ResponseRecorder, restError) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequestWithContext(testContext(t), method, path, rd)
	req.Header.Set("Authorization", bearer(tokenAdmin))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e restError
	if rec.Code != http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("%s %s: HTTP %d with a body that is not an error: %.300s", method, path, rec.Code, rec.Body)
		}
	}
	return rec, e
}

// TestGatewayRoutingErrors: a method a path does not serve is 405 with an Allow header listing the
// ones it does, and an unknown path 404, both with a typed error body.
func TestGatewayRoutingErrors(t *testing.T) {
	e := newEnv(t, gwSecret)
	gw := newGateway(t, e, gwSecret)
	tests := []struct {
		method, path string
		wantHTTP     int
		wantAllow    string
		wantReason   string
	}{
		{http.MethodPut, "/v1/users", 405, "GET, POST", transport.MethodNotAllowedReason},
		{"TRACE", "/v1/users", 405, "GET, POST", transport.MethodNotAllowedReason},
		{http.MethodOptions, "/v1/users", 405, "GET, POST", transport.MethodNotAllowedReason},
		{http.MethodPost, "/v1/users/" + adminID, 405, "DELETE, GET, PATCH", transport.MethodNotAllowedReason},
		{http.MethodGet, "/v1/users/" + adminID + "/nothing", 404, "", transport.RouteNotFoundReason},
		// A custom method's path with another method: grpc-gateway would match the plain
		// resource's route, its id then ending in ":setPassword" (found by schemathesis).
		{http.MethodGet, "/v1/users/" + adminID + ":setPassword", 405, "POST", transport.MethodNotAllowedReason},
		{http.MethodPatch, "/v1/users/" + adminID + ":setPassword", 405, "POST", transport.MethodNotAllowedReason},
		{http.MethodOptions, "/v1/users/" + adminID + ":setPassword", 405, "POST", transport.MethodNotAllowedReason},
		{http.MethodGet, "/v1/roles/viewer:grant", 405, "POST", transport.MethodNotAllowedReason},
		{http.MethodDelete, "/v1/roles/viewer:revoke", 405, "POST", transport.MethodNotAllowedReason},
		{http.MethodGet, "/v1/users/" + adminID + ":grant", 404, "", transport.RouteNotFoundReason},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec, body := restCall(t, gw, tt.method, tt.path, "")
			if rec.Code != tt.wantHTTP {
				t.Errorf("HTTP %d, want %d", rec.Code, tt.wantHTTP)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
			if body.reason() != tt.wantReason {
				t.Errorf("reason %q, want %q: %s", body.reason(), tt.wantReason, rec.Body)
			}
		})
	}
	// Probing the routes for the Allow header calls nothing.
	if strings.Contains(e.logs.String(), `"msg":"rpc"`) {
		t.Errorf("a probe reached the service: %s", e.logs)
	}
}

// TestGatewayStrictJSON: unknown body fields, query parameters and enum value names are
// INVALID_ARGUMENT naming them by their path in the request; long values are quoted in part.
func TestGatewayStrictJSON(t *testing.T) {
	e := newEnv(t, gwSecret)
	gw := newGateway(t, e, gwSecret)
	tests := []struct {
		name, method, path, body string
		wantReason               string
		wantField                string
	}{
		{"body field", http.MethodPost, "/v1/users", `{"username": "alice", "usrname": "x"}`, transport.UnknownFieldReason, "usrname"},
		{"body field of a mapped body", http.MethodPatch, "/v1/users/" + adminID, `{"dispalyName": "x"}`, transport.UnknownFieldReason, "user.dispalyName"},
		{"query parameter", http.MethodGet, "/v1/users:lookup?username=alice&usrname=x", "", transport.UnknownFieldReason, "usrname"},
		{"nested query parameter", http.MethodGet, "/v1/users/" + adminID + "/roles?consistency.x=1", "", transport.UnknownFieldReason, "consistency.x"},
		{"wrong type", http.MethodPost, "/v1/users", `{"username": 123}`, transport.MalformedReason, "username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, body := restCall(t, gw, tt.method, tt.path, tt.body)
			if rec.Code != http.StatusBadRequest || body.Code != 3 {
				t.Fatalf("HTTP %d code %d, want 400 and INVALID_ARGUMENT: %s", rec.Code, body.Code, rec.Body)
			}
			if body.reason() != tt.wantReason || strings.Join(body.fields(), ",") != tt.wantField {
				t.Errorf("reason %q fields %q, want %q and [%s]: %s", body.reason(), body.fields(), tt.wantReason, tt.wantField, rec.Body)
			}
		})
	}
	if strings.Contains(e.logs.String(), "CreateUser") {
		t.Errorf("a refused request reached the service: %s", e.logs)
	}

	// Known names pass, by JSON or proto name (to the fake, which does not implement
	// GetEffectiveRoles: UNIMPLEMENTED, from the service, past the parsing).
	for path, want := range map[string]int{
		"/v1/users:lookup?username=alice":                                   http.StatusOK,
		"/v1/users/" + adminID + "/roles?consistency.minimizeLatency=true":  http.StatusNotImplemented,
		"/v1/users/" + adminID + "/roles?consistency.minimize_latency=true": http.StatusNotImplemented,
	} {
		if rec, _ := restCall(t, gw, http.MethodGet, path, ""); rec.Code != want {
			t.Errorf("GET %s: HTTP %d, want %d: %s", path, rec.Code, want, rec.Body)
		}
	}

	// A long value is quoted in part, with its length.
	long := strings.Repeat("7", 100_000)
	for _, tt := range []struct{ path, body string }{
		{"/v1/users", `{"username": ` + long + `}`},
		{"/v1/users", `{"` + long + `": 1}`},
		{"/v1/users:lookup?" + long + "=1", ""},
	} {
		method := http.MethodPost
		if tt.body == "" {
			method = http.MethodGet
		}
		rec, body := restCall(t, gw, method, tt.path, tt.body)
		if rec.Code != http.StatusBadRequest || rec.Body.Len() > 1024 || !strings.Contains(body.Message, "(100000 bytes)") {
			t.Errorf("HTTP %d, %d-byte body %.300s: want 400 quoting part of the value and its length", rec.Code, rec.Body.Len(), rec.Body)
		}
	}
}

// TestGatewayOmitsUnsetMessages: unset message fields (create_time here) are absent from REST
// JSON, not null; zero scalars are present.
func TestGatewayOmitsUnsetMessages(t *testing.T) {
	gw := newGateway(t, newEnv(t, gwSecret), gwSecret)
	rec, _ := restCall(t, gw, http.MethodGet, "/v1/users:lookup?username=alice", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	var body struct{ User map[string]json.RawMessage }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if v, ok := body.User["createTime"]; ok {
		t.Errorf("createTime = %s, want it absent", v)
	}
	if string(body.User["disabled"]) != "false" || string(body.User["hasPassword"]) != "false" {
		t.Errorf("user %s: want zero scalars emitted", rec.Body)
	}
}

// TestGatewayAdmitsBeforeParseErrors: a request the gateway cannot parse, from a caller the
// interceptors would turn away, gets their answer (401, or 503 when the session store is down),
// not the parse error, so that an anonymous caller learns nothing about the request's shape (found
// by schemathesis: 400 for a request without the required authorization header). Public methods
// and authenticated callers still get the parse error.
func TestGatewayAdmitsBeforeParseErrors(t *testing.T) {
	e := newEnv(t, gwSecret)
	gw := newGateway(t, e, gwSecret)
	badBody := `{"username": 123}`
	tests := []struct {
		name, method, path, body, authz string
		wantHTTP                        int
		wantReason                      string
	}{
		{"bad body, anonymous", http.MethodPost, "/v1/users", badBody, "", 401, "UNAUTHENTICATED"},
		{"unknown body field, anonymous", http.MethodPost, "/v1/users", `{"usrname": "x"}`, "", 401, "UNAUTHENTICATED"},
		{"bad JSON, anonymous", http.MethodPost, "/v1/users", `{`, "", 401, "UNAUTHENTICATED"},
		{"bad body, unknown token", http.MethodPost, "/v1/users", badBody, bearer("nobody"), 401, "SESSION_NOT_FOUND"},
		{"bad body, malformed header", http.MethodPost, "/v1/users", badBody, "Basic eA==", 401, "MALFORMED_AUTHORIZATION"},
		{"bad body, store down", http.MethodPost, "/v1/users", badBody, bearer(tokenDown), 503, "SESSION_STORE_UNAVAILABLE"},
		{"unknown query parameter, anonymous", http.MethodGet, "/v1/users/" + adminID + "/roles?consistency.x=1", "", "", 401, "UNAUTHENTICATED"},
		{"bad query value, anonymous", http.MethodGet, "/v1/users/" + adminID + "/roles?consistency.minimizeLatency=maybe", "", "", 401, "UNAUTHENTICATED"},
		{"bad body, authenticated", http.MethodPost, "/v1/users", badBody, bearer(tokenReader), 400, transport.MalformedReason},
		{"unknown query parameter, public method", http.MethodGet, "/v1/users:lookup?usrname=x", "", "", 400, transport.UnknownFieldReason},
		{"unknown query parameter, public method, unknown token", http.MethodGet, "/v1/users:lookup?usrname=x", "", bearer("nobody"), 400, transport.UnknownFieldReason},
		{"unknown query parameter, public method, malformed header", http.MethodGet, "/v1/users:lookup?usrname=x", "", "Basic eA==", 401, "MALFORMED_AUTHORIZATION"},
		// A method without a rule is denied to everyone, before authentication, as the
		// interceptors deny it.
		{"bad body, method without a rule, anonymous", http.MethodPost, "/v1/groups", `{"name": 123}`, "", 403, "PERMISSION_DENIED"},
		{"bad body, method without a rule, authenticated", http.MethodPost, "/v1/groups", `{"name": 123}`, bearer(tokenReader), 403, "PERMISSION_DENIED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := httptest.NewRequestWithContext(testContext(t), tt.method, tt.path, body)
			if tt.authz != "" {
				req.Header.Set("Authorization", tt.authz)
			}
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			var got restError
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("HTTP %d with a body that is not an error: %.300s", rec.Code, rec.Body)
			}
			if rec.Code != tt.wantHTTP || got.reason() != tt.wantReason {
				t.Errorf("HTTP %d reason %q, want %d and %q: %s", rec.Code, got.reason(), tt.wantHTTP, tt.wantReason, rec.Body)
			}
		})
	}
	if strings.Contains(e.logs.String(), `"msg":"rpc"`) {
		t.Errorf("a refused request reached the service: %s", e.logs)
	}
}
