package transport_test

import (
	"encoding/json"
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

// newGateway serves REST through NewGatewayMux and DialSelf to e's grpc server. The gateway's
// secret may differ from the node's to show what happens when they do not match.
func newGateway(t *testing.T, e *env, secret string) http.Handler {
	t.Helper()
	ctx := t.Context()
	conn, err := transport.DialSelf(ctx, e.grpcAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	o := e.opts
	o.GatewaySecret = secret
	mux := transport.NewGatewayMux(o)
	if err := gatehousev1.RegisterIdentityServiceHandler(ctx, mux, conn); err != nil {
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
