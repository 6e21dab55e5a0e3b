package transport_test

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/transport"
)

// TestLocalConn: a unary call over the gateway's in-process connection goes through the same
// interceptor as the gRPC port (authentication, validation, the access log, which records it as a
// REST call from the address in x-forwarded-for when the gateway's secret is present), is
// refused as too large before the handler on the port's limit, and a stream goes over the
// connection to the port, its request held to the same limit.
func TestLocalConn(t *testing.T) {
	e := newEnv(t, gwSecret)
	conn, err := transport.DialSelf(t.Context(), e.grpcAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	o := e.opts
	o.MaxRequestBytes = 100
	local := transport.NewLocalConn(o, conn)
	gatehousev1.RegisterIdentityServiceServer(local, &fakeIdentity{})
	identities := gatehousev1.NewIdentityServiceClient(local)
	asGateway := func(h string) metadata.MD {
		return metadata.Pairs("authorization", h, transport.GatewayHeader, gwSecret, "x-forwarded-for", "203.0.113.9")
	}

	_, err = identities.CreateUser(metadata.NewOutgoingContext(testContext(t), metadata.Pairs()), &gatehousev1.CreateUserRequest{Username: "alice"})
	if got := inspect(t, err); got.code != codes.Unauthenticated {
		t.Errorf("anonymous: %s (%v), want UNAUTHENTICATED", got.code, err)
	}
	_, err = identities.CreateUser(withAuth(testContext(t), bearer(tokenAdmin)), &gatehousev1.CreateUserRequest{Username: "bad name!"})
	if got := inspect(t, err); got.code != codes.InvalidArgument {
		t.Errorf("invalid username: %s (%v), want INVALID_ARGUMENT", got.code, err)
	}
	resp, err := identities.CreateUser(metadata.NewOutgoingContext(testContext(t), asGateway(bearer(tokenAdmin))), &gatehousev1.CreateUserRequest{Username: "alice"})
	if err != nil || resp.GetUser().GetUsername() != "alice" {
		t.Fatalf("CreateUser: %v, %v", resp, err)
	}
	var logged struct {
		Protocol string `json:"protocol"`
		ClientIP string `json:"client_ip"`
	}
	for line := range strings.Lines(e.logs.String()) {
		if strings.Contains(line, "CreateUser") && strings.Contains(line, `"code":"OK"`) {
			if err := json.Unmarshal([]byte(line), &logged); err != nil {
				t.Fatal(err)
			}
		}
	}
	if logged.Protocol != "rest" || logged.ClientIP != "203.0.113.9" {
		t.Errorf("access log of the gateway's call: protocol %q, client_ip %q; logs:\n%s", logged.Protocol, logged.ClientIP, e.logs)
	}

	before := strings.Count(e.logs.String(), "CreateUser")
	_, err = identities.CreateUser(withAuth(testContext(t), bearer(tokenAdmin)), &gatehousev1.CreateUserRequest{Username: strings.Repeat("a", 200)})
	got := inspect(t, err)
	if got.code != codes.ResourceExhausted || got.errorInfo().GetReason() != transport.RequestTooLargeReason {
		t.Errorf("too large: %s %q (%v), want RESOURCE_EXHAUSTED %s", got.code, got.errorInfo().GetReason(), err, transport.RequestTooLargeReason)
	}
	if after := strings.Count(e.logs.String(), "CreateUser"); after != before {
		t.Errorf("a request over the limit reached the interceptor: %s", e.logs)
	}

	err = local.Invoke(testContext(t), "/gatehouse.v1.IdentityService/NoSuchMethod", &gatehousev1.GetUserRequest{}, &gatehousev1.GetUserResponse{})
	if got := inspect(t, err); got.code != codes.Unimplemented {
		t.Errorf("unknown method: %s (%v), want UNIMPLEMENTED", got.code, err)
	}

	_, err = gatehousev1.NewSessionServiceClient(local).WatchEvents(withAuth(testContext(t), bearer(tokenAdmin)),
		&gatehousev1.WatchEventsRequest{After: strings.Repeat("a", 200)})
	if got := inspect(t, err); got.code != codes.ResourceExhausted || got.errorInfo().GetReason() != transport.RequestTooLargeReason {
		t.Errorf("a stream's request over the limit: %s %q (%v), want RESOURCE_EXHAUSTED %s", got.code, got.errorInfo().GetReason(), err, transport.RequestTooLargeReason)
	}
	stream, err := gatehousev1.NewSessionServiceClient(local).WatchEvents(withAuth(testContext(t), bearer(tokenAdmin)), &gatehousev1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	received := 0
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("a stream over the connection to the port: %v", err)
		}
		received++
	}
	if received != 2 {
		t.Errorf("the stream received %d events from the port's fake, want 2", received)
	}
}
