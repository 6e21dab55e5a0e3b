package integration_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// TestWalkthrough is the README's walkthrough: log in as admin, create a user, a group and two
// roles (one containing the other), grant a role to the group, add the user, and read the user's
// effective roles with their provenance.
func TestWalkthrough(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {

		admin := testnode.AdminToken(t, c)

		alice := testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
			&gatehousev1.CreateUserRequest{Username: "alice", Email: "alice@example.com", Password: "alice-password"}).User
		ops := testnode.MustCall[gatehousev1.CreateGroupResponse](t, c, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
			&gatehousev1.CreateGroupRequest{Name: "ops", Description: "Operations"}).Group
		testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
			&gatehousev1.CreateRoleRequest{Name: "viewer"})
		lead := testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
			&gatehousev1.CreateRoleRequest{Name: "ops_lead", Contains: []string{"viewer"}}).Role
		if !slices.Equal(lead.Contains, []string{"viewer"}) {
			t.Fatalf("ops_lead contains %v, want [viewer]", lead.Contains)
		}
		testnode.MustCall[gatehousev1.GrantRoleResponse](t, c, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
			&gatehousev1.GrantRoleRequest{Role: "ops_lead", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: ops.Id}})
		added := testnode.MustCall[gatehousev1.AddGroupMemberResponse](t, c, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
			&gatehousev1.AddGroupMemberRequest{GroupId: ops.Id, UserId: alice.Id})
		if added.ConsistencyToken == "" {
			t.Error("AddGroupMember returned no consistency token")
		}

		got := testnode.MustCall[gatehousev1.GetEffectiveRolesResponse](t, c, gatehousev1.IdentityService_GetEffectiveRoles_FullMethodName, admin,
			&gatehousev1.GetEffectiveRolesRequest{UserId: alice.Id, Consistency: &gatehousev1.Consistency{
				Requirement: &gatehousev1.Consistency_AtLeastAsFresh{AtLeastAsFresh: added.ConsistencyToken},
			}})
		want := &gatehousev1.GetEffectiveRolesResponse{Roles: []*gatehousev1.EffectiveRole{
			{Role: "ops_lead", Sources: []*gatehousev1.RoleSource{{Source: &gatehousev1.RoleSource_GroupId{GroupId: ops.Id}}}},
			{Role: "viewer", Sources: []*gatehousev1.RoleSource{{Source: &gatehousev1.RoleSource_ContainedInRole{ContainedInRole: "ops_lead"}}}},
		}}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Fatalf("effective roles (-want +got):\n%s", diff)
		}

		// Alice's own session carries the roles, and she may read her own effective roles.
		login := testnode.Login(t, c, "alice", "alice-password")
		if !slices.Equal(login.Roles, []string{"ops_lead", "viewer"}) {
			t.Fatalf("alice's session roles = %v", login.Roles)
		}
		self := testnode.MustCall[gatehousev1.GetEffectiveRolesResponse](t, c, gatehousev1.IdentityService_GetEffectiveRoles_FullMethodName, login.Token,
			&gatehousev1.GetEffectiveRolesRequest{UserId: alice.Id})
		if !proto.Equal(self, got) {
			t.Fatalf("alice reading her own roles got %v", self)
		}
	})
}
