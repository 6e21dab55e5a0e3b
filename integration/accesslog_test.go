package integration_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// accessLines returns the access log lines ("rpc") of method in a JSON log, as their levels.
func accessLines(t *testing.T, log, method string) []string {
	t.Helper()
	var levels []string
	for line := range strings.SplitSeq(strings.TrimSpace(log), "\n") {
		var rec struct{ Level, Msg, Method string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %v\n%s", err, line)
		}
		if rec.Msg == "rpc" && rec.Method == method {
			levels = append(levels, rec.Level)
		}
	}
	return levels
}

// TestAccessLogOfHotMethods: a successful ValidateSession or Check writes no access line at Info
// (one at Debug), while a failed one, and every other call, still writes one at Info, through
// every front.
func TestAccessLogOfHotMethods(t *testing.T) {
	validate := gatehousev1.SessionService_ValidateSession_FullMethodName
	check := gatehousev1.PolicyService_Check_FullMethodName
	login := gatehousev1.SessionService_CreateSession_FullMethodName
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		for _, p := range testnode.Protocols {
			t.Run(level.String()+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				logs := &lockedBuffer{}
				n := testnode.StartWith(t, server.Config{
					Database: testnode.DatabaseURL(t, testnode.SQLite),
					Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level})),
				})
				c := n.Client(p)
				token := testnode.AdminToken(t, c)
				ctx := context.Background()
				testnode.MustCall[gatehousev1.ValidateSessionResponse](t, c, validate, "", &gatehousev1.ValidateSessionRequest{Token: token})
				testnode.MustCall[gatehousev1.CheckResponse](t, c, check, token, &gatehousev1.CheckRequest{
					Subject:     &gatehousev1.CheckRequest_Token{Token: token},
					Requirement: &gatehousev1.CheckRequest_Role{Role: "gatehouse.admin"},
				})
				_, err := testnode.Call[gatehousev1.ValidateSessionResponse](ctx, c, validate, "", &gatehousev1.ValidateSessionRequest{Token: "ghs_" + strings.Repeat("A", 43)})
				if status.Code(err) != codes.Unauthenticated {
					t.Fatalf("ValidateSession of an unknown token: %v, want UNAUTHENTICATED", err)
				}

				out := logs.String()
				okLevel := []string{"DEBUG"}
				if level == slog.LevelInfo {
					okLevel = nil
				}
				// The unknown token's line, and at Debug the successful call's line before it.
				if got, want := accessLines(t, out, validate), append(okLevel, "INFO"); strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("ValidateSession access lines at levels %q, want %q", got, want)
				}
				if got := accessLines(t, out, check); strings.Join(got, " ") != strings.Join(okLevel, " ") {
					t.Errorf("Check access lines at levels %q, want %q", got, okLevel)
				}
				if got := accessLines(t, out, login); strings.Join(got, " ") != "INFO" {
					t.Errorf("CreateSession access lines at levels %q, want one at INFO", got)
				}
			})
		}
	}
}
