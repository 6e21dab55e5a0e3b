package integration_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/events"
)

// TestConsistencyTokens: every read that takes a Consistency honours a real token, and refuses a
// token from the future (a forged position past the log's head) and one of another database with
// INVALID_ARGUMENT and a reason that says which, on every backend and front.
func TestConsistencyTokens(t *testing.T) {
	other := testnode.Start(t, testnode.SQLite)
	og := other.Client(testnode.GRPC)
	foreign := testnode.MustCall[gatehousev1.CreateRoleResponse](t, og, gatehousev1.IdentityService_CreateRole_FullMethodName,
		testnode.AdminToken(t, og), &gatehousev1.CreateRoleRequest{Name: "elsewhere"}).ConsistencyToken

	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		login := testnode.Login(t, c, "admin", testnode.AdminPassword)
		admin := login.Token
		real := testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
			&gatehousev1.CreateRoleRequest{Name: "here"}).ConsistencyToken
		pos, err := events.ParseCursor(real)
		if err != nil {
			t.Fatalf("a consistency token is not a cursor: %v", err)
		}
		// NOTE: a position past the head: on PostgreSQL a transaction not started yet (a token
		// is judged by its transaction's visibility), on SQLite an id not given yet.
		pos.ID += 1_000_000
		if pos.Xid != 0 {
			pos.Xid += 1_000_000
		}
		future := pos.Cursor()

		reads := []struct {
			name, method string
			req          func(*gatehousev1.Consistency) proto.Message
			resp         proto.Message
		}{
			{"ValidateSession", gatehousev1.SessionService_ValidateSession_FullMethodName, func(cn *gatehousev1.Consistency) proto.Message {
				return &gatehousev1.ValidateSessionRequest{Token: admin, Consistency: cn}
			}, &gatehousev1.ValidateSessionResponse{}},
			{"Check", gatehousev1.PolicyService_Check_FullMethodName, func(cn *gatehousev1.Consistency) proto.Message {
				return &gatehousev1.CheckRequest{Subject: &gatehousev1.CheckRequest_Token{Token: admin},
					Requirement: &gatehousev1.CheckRequest_Role{Role: "gatehouse.admin"}, Consistency: cn}
			}, &gatehousev1.CheckResponse{}},
			{"GetEffectiveRoles", gatehousev1.IdentityService_GetEffectiveRoles_FullMethodName, func(cn *gatehousev1.Consistency) proto.Message {
				return &gatehousev1.GetEffectiveRolesRequest{UserId: login.User.Id, Consistency: cn}
			}, &gatehousev1.GetEffectiveRolesResponse{}},
			{"ResolveSessionPolicy", gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, func(cn *gatehousev1.Consistency) proto.Message {
				return &gatehousev1.ResolveSessionPolicyRequest{UserId: login.User.Id, Consistency: cn}
			}, &gatehousev1.ResolveSessionPolicyResponse{}},
		}
		fresh := func(tok string) *gatehousev1.Consistency {
			return &gatehousev1.Consistency{Requirement: &gatehousev1.Consistency_AtLeastAsFresh{AtLeastAsFresh: tok}}
		}
		for _, r := range reads {
			for _, tc := range []struct {
				what   string
				cn     *gatehousev1.Consistency
				code   codes.Code
				reason string
			}{
				{"minimize_latency", &gatehousev1.Consistency{Requirement: &gatehousev1.Consistency_MinimizeLatency{MinimizeLatency: true}}, codes.OK, ""},
				{"fully_consistent", &gatehousev1.Consistency{Requirement: &gatehousev1.Consistency_FullyConsistent{FullyConsistent: true}}, codes.OK, ""},
				{"this node's token", fresh(real), codes.OK, ""},
				{"a token from the future", fresh(future), codes.InvalidArgument, "UNKNOWN_CONSISTENCY_TOKEN"},
				{"another database's token", fresh(foreign), codes.InvalidArgument, "FOREIGN_CURSOR"},
				{"not a token", fresh("not-a-token"), codes.InvalidArgument, "INVALID_CONSISTENCY_TOKEN"},
			} {
				err := c.Invoke(context.Background(), r.method, admin, r.req(tc.cn), r.resp)
				if status.Code(err) != tc.code || (tc.reason != "" && testnode.Reason(err) != tc.reason) {
					t.Errorf("%s with %s: %v (reason %q), want %v %s", r.name, tc.what, err, testnode.Reason(err), tc.code, tc.reason)
				}
			}
		}
	})
}
