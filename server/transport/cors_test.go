package transport_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/server/transport"
)

// TestCORS checks that preflights and calls from an allowed origin get the headers a Connect or
// gRPC-Web client in a browser needs, and that other origins, or a node without origins, get none.
func TestCORS(t *testing.T) {
	const allowed = "http://app.example:5173"
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Grpc-Status", "0")
		w.WriteHeader(http.StatusOK)
	})
	preflight := func(origin string) *http.Request {
		r := httptest.NewRequest(http.MethodOptions, "/gatehouse.v1.SessionService/WatchSession", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", http.MethodPost)
		r.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type,x-grpc-web,x-user-agent")
		return r
	}
	call := func(origin string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/gatehouse.v1.SessionService/ValidateSession", strings.NewReader("{}"))
		r.Header.Set("Origin", origin)
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	tests := []struct {
		name    string
		origins []string
		req     *http.Request
		// wantOrigin is the expected Access-Control-Allow-Origin; "" means no CORS headers at all.
		wantOrigin string
		wantHeader map[string][]string // header -> values it must contain (case-insensitively)
	}{
		{
			name: "preflight from an allowed origin", origins: []string{allowed}, req: preflight(allowed), wantOrigin: allowed,
			wantHeader: map[string][]string{
				"Access-Control-Allow-Methods": {"POST"},
				"Access-Control-Allow-Headers": {"authorization", "connect-protocol-version", "content-type", "x-grpc-web"},
				"Access-Control-Max-Age":       {"7200"},
			},
		},
		{
			name: "call from an allowed origin", origins: []string{allowed}, req: call(allowed), wantOrigin: allowed,
			wantHeader: map[string][]string{
				"Access-Control-Expose-Headers": {"grpc-status", "grpc-message", "grpc-status-details-bin"},
			},
		},
		{name: "preflight from an unlisted origin", origins: []string{allowed}, req: preflight("http://evil.example")},
		{name: "call from an unlisted origin", origins: []string{allowed}, req: call("http://app.example:5174")},
		{name: "no origins configured: preflight", req: preflight(allowed)},
		{name: "no origins configured: call", req: call(allowed)},
		{name: "wildcard host", origins: []string{"https://*.example.com"}, req: preflight("https://app.example.com"), wantOrigin: "https://app.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw, err := transport.NewCORS(tt.origins)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			mw(next).ServeHTTP(rec, tt.req)
			h := rec.Result().Header
			if got := h.Get("Access-Control-Allow-Origin"); got != tt.wantOrigin {
				t.Fatalf("Access-Control-Allow-Origin = %q, want %q", got, tt.wantOrigin)
			}
			if tt.wantOrigin == "" {
				for name := range h {
					if strings.HasPrefix(strings.ToLower(name), "access-control-") {
						t.Errorf("unexpected CORS header %s: %q", name, h.Values(name))
					}
				}
			}
			for name, wants := range tt.wantHeader {
				got := strings.ToLower(strings.Join(h.Values(name), ","))
				for _, want := range wants {
					if !strings.Contains(got, strings.ToLower(want)) {
						t.Errorf("%s = %q, want it to contain %q", name, got, want)
					}
				}
			}
		})
	}
}

// TestCORSOrigins checks that origins that could never match a browser's Origin header are refused.
func TestCORSOrigins(t *testing.T) {
	for _, o := range []string{"", "app.example.com", "https://app.example.com/", "https://app.example.com/path",
		"ftp://app.example.com", "https://*.*.example.com", "https://user@app.example.com", "https://app.example.com?x"} {
		if _, err := transport.NewCORS([]string{o}); err == nil {
			t.Errorf("NewCORS(%q) succeeded; want an error", o)
		}
	}
	for _, o := range []string{"*", "https://app.example.com", "http://127.0.0.1:5173", "https://*.example.com", "http://[::1]:8080"} {
		if _, err := transport.NewCORS([]string{o}); err != nil {
			t.Errorf("NewCORS(%q): %v", o, err)
		}
	}
}
