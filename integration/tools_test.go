package integration_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/internal/testnode"
)

// The standard gRPC tools, as an operator would use them against a node: grpcurl and `buf curl`
// through server reflection, and the Kubernetes-style grpc-health-probe. They are built from
// pinned versions by `scripts/clients-tools.sh deps` into build/bin; without them the tests fail
// rather than skip, so that a missing step cannot pass as green.

// toolsBin returns the path of build/bin/name, failing the test when it is missing.
func toolsBin(t *testing.T, name string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "build", "bin", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing (%v); run scripts/clients-tools.sh deps", name, err)
	}
	return path
}

// runTool runs bin with args from a scratch directory and returns its combined output and exit
// code (-1 when it could not run or was killed on the deadline).
func runTool(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = cliEnv()
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), 0
	}
	if exit, ok := errors.AsType[*exec.ExitError](err); ok && ctx.Err() == nil {
		return string(out), exit.ExitCode()
	}
	t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	return "", -1
}

// mustTool is runTool that fails the test unless the tool exits 0.
func mustTool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, code := runTool(t, bin, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit code %d\n%s", filepath.Base(bin), strings.Join(args, " "), code, out)
	}
	return out
}

// effectiveRoles decodes a GetEffectiveRolesResponse printed as JSON and returns its role names.
func effectiveRoles(t *testing.T, out string) []string {
	t.Helper()
	var resp struct{ Roles []struct{ Role string } }
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("the output is not a GetEffectiveRolesResponse: %v\n%s", err, out)
	}
	var roles []string
	for _, r := range resp.Roles {
		roles = append(roles, r.Role)
	}
	return roles
}

// bufCurlError returns the code and the ErrorInfo reason of the error `buf curl` printed: the
// details come as the base64 of the message ("value"; Connect adds it decoded as "debug").
func bufCurlError(out string) (code, reason string) {
	var e struct {
		Code    string
		Details []struct{ Type, Value string }
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		return "", ""
	}
	for _, d := range e.Details {
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		if err != nil {
			raw, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		}
		var info errdetails.ErrorInfo
		if d.Type == "google.rpc.ErrorInfo" && err == nil && proto.Unmarshal(raw, &info) == nil {
			reason = info.GetReason()
		}
	}
	return e.Code, reason
}

var gatehouseServices = []string{"gatehouse.v1.IdentityService", "gatehouse.v1.PolicyService", "gatehouse.v1.SessionService"}

// TestGRPCurl: grpcurl lists the services and describes a method through the gRPC port's
// reflection, and calls one with the bearer token, whose error without the token carries the
// status code and the ErrorInfo reason.
func TestGRPCurl(t *testing.T) {
	grpcurl := toolsBin(t, "grpcurl")
	n := testnode.Start(t, testnode.SQLite)
	admin, err := restLogin(n.HTTPAddr(), "admin", testnode.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	addr := n.GRPCAddr()

	list := mustTool(t, grpcurl, "-plaintext", addr, "list")
	for _, s := range append(gatehouseServices, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection") {
		if !strings.Contains(list, s+"\n") {
			t.Errorf("grpcurl list does not name %s:\n%s", s, list)
		}
	}
	if out := mustTool(t, grpcurl, "-plaintext", addr, "list", "gatehouse.v1.IdentityService"); !strings.Contains(out, "gatehouse.v1.IdentityService.GetEffectiveRoles\n") {
		t.Errorf("grpcurl list gatehouse.v1.IdentityService does not name GetEffectiveRoles:\n%s", out)
	}
	describe := mustTool(t, grpcurl, "-plaintext", addr, "describe", "gatehouse.v1.IdentityService.GetEffectiveRoles")
	if want := "rpc GetEffectiveRoles ( .gatehouse.v1.GetEffectiveRolesRequest ) returns ( .gatehouse.v1.GetEffectiveRolesResponse )"; !strings.Contains(describe, want) {
		t.Errorf("grpcurl describe: want %q in\n%s", want, describe)
	}
	if out := mustTool(t, grpcurl, "-plaintext", addr, "describe", "gatehouse.v1.GetEffectiveRolesRequest"); !strings.Contains(out, "string user_id = 1") {
		t.Errorf("grpcurl describe of the request message:\n%s", out)
	}

	req := `{"user_id": "` + admin.GetUser().GetId() + `"}`
	out := mustTool(t, grpcurl, "-plaintext", "-H", "authorization: Bearer "+admin.GetToken(), "-d", req,
		addr, "gatehouse.v1.IdentityService/GetEffectiveRoles")
	if roles := effectiveRoles(t, out); len(roles) != 1 || roles[0] != "gatehouse.admin" {
		t.Errorf("the administrator's effective roles over grpcurl: %q, want [gatehouse.admin]", roles)
	}

	// grpcurl exits with 64 + the status code: UNAUTHENTICATED (16) is 80.
	out, code := runTool(t, grpcurl, "-plaintext", "-d", req, addr, "gatehouse.v1.IdentityService/GetEffectiveRoles")
	if code != 64+16 || !strings.Contains(out, "Code: Unauthenticated") || !strings.Contains(out, `"reason": "UNAUTHENTICATED"`) {
		t.Errorf("grpcurl without a token: exit code %d, want 80 with the code and the ErrorInfo reason:\n%s", code, out)
	}
}

// TestBufCurl: `buf curl` lists the services through reflection and calls a method with the
// bearer token over gRPC on the gRPC port (HTTP/2 without TLS), and over Connect and gRPC-Web on
// the HTTP port, whose reflection service it reads too.
func TestBufCurl(t *testing.T) {
	buf := toolsBin(t, "buf")
	n := testnode.Start(t, testnode.SQLite)
	admin, err := restLogin(n.HTTPAddr(), "admin", testnode.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	grpcURL, httpURL := "http://"+n.GRPCAddr(), n.BaseURL()
	const method = "/gatehouse.v1.IdentityService/GetEffectiveRoles"
	req := `{"userId": "` + admin.GetUser().GetId() + `"}`
	authz := "Authorization: Bearer " + admin.GetToken()

	for _, tc := range []struct{ name, protocol, base string }{
		{"gRPC on the gRPC port", "grpc", grpcURL},
		{"Connect on the HTTP port", "connect", httpURL},
		{"gRPC-Web on the HTTP port", "grpcweb", httpURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			services := mustTool(t, buf, "curl", "--protocol", tc.protocol, "--http2-prior-knowledge", "--list-services", tc.base)
			for _, s := range gatehouseServices {
				if !strings.Contains(services, s+"\n") {
					t.Errorf("buf curl --list-services does not name %s:\n%s", s, services)
				}
			}
			out := mustTool(t, buf, "curl", "--protocol", tc.protocol, "--http2-prior-knowledge", "-H", authz, "-d", req, tc.base+method)
			if roles := effectiveRoles(t, out); len(roles) != 1 || roles[0] != "gatehouse.admin" {
				t.Errorf("the administrator's effective roles over buf curl: %q, want [gatehouse.admin]", roles)
			}
			out, exit := runTool(t, buf, "curl", "--protocol", tc.protocol, "--http2-prior-knowledge", "-d", req, tc.base+method)
			if code, reason := bufCurlError(out); exit == 0 || code != "unauthenticated" || reason != "UNAUTHENTICATED" {
				t.Errorf("buf curl without a token: exit code %d, code %q, reason %q; want a failure with unauthenticated and UNAUTHENTICATED:\n%s", exit, code, reason, out)
			}
		})
	}
	// Plain HTTP/1.1 works for Connect's unary calls, reflection included.
	out := mustTool(t, buf, "curl", "--protocol", "connect", "-H", authz, "-d", req, httpURL+method)
	if roles := effectiveRoles(t, out); len(roles) != 1 || roles[0] != "gatehouse.admin" {
		t.Errorf("the administrator's effective roles over Connect with HTTP/1.1: %q, want [gatehouse.admin]", roles)
	}
}

// TestGRPCHealthProbe: grpc-health-probe reports SERVING for the node and each service on both
// ports, refuses an unknown service, and fails once the node drains. (Shutdown first marks gRPC
// health NOT_SERVING and then closes the listeners, so a probe from outside finds the port closed;
// server.TestShutdownMarksTheNodeNotReadyFirst sees NOT_SERVING in between.)
func TestGRPCHealthProbe(t *testing.T) {
	probe := toolsBin(t, "grpc-health-probe")
	n := testnode.Start(t, testnode.SQLite)

	for _, addr := range []string{n.GRPCAddr(), n.HTTPAddr()} {
		for _, service := range append([]string{""}, gatehouseServices...) {
			// NOTE: the probe prints its verdict on standard error.
			if out := mustTool(t, probe, "-addr", addr, "-service", service); !strings.Contains(out, "status: SERVING") {
				t.Errorf("grpc-health-probe -addr %s -service %q: %s", addr, service, out)
			}
		}
	}
	// Exit codes: 2 the connection failed, 3 the RPC failed, 4 NOT_SERVING.
	if out, code := runTool(t, probe, "-addr", n.GRPCAddr(), "-service", "gatehouse.v1.NoSuchService"); code != 3 || !strings.Contains(out, "NotFound") {
		t.Errorf("grpc-health-probe of an unknown service: exit code %d, want 3 (NotFound):\n%s", code, out)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	out, code := runTool(t, probe, "-addr", n.GRPCAddr(), "-connect-timeout", "2s")
	if code == 0 || strings.Contains(out, "status: SERVING") {
		t.Errorf("grpc-health-probe of a drained node: exit code %d:\n%s", code, out)
	}
	t.Logf("grpc-health-probe of a drained node: exit code %d: %s", code, out)
}
