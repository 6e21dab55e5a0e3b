package integration_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// Lock-outs: no change may leave the service without an enabled gatehouse.admin, and no lesser
// administrator may lock a greater one out through a session policy.

const (
	mRevokeRole          = gatehousev1.IdentityService_RevokeRole_FullMethodName
	mGrantRole           = gatehousev1.IdentityService_GrantRole_FullMethodName
	mUpdateUser          = gatehousev1.IdentityService_UpdateUser_FullMethodName
	mDeleteUser          = gatehousev1.IdentityService_DeleteUser_FullMethodName
	mRemoveGroupMember   = gatehousev1.IdentityService_RemoveGroupMember_FullMethodName
	mDeleteGroup         = gatehousev1.IdentityService_DeleteGroup_FullMethodName
	mRemoveContainedRole = gatehousev1.IdentityService_RemoveContainedRole_FullMethodName
	mDeleteRole          = gatehousev1.IdentityService_DeleteRole_FullMethodName
	mCreatePolicy        = gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName
	mUpdatePolicy        = gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName
	mDeletePolicy        = gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName
	mTerminateSession    = gatehousev1.SessionService_TerminateSession_FullMethodName
)

func revokeFromUser(role, userID string) *gatehousev1.RevokeRoleRequest {
	return &gatehousev1.RevokeRoleRequest{Role: role, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: userID}}
}

func grantToUser(role, userID string) *gatehousev1.GrantRoleRequest {
	return &gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: userID}}
}

func disableUser(userID string) *gatehousev1.UpdateUserRequest {
	return &gatehousev1.UpdateUserRequest{
		User:       &gatehousev1.User{Id: userID, Disabled: true},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
	}
}

// lastAdminRefused checks that method fails with LAST_ADMIN and writes no event.
func lastAdminRefused(t *testing.T, n *testnode.Node, a *idAdmin, what, method string, req proto.Message) {
	t.Helper()
	mark := lastEventID(t, n)
	err := expectError(t, a.c, method, a.tok, req, codes.FailedPrecondition, "LAST_ADMIN")
	if err != nil && status.Code(err) == codes.FailedPrecondition {
		if evs := eventsAfter(t, n, mark); len(evs) != 0 {
			t.Errorf("%s: refused, yet wrote %d events", what, len(evs))
		}
	}
}

// TestLastAdminCannotBeRemoved: every path that takes gatehouse.admin from its last enabled holder
// is refused with FAILED_PRECONDITION LAST_ADMIN and changes nothing; with another enabled holder
// the same changes pass, and a disabled holder does not count.
func TestLastAdminCannotBeRemoved(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		me := a.userID

		lastAdminRefused(t, n, a, "revoking the last admin's own role", mRevokeRole, revokeFromUser("gatehouse.admin", me))
		lastAdminRefused(t, n, a, "disabling the last admin", mUpdateUser, disableUser(me))
		lastAdminRefused(t, n, a, "deleting the last admin", mDeleteUser, &gatehousev1.DeleteUserRequest{UserId: me})

		// Through a group: the direct grant may go while the group still carries the role.
		root := a.createGroup("root")
		a.grantGroup("gatehouse.admin", root.Id)
		a.addMember(root.Id, me)
		a.do(mRevokeRole, revokeFromUser("gatehouse.admin", me))
		lastAdminRefused(t, n, a, "removing the last admin from the group carrying the role", mRemoveGroupMember,
			&gatehousev1.RemoveGroupMemberRequest{GroupId: root.Id, UserId: me})
		lastAdminRefused(t, n, a, "deleting the group carrying the role", mDeleteGroup, &gatehousev1.DeleteGroupRequest{GroupId: root.Id})
		lastAdminRefused(t, n, a, "revoking the role from the group", mRevokeRole,
			&gatehousev1.RevokeRoleRequest{Role: "gatehouse.admin", Principal: &gatehousev1.RevokeRoleRequest_GroupId{GroupId: root.Id}})

		// Through containment: a custom role containing gatehouse.admin.
		a.createRole("super", "gatehouse.admin")
		a.grantUser("super", me)
		a.do(mRemoveGroupMember, &gatehousev1.RemoveGroupMemberRequest{GroupId: root.Id, UserId: me})
		lastAdminRefused(t, n, a, "removing gatehouse.admin from the role that carries it", mRemoveContainedRole,
			&gatehousev1.RemoveContainedRoleRequest{Role: "super", ContainedRole: "gatehouse.admin"})
		lastAdminRefused(t, n, a, "deleting the role that carries gatehouse.admin", mDeleteRole, &gatehousev1.DeleteRoleRequest{Name: "super"})
		lastAdminRefused(t, n, a, "revoking the role that carries gatehouse.admin", mRevokeRole, revokeFromUser("super", me))

		// The administrator still is one, and acts.
		if got := a.roleNames(me); !slices.Contains(got, "gatehouse.admin") {
			t.Fatalf("after the refused changes the administrator holds %v", got)
		}

		// A disabled second holder does not count; an enabled one does.
		second := a.createUser("second", "second-password")
		a.grantUser("gatehouse.admin", second.Id)
		a.do(mUpdateUser, disableUser(second.Id))
		lastAdminRefused(t, n, a, "revoking the only enabled admin's role while another is disabled", mRevokeRole, revokeFromUser("super", me))
		a.do(mUpdateUser, &gatehousev1.UpdateUserRequest{
			User: &gatehousev1.User{Id: second.Id}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
		})
		a.do(mRevokeRole, revokeFromUser("super", me))
		if got := a.roleNames(me); slices.Contains(got, "gatehouse.admin") {
			t.Errorf("with a second enabled admin, revoking left the first holding %v", got)
		}
	})
}

// roleNames returns the names of a user's effective roles.
func (a *idAdmin) roleNames(userID string) []string {
	var out []string
	for _, r := range a.roles(userID) {
		out = append(out, r.Role)
	}
	return out
}

// TestLastAdminRace: two administrators revoking each other's gatehouse.admin at the same moment,
// on two nodes of one PostgreSQL (and on one SQLite node): at most one of them succeeds, every
// round, and an enabled administrator is left.
func TestLastAdminRace(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n1 := testnode.Start(t, b)
			n2 := n1
			if b == testnode.Postgres {
				n2 = testnode.StartOn(t, n1.Database)
			}
			c1, c2 := testnode.Invoker(dialGRPC(t, n1.GRPCAddr())), testnode.Invoker(dialGRPC(t, n2.GRPCAddr()))
			a := newIDAdmin(t, n1, c1)
			other := a.createUser("other", "other-password")
			a.grantUser("gatehouse.admin", other.Id)
			ids := []string{a.userID, other.Id}
			for round := range 10 {
				toks := []string{
					testnode.Login(t, c1, "admin", testnode.AdminPassword).Token,
					testnode.Login(t, c2, "other", "other-password").Token,
				}
				// Whoever lost the role last round gets it back from whoever kept it.
				for i := range ids {
					if !holdsAdmin(t, n1, ids[i]) {
						testnode.MustCall[gatehousev1.GrantRoleResponse](t, c1, mGrantRole, toks[1-i], grantToUser("gatehouse.admin", ids[i]))
					}
				}
				var wg sync.WaitGroup
				errs := make([]error, 2)
				gate := make(chan struct{})
				for i, c := range []testnode.Invoker{c1, c2} {
					wg.Go(func() {
						<-gate
						_, errs[i] = testnode.Call[gatehousev1.RevokeRoleResponse](context.Background(), c, mRevokeRole, toks[i],
							revokeFromUser("gatehouse.admin", ids[1-i]))
					})
				}
				close(gate)
				wg.Wait()
				ok := 0
				for i, err := range errs {
					switch code := status.Code(err); {
					case err == nil:
						ok++
					case code == codes.FailedPrecondition && testnode.Reason(err) == "LAST_ADMIN", code == codes.PermissionDenied:
					default:
						t.Errorf("round %d, revoke %d: %v", round, i, err)
					}
				}
				held := 0
				for _, id := range ids {
					if holdsAdmin(t, n1, id) {
						held++
					}
				}
				if ok > 1 || held != 2-ok {
					t.Fatalf("round %d: %d revokes passed and %d administrators are left", round, ok, held)
				}
			}
		})
	}
}

// holdsAdmin reads from the database whether a user holds gatehouse.admin.
func holdsAdmin(t *testing.T, n *testnode.Node, userID string) bool {
	t.Helper()
	var c int
	st := n.Store()
	if err := st.DB.QueryRow(st.Rebind("SELECT COUNT(*) FROM effective_roles WHERE user_id = ? AND role = ?"), userID, "gatehouse.admin").Scan(&c); err != nil {
		t.Fatal(err)
	}
	return c > 0
}

// TestPolicyAdminCannotLockOutAdmins: a policy applies to every user it scopes, so a policy admin
// may not create, change or delete a policy that applies to a user holding a built-in role it
// lacks: a user-scoped policy for the administrator, a policy on a gatehouse.* role (held or not),
// on a custom role an administrator holds, or the global policy. It may govern users it outranks;
// gatehouse.admin may govern everyone.
func TestPolicyAdminCannotLockOutAdmins(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		_, polly := smUser(a, "polly", "gatehouse.policy_admin")
		plain := a.createUser("plain", "plain-password")
		a.createRole("staff")
		a.grantUser("staff", a.userID)
		a.createRole("temps")
		a.grantUser("temps", plain.Id)
		one := int32(1)
		lockout := func(scope *gatehousev1.PolicyScope) *gatehousev1.CreateSessionPolicyRequest {
			return &gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
				Scope: scope, MaxSessions: &one, OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW,
				AbsoluteTimeout: durationpb.New(1e9),
			}}
		}
		userScope := func(id string) *gatehousev1.PolicyScope {
			return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: id}}
		}
		roleScope := func(r string) *gatehousev1.PolicyScope {
			return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: r}}
		}
		global := &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}}

		for _, tc := range []struct {
			what  string
			scope *gatehousev1.PolicyScope
		}{
			{"a policy for the administrator", userScope(a.userID)},
			{"a policy on gatehouse.admin", roleScope("gatehouse.admin")},
			{"a policy on gatehouse.auditor, which nobody holds", roleScope("gatehouse.auditor")},
			{"a policy on a custom role the administrator holds", roleScope("staff")},
			{"the global policy", global},
		} {
			mark := lastEventID(t, n)
			_, err := testnode.Call[gatehousev1.CreateSessionPolicyResponse](context.Background(), c, mCreatePolicy, polly, lockout(tc.scope))
			polWantErr(t, "policy admin creating "+tc.what, err, codes.PermissionDenied, "CALLER_LACKS_ROLE", "")
			if evs := eventsAfter(t, n, mark); err != nil && len(evs) != 0 {
				t.Errorf("policy admin creating %s: refused, yet wrote %d events", tc.what, len(evs))
			}
		}

		benign := func(scope *gatehousev1.PolicyScope) *gatehousev1.CreateSessionPolicyRequest {
			return &gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{Scope: scope, IdleTimeout: durationpb.New(3600e9)}}
		}
		// It governs the users it outranks, and its own role.
		for _, scope := range []*gatehousev1.PolicyScope{userScope(plain.Id), roleScope("temps"), roleScope("gatehouse.policy_admin")} {
			testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, mCreatePolicy, polly, benign(scope))
		}

		// The administrator's own policy, set by the administrator, is out of its reach too.
		mine := mutate[gatehousev1.CreateSessionPolicyResponse](a, mCreatePolicy, benign(userScope(a.userID))).Policy
		_, err := testnode.Call[gatehousev1.UpdateSessionPolicyResponse](context.Background(), c, mUpdatePolicy, polly,
			&gatehousev1.UpdateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{Id: mine.Id, IdleTimeout: durationpb.New(1e9)},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"idle_timeout"}}})
		polWantErr(t, "policy admin updating the administrator's policy", err, codes.PermissionDenied, "CALLER_LACKS_ROLE", "")
		_, err = testnode.Call[gatehousev1.DeleteSessionPolicyResponse](context.Background(), c, mDeletePolicy, polly,
			&gatehousev1.DeleteSessionPolicyRequest{PolicyId: mine.Id})
		polWantErr(t, "policy admin deleting the administrator's policy", err, codes.PermissionDenied, "CALLER_LACKS_ROLE", "")

		// gatehouse.admin governs everyone.
		a.do(mDeletePolicy, &gatehousev1.DeleteSessionPolicyRequest{PolicyId: mine.Id})
		mutate[gatehousev1.CreateSessionPolicyResponse](a, mCreatePolicy, benign(global))
	})
}

// TestDeleteUserRacingTerminate: deleting a user while its sessions are being ended, on two nodes
// of one PostgreSQL, never deadlocks: every call either succeeds or says the user or session is
// gone, 25 rounds over.
func TestDeleteUserRacingTerminate(t *testing.T) {
	t.Parallel()
	n1 := testnode.Start(t, testnode.Postgres)
	n2 := testnode.StartOn(t, n1.Database)
	c1, c2 := testnode.Invoker(dialGRPC(t, n1.GRPCAddr())), testnode.Invoker(dialGRPC(t, n2.GRPCAddr()))
	a := newIDAdmin(t, n1, c1)
	for round := range 25 {
		name := fmt.Sprintf("doomed%d", round)
		u := a.createUser(name, name+"-password")
		var sessions []*gatehousev1.CreateSessionResponse
		for range 3 {
			sessions = append(sessions, testnode.Login(t, c2, name, name+"-password"))
		}
		var wg sync.WaitGroup
		gate := make(chan struct{})
		errs := make([]error, len(sessions)+1)
		wg.Go(func() {
			<-gate
			_, errs[0] = testnode.Call[gatehousev1.DeleteUserResponse](context.Background(), c1, mDeleteUser, a.tok, &gatehousev1.DeleteUserRequest{UserId: u.Id})
		})
		for i, s := range sessions {
			wg.Go(func() {
				<-gate
				_, errs[i+1] = testnode.Call[gatehousev1.TerminateSessionResponse](context.Background(), c2, mTerminateSession, a.tok,
					&gatehousev1.TerminateSessionRequest{SessionId: s.Session.Id})
			})
		}
		close(gate)
		wg.Wait()
		if errs[0] != nil {
			t.Errorf("round %d: DeleteUser: %v", round, errs[0])
		}
		for i, err := range errs[1:] {
			if err != nil && status.Code(err) != codes.NotFound {
				t.Errorf("round %d: TerminateSession %d: %v", round, i, err)
			}
		}
	}
}
