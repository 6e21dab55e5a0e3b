package integration_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// TestEventFilters: ListEvents (on every backend and front) and WatchEvents return only the events
// of the types and the user asked for, in log order.
func TestEventFilters(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		admin := testnode.AdminToken(t, c)
		g := n.Client(testnode.GRPC)

		// A WatchEvents stream of alice's SESSION_CREATED and SESSION_TERMINATED events, after the
		// users were created (a consistency token is a cursor of the log).
		conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+admin), liveWait)
		defer cancel()
		users := map[string]string{}
		var after string
		for _, name := range []string{"alice", "bob"} {
			created := testnode.MustCall[gatehousev1.CreateUserResponse](t, g, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
				&gatehousev1.CreateUserRequest{Username: name, Password: name + "-password"})
			users[name], after = created.User.Id, created.ConsistencyToken
		}
		sessionTypes := []gatehousev1.EventType{gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED}
		stream, err := gatehousev1.NewSessionServiceClient(conn).WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: after, Types: sessionTypes, UserId: users["alice"]})
		if err != nil {
			t.Fatal(err)
		}

		// Each user logs in and out; the administrator makes a role, which is neither type.
		for _, name := range []string{"bob", "alice"} {
			s := testnode.Login(t, g, name, name+"-password")
			testnode.MustCall[gatehousev1.LogoutResponse](t, g, gatehousev1.SessionService_Logout_FullMethodName, s.Token, &gatehousev1.LogoutRequest{})
			testnode.MustCall[gatehousev1.CreateRoleResponse](t, g, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: "role_after_" + name})
		}
		want := []gatehousev1.EventType{gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED}

		list := testnode.MustCall[gatehousev1.ListEventsResponse](t, c, gatehousev1.SessionService_ListEvents_FullMethodName, admin,
			&gatehousev1.ListEventsRequest{Types: sessionTypes, UserId: users["alice"], PageSize: 100})
		var got []gatehousev1.EventType
		for _, ev := range list.Events {
			if ev.UserId != users["alice"] {
				t.Errorf("ListEvents for alice returned an event of user %s", ev.UserId)
			}
			got = append(got, ev.Type)
		}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("ListEvents of alice's session events = %v, want %v", got, want)
		}
		roles := testnode.MustCall[gatehousev1.ListEventsResponse](t, c, gatehousev1.SessionService_ListEvents_FullMethodName, admin,
			&gatehousev1.ListEventsRequest{Types: []gatehousev1.EventType{gatehousev1.EventType_EVENT_TYPE_ROLE_CREATED}, PageSize: 100})
		if len(roles.Events) != 2 || roles.Events[0].GetRoleCreated().GetRole().GetName() != "role_after_bob" ||
			roles.Events[1].GetRoleCreated().GetRole().GetName() != "role_after_alice" {
			t.Errorf("ListEvents of ROLE_CREATED = %d events (first %v), want role_after_bob then role_after_alice", len(roles.Events), roles.Events)
		}

		for i, w := range want {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("WatchEvents, event %d: %v", i, err)
			}
			if m.Event.Type != w || m.Event.UserId != users["alice"] {
				t.Fatalf("WatchEvents, event %d: %v of user %s, want %v of alice", i, m.Event.Type, m.Event.UserId, w)
			}
		}
	})
}
