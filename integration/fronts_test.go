package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// TestReflectionAndHealth lists the services through gRPC server reflection (as grpcurl does) and
// checks grpc.health.v1.
func TestReflectionAndHealth(t *testing.T) {
	n := testnode.Start(t, testnode.SQLite)
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"gatehouse.v1.IdentityService", "gatehouse.v1.SessionService", "gatehouse.v1.PolicyService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	for _, svc := range []string{"", "gatehouse.v1.IdentityService"} {
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, %v", svc, h, err)
		}
	}
}

// TestHTTPEndpoints checks /healthz, /readyz and /openapi.json.
func TestHTTPEndpoints(t *testing.T) {
	n := testnode.Start(t, testnode.SQLite)
	hc := testnode.HTTPClient()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := hc.Get(n.BaseURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s = %d", path, resp.StatusCode)
		}
	}
	resp, err := hc.Get(n.BaseURL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Swagger string `json:"swagger"`
		Paths   map[string]map[string]struct {
			Security *[]map[string][]string `json:"security"`
		} `json:"paths"`
		Info struct {
			Title, Version string
		} `json:"info"`
		SecurityDefinitions map[string]struct {
			Type, In, Name string
		} `json:"securityDefinitions"`
		Security []map[string][]string `json:"security"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/users", "/v1/sessions", "/v1/roles/{role}:grant", "/v1/policies"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	if doc.Swagger != "2.0" {
		t.Errorf("swagger = %q", doc.Swagger)
	}
	for _, p := range []string{"/v1/sessions", "/v1/sessions:validate"} {
		if sec := doc.Paths[p]["post"].Security; sec == nil || len(*sec) != 0 {
			t.Errorf("openapi.json: POST %s needs no token, but its security is %v", p, sec)
		}
	}
	if sec := doc.Paths["/v1/users"]["post"].Security; sec != nil {
		t.Errorf("openapi.json: POST /v1/users overrides the bearer requirement with %v", *sec)
	}
	if doc.Info.Title != "Gatehouse API" || doc.Info.Version != "v1" {
		t.Errorf("openapi.json info = %+v, want the Gatehouse API, version v1", doc.Info)
	}
	if b := doc.SecurityDefinitions["bearer"]; b.Type != "apiKey" || b.In != "header" || b.Name != "Authorization" || len(doc.Security) != 1 {
		t.Errorf("openapi.json declares security %+v / %v, want the bearer token in the Authorization header", doc.SecurityDefinitions, doc.Security)
	}
}

// TestMetrics checks that /metrics counts calls by protocol, method and status code, with the
// node's own REST gateway counted as REST rather than as the gRPC calls it makes.
func TestMetrics(t *testing.T) {
	n := testnode.Start(t, testnode.SQLite)
	for _, p := range testnode.Protocols {
		testnode.Login(t, n.Client(p), "admin", testnode.AdminPassword)
		if _, err := testnode.Call[gatehousev1.CreateSessionResponse](t.Context(), n.Client(p), gatehousev1.SessionService_CreateSession_FullMethodName, "",
			&gatehousev1.CreateSessionRequest{
				Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: "admin", Password: "wrong"}},
				Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
			}); err == nil {
			t.Fatalf("%s: a wrong password logged in", p)
		}
	}
	resp, err := testnode.HTTPClient().Get(n.BaseURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics = %d: %s", resp.StatusCode, body)
	}
	for _, p := range []string{"grpc", "connect", "rest"} {
		for _, code := range []string{"OK", "Unauthenticated"} {
			want := `gatehouse_rpc_calls_total{code="` + code + `",method="/gatehouse.v1.SessionService/CreateSession",protocol="` + p + `"} 1`
			if !bytes.Contains(body, []byte(want+"\n")) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	}
	for _, want := range []string{"gatehouse_rpc_duration_seconds_bucket{", "go_goroutines ", "go_sql_open_connections{"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, secret := range []string{testnode.AdminPassword, "ghs_"} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
}

// TestConnectJSONMatchesREST sends the same read as a raw Connect JSON call and as the REST call,
// and checks that both answer the same message.
func TestConnectJSONMatchesREST(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			n := testnode.Start(t, b)
			c := n.Client(testnode.GRPC)
			admin := testnode.AdminToken(t, c)
			adminUser := testnode.Login(t, c, "admin", testnode.AdminPassword).User
			hc := testnode.HTTPClient()

			body, _ := json.Marshal(map[string]string{"userId": adminUser.Id})
			req, _ := http.NewRequest(http.MethodPost, n.BaseURL()+"/gatehouse.v1.IdentityService/GetEffectiveRoles", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+admin)
			viaConnect := &gatehousev1.GetEffectiveRolesResponse{}
			decode(t, hc, req, viaConnect)

			req, _ = http.NewRequest(http.MethodGet, n.BaseURL()+"/v1/users/"+adminUser.Id+"/roles", nil)
			req.Header.Set("Authorization", "Bearer "+admin)
			viaREST := &gatehousev1.GetEffectiveRolesResponse{}
			decode(t, hc, req, viaREST)

			if len(viaREST.Roles) == 0 || !proto.Equal(viaConnect, viaREST) {
				t.Fatalf("Connect answered %v\nREST answered %v", viaConnect, viaREST)
			}
		})
	}
}

func decode(t *testing.T, hc *http.Client, req *http.Request, into proto.Message) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	if err := protojson.Unmarshal(raw, into); err != nil {
		t.Fatal(err)
	}
}

// TestGRPCWeb logs in and validates the session over gRPC-Web.
func TestGRPCWeb(t *testing.T) {
	n := testnode.Start(t, testnode.SQLite)
	client := gatehousev1connect.NewSessionServiceClient(testnode.HTTPClient(), n.BaseURL(), connect.WithGRPCWeb())
	ctx := context.Background()
	created, err := client.CreateSession(ctx, &gatehousev1.CreateSessionRequest{
		Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: "admin", Password: testnode.AdminPassword}},
		Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.ValidateSession(ctx, &gatehousev1.ValidateSessionRequest{Token: created.Token})
	if err != nil || v.Session.Id != created.Session.Id {
		t.Fatalf("ValidateSession over gRPC-Web = %v, %v", v, err)
	}
}
