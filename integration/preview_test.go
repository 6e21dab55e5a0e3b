package integration_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/google/go-cmp/cmp"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/auth"
)

// impacted is a mutating response that reports its ChangeImpact.
type impacted interface {
	proto.Message
	GetImpact() *gatehousev1.ChangeImpact
	GetConsistencyToken() string
}

// dbState is a fingerprint of everything a change of the role graph or of a policy can write: the
// event log, the graph, the materialised roles, the policies and the sessions with their absolute
// expiries.
//
// NOTE: idle expiries are left out: a node writes its sessions' activity back off the request path
// (every 250 ms), so they may move between two reads whatever a preview does. The tests' policies
// set absolute timeouts, which only a policy or role change moves.
func dbState(t *testing.T, n *testnode.Node) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM events",
		"SELECT user_id, role, source_kind, source_ref FROM effective_roles ORDER BY user_id, role, source_kind, source_ref",
		"SELECT group_id, user_id FROM group_members ORDER BY group_id, user_id",
		"SELECT role, COALESCE(user_id, ''), COALESCE(group_id, '') FROM role_grants ORDER BY 1, 2, 3",
		"SELECT role, contained_role FROM role_containments ORDER BY role, contained_role",
		"SELECT name FROM roles ORDER BY name",
		"SELECT id FROM groups ORDER BY id",
		"SELECT id, scope_kind, scope_ref, COALESCE(idle_timeout_ns, -1), COALESCE(absolute_timeout_ns, -1), on_role_change, update_time FROM session_policies ORDER BY id",
		"SELECT id, active, termination_reason, absolute_expire_time FROM sessions ORDER BY id",
	} {
		rows, err := n.Store().DB.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Close(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		b.WriteString("--\n")
	}
	return b.String()
}

// previewer drives one node as the administrator: each change is previewed, checked to have changed
// nothing, then made for real, and the two outcomes compared.
type previewer struct {
	t   *testing.T
	n   *testnode.Node
	tok string
}

// call invokes method with validate_only set to preview on a clone of req.
func (p *previewer) call(c testnode.Invoker, method string, req proto.Message, preview bool) (impacted, error) {
	req = proto.Clone(req)
	fd := req.ProtoReflect().Descriptor().Fields().ByName("validate_only")
	if fd == nil {
		p.t.Fatalf("%s: the request has no validate_only", method)
	}
	req.ProtoReflect().Set(fd, protoreflect.ValueOfBool(preview))
	resp, err := respFor(method)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := c.Invoke(context.Background(), method, p.tok, req, resp); err != nil {
		return nil, err
	}
	return resp.(impacted), nil
}

// previewThenApply previews the change, checks that the preview wrote nothing, makes the change
// through c, and checks that both report the same impact or fail alike. It returns the impact (nil
// when the change failed) and the error.
func (p *previewer) previewThenApply(c testnode.Invoker, what, method string, req proto.Message) (*gatehousev1.ChangeImpact, error) {
	p.t.Helper()
	before := dbState(p.t, p.n)
	pre, perr := p.call(c, method, req, true)
	if after := dbState(p.t, p.n); after != before {
		p.t.Fatalf("%s: the preview changed the database:\n%s", what, cmp.Diff(before, after))
	}
	if perr == nil && pre.GetConsistencyToken() != "" {
		p.t.Errorf("%s: the preview returned consistency token %q, want none", what, pre.GetConsistencyToken())
	}
	real, rerr := p.call(c, method, req, false)
	switch {
	case perr != nil || rerr != nil:
		if status.Code(perr) != status.Code(rerr) || testnode.Reason(perr) != testnode.Reason(rerr) {
			p.t.Fatalf("%s: the preview answered %v (reason %q) but the change %v (reason %q)",
				what, perr, testnode.Reason(perr), rerr, testnode.Reason(rerr))
		}
		if after := dbState(p.t, p.n); after != before {
			p.t.Fatalf("%s: the failed change %v wrote:\n%s", what, rerr, cmp.Diff(before, after))
		}
		return nil, rerr
	case real.GetImpact() == nil:
		p.t.Fatalf("%s: the change reported no impact", what)
	}
	if diff := cmp.Diff(pre.GetImpact(), real.GetImpact(), protocmp.Transform()); diff != "" {
		p.t.Fatalf("%s: the preview and the change disagree (-preview +change):\n%s", what, diff)
	}
	return real.GetImpact(), nil
}

// wantImpact checks an impact.
func wantImpact(t *testing.T, what string, got, want *gatehousev1.ChangeImpact) {
	t.Helper()
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("%s: impact (-want +got):\n%s", what, diff)
	}
}

func userImpact(id string, added, removed []string) *gatehousev1.UserImpact {
	return &gatehousev1.UserImpact{UserId: id, Added: added, Removed: removed}
}

// byID orders users by id, as ChangeImpact lists them.
func byID(users ...*gatehousev1.UserImpact) []*gatehousev1.UserImpact {
	slices.SortFunc(users, func(a, b *gatehousev1.UserImpact) int { return strings.Compare(a.UserId, b.UserId) })
	return users
}

func TestPreviewReportsTheImpactAndChangesNothing(t *testing.T) {
	forEachGRPCAndREST(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		p := &previewer{t: t, n: n, tok: a.tok}
		alice := a.createUser("alice", "alice-password-1")
		bob := a.createUser("bob", "bob-password-1")
		ops := a.createGroup("ops")
		a.createRole("reader")
		a.createRole("deployer", "reader")
		a.createRole("payroll")
		a.addMember(ops.Id, alice.Id)
		a.addMember(ops.Id, bob.Id)
		testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
				Scope:        &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: "payroll"}},
				OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE,
			}})
		a.grantUser(auth.RoleImpersonator, bob.Id)
		aliceTok := testnode.Login(t, c, "alice", "alice-password-1").Token
		bobToks := []string{testnode.Login(t, c, "bob", "bob-password-1").Token, testnode.Login(t, c, "bob", "bob-password-1").Token}

		// A grant to the group: both members gain deployer and reader, their three sessions carry
		// the new roles.
		grantOps := &gatehousev1.GrantRoleRequest{Role: "deployer", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: ops.Id}}
		pre, err := p.call(c, gatehousev1.IdentityService_GrantRole_FullMethodName, grantOps, true)
		if err != nil {
			t.Fatalf("previewing a grant: %v", err)
		}
		want := &gatehousev1.ChangeImpact{
			UsersAffected:     2,
			Users:             byID(userImpact(alice.Id, []string{"deployer", "reader"}, nil), userImpact(bob.Id, []string{"deployer", "reader"}, nil)),
			SessionsRefreshed: 3,
		}
		wantImpact(t, "previewing a grant to a group", pre.GetImpact(), want)
		a.wantRoles("alice after the preview", alice.Id)
		if v := mustValidate(t, c, "alice after the preview", aliceTok); slices.Contains(v.Roles, "deployer") {
			t.Errorf("alice's session carries deployer after a preview: %v", v.Roles)
		}
		real := mutate[gatehousev1.GrantRoleResponse](a, gatehousev1.IdentityService_GrantRole_FullMethodName, grantOps)
		wantImpact(t, "granting to a group", real.Impact, want)
		if v := mustValidate(t, c, "alice after the grant", aliceTok); !slices.Contains(v.Roles, "deployer") {
			t.Errorf("alice's session lacks deployer after the grant: %v", v.Roles)
		}

		// A re-authenticate role: the preview says bob's two sessions end, with the impersonation
		// of alice opened from one of them, and they do not.
		imp, err := smTryCreate(c, bobToks[0], impReq("alice", "support ticket"))
		if err != nil {
			t.Fatalf("bob impersonating alice: %v", err)
		}
		grantPayroll := &gatehousev1.GrantRoleRequest{Role: "payroll", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: bob.Id}}
		mark := lastEventID(t, n)
		impact, err := p.previewThenApply(c, "granting payroll", gatehousev1.IdentityService_GrantRole_FullMethodName, grantPayroll)
		if err != nil {
			t.Fatalf("granting payroll: %v", err)
		}
		wantImpact(t, "granting payroll", impact, &gatehousev1.ChangeImpact{
			UsersAffected: 1,
			Users:         []*gatehousev1.UserImpact{userImpact(bob.Id, []string{"payroll"}, nil)},
			SessionsEnded: 3,
			EndReason:     gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE,
		})
		for _, tok := range bobToks {
			wantEnded(t, c, "bob after the grant of payroll", tok, gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE)
		}
		wantEnded(t, c, "bob's impersonation of alice after the grant of payroll", imp.Token, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)
		if got := len(ofType(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED)); got != 3 {
			t.Errorf("the grant of payroll logged %d SESSION_TERMINATED events, want 3 (and the preview none)", got)
		}

		// A policy change: no roles change, alice's one live session gets the new idle timeout.
		createPolicy := &gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
			Scope:           &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: "reader"}},
			AbsoluteTimeout: durationpb.New(5 * time.Minute),
		}}
		impact, err = p.previewThenApply(c, "creating a policy", gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, createPolicy)
		if err != nil {
			t.Fatalf("creating a policy: %v", err)
		}
		wantImpact(t, "creating a policy", impact, &gatehousev1.ChangeImpact{SessionsRefreshed: 1})
		policies := read[gatehousev1.ListSessionPoliciesResponse](a, gatehousev1.PolicyService_ListSessionPolicies_FullMethodName,
			&gatehousev1.ListSessionPoliciesRequest{}).Policies
		var readerPolicy string
		for _, pol := range policies {
			if pol.GetScope().GetRole() == "reader" {
				readerPolicy = pol.Id
			}
		}
		impact, err = p.previewThenApply(c, "updating a policy", gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName,
			&gatehousev1.UpdateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{Id: readerPolicy, AbsoluteTimeout: durationpb.New(7 * time.Minute)}})
		if err != nil {
			t.Fatalf("updating a policy: %v", err)
		}
		wantImpact(t, "updating a policy", impact, &gatehousev1.ChangeImpact{SessionsRefreshed: 1})
		impact, err = p.previewThenApply(c, "deleting a policy", gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName,
			&gatehousev1.DeleteSessionPolicyRequest{PolicyId: readerPolicy})
		if err != nil {
			t.Fatalf("deleting a policy: %v", err)
		}
		wantImpact(t, "deleting a policy", impact, &gatehousev1.ChangeImpact{SessionsRefreshed: 1})

		// Deleting the group: both members lose what it carried; alice's session carries that.
		impact, err = p.previewThenApply(c, "deleting a group", gatehousev1.IdentityService_DeleteGroup_FullMethodName,
			&gatehousev1.DeleteGroupRequest{GroupId: ops.Id})
		if err != nil {
			t.Fatalf("deleting a group: %v", err)
		}
		wantImpact(t, "deleting a group", impact, &gatehousev1.ChangeImpact{
			UsersAffected:     2,
			Users:             byID(userImpact(alice.Id, nil, []string{"deployer", "reader"}), userImpact(bob.Id, nil, []string{"deployer", "reader"})),
			SessionsRefreshed: 1,
		})
		// A change that changes nothing reports an empty impact.
		impact, err = p.previewThenApply(c, "adding a containment nobody holds", gatehousev1.IdentityService_AddContainedRole_FullMethodName,
			&gatehousev1.AddContainedRoleRequest{Role: "deployer", ContainedRole: "payroll"})
		if err != nil {
			t.Fatalf("adding a containment: %v", err)
		}
		wantImpact(t, "adding a containment nobody holds", impact, &gatehousev1.ChangeImpact{})
	})
}

func TestPreviewOfAnInvalidChangeFailsAsTheChange(t *testing.T) {
	forEachGRPCAndREST(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		p := &previewer{t: t, n: n, tok: a.tok}
		bob := a.createUser("bob", "bob-password-1")
		ops := a.createGroup("ops")
		a.createRole("reader")
		a.createRole("deployer", "reader")
		ida := a.createUser("ida", "ida-password-1")
		a.grantUser(auth.RoleIdentityAdmin, ida.Id)
		pa := a.createUser("pa", "pa-password-1")
		a.grantUser(auth.RolePolicyAdmin, pa.Id)
		idaTok := testnode.Login(t, c, "ida", "ida-password-1").Token
		paTok := testnode.Login(t, c, "pa", "pa-password-1").Token
		bobTok := testnode.Login(t, c, "bob", "bob-password-1").Token
		for _, tc := range []struct {
			name   string
			token  string
			method string
			req    proto.Message
			code   codes.Code
			reason string
		}{
			{"revoking the last administrator", a.tok, gatehousev1.IdentityService_RevokeRole_FullMethodName,
				&gatehousev1.RevokeRoleRequest{Role: auth.RoleAdmin, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: a.userID}},
				codes.FailedPrecondition, "LAST_ADMIN"},
			{"deleting a built-in role", a.tok, gatehousev1.IdentityService_DeleteRole_FullMethodName,
				&gatehousev1.DeleteRoleRequest{Name: auth.RoleAuditor}, codes.FailedPrecondition, "BUILT_IN_ROLE"},
			{"a containment cycle", a.tok, gatehousev1.IdentityService_AddContainedRole_FullMethodName,
				&gatehousev1.AddContainedRoleRequest{Role: "reader", ContainedRole: "deployer"}, codes.FailedPrecondition, "ROLE_CYCLE"},
			{"an unknown role", a.tok, gatehousev1.IdentityService_GrantRole_FullMethodName,
				&gatehousev1.GrantRoleRequest{Role: "nosuch", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: bob.Id}},
				codes.NotFound, "ROLE_NOT_FOUND"},
			{"a missing membership", a.tok, gatehousev1.IdentityService_RemoveGroupMember_FullMethodName,
				&gatehousev1.RemoveGroupMemberRequest{GroupId: ops.Id, UserId: bob.Id}, codes.NotFound, "MEMBERSHIP_NOT_FOUND"},
			{"a missing containment", a.tok, gatehousev1.IdentityService_RemoveContainedRole_FullMethodName,
				&gatehousev1.RemoveContainedRoleRequest{Role: "reader", ContainedRole: "deployer"}, codes.NotFound, "CONTAINMENT_NOT_FOUND"},
			{"an unknown group", a.tok, gatehousev1.IdentityService_DeleteGroup_FullMethodName,
				&gatehousev1.DeleteGroupRequest{GroupId: "00000000-0000-4000-8000-000000000000"}, codes.NotFound, "GROUP_NOT_FOUND"},
			{"an unknown policy", a.tok, gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName,
				&gatehousev1.DeleteSessionPolicyRequest{PolicyId: "00000000-0000-4000-8000-000000000000"}, codes.NotFound, "POLICY_NOT_FOUND"},
			{"an identity admin granting a built-in role", idaTok, gatehousev1.IdentityService_GrantRole_FullMethodName,
				&gatehousev1.GrantRoleRequest{Role: auth.RoleAuditor, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: bob.Id}},
				codes.PermissionDenied, "BUILT_IN_ROLE_CHANGE"},
			{"a policy admin governing administrators", paTok, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName,
				&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
					Scope: &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: a.userID}}, IdleTimeout: durationpb.New(time.Minute),
				}}, codes.PermissionDenied, "CALLER_LACKS_ROLE"},
			{"a caller without the role to call", bobTok, gatehousev1.IdentityService_GrantRole_FullMethodName,
				&gatehousev1.GrantRoleRequest{Role: "reader", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: bob.Id}},
				codes.PermissionDenied, ""},
		} {
			p.tok = tc.token
			_, err := p.previewThenApply(c, tc.name, tc.method, tc.req)
			if status.Code(err) != tc.code || (tc.reason != "" && testnode.Reason(err) != tc.reason) {
				t.Errorf("%s: %v (reason %q), want %s %s from the preview and the change", tc.name, err, testnode.Reason(err), tc.code, tc.reason)
			}
		}
	})
}

// TestPreviewAndRealityAgreeOnRandomChanges builds a random role graph with containment, groups,
// grants, live sessions and re-authenticate and timeout policies, then makes a seeded random
// sequence of changes, each previewed first (checked to write nothing) and then made for real through
// a randomly chosen front: the two must report the same impact, or fail alike.
func TestPreviewAndRealityAgreeOnRandomChanges(t *testing.T) {
	const changes = 60
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			fronts := []testnode.Invoker{n.Client(testnode.GRPC), n.Client(testnode.REST)}
			seed := uint64(15)
			rng := rand.New(rand.NewPCG(seed, 2026))
			t.Logf("seed %d", seed)
			a := newIDAdmin(t, n, fronts[0])
			p := &previewer{t: t, n: n, tok: a.tok}

			const password = "random-password-1"
			var users, groups []string
			for i := range 8 {
				users = append(users, a.createUser(fmt.Sprintf("u%d", i), password).Id)
			}
			for i := range 3 {
				groups = append(groups, a.createGroup(fmt.Sprintf("g%d", i)).Id)
			}
			roles := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
			for i, r := range roles {
				// Containment only from a role to later ones, so the graph starts acyclic; random
				// changes may then try cycles, which both the preview and the change refuse.
				var contains []string
				for _, later := range roles[:i] {
					if rng.IntN(3) == 0 {
						contains = append(contains, later)
					}
				}
				a.createRole(r, contains...)
			}
			for _, g := range groups {
				for _, u := range users {
					if rng.IntN(3) == 0 {
						a.addMember(g, u)
					}
				}
			}
			for range 6 {
				if rng.IntN(2) == 0 {
					a.grantUser(roles[rng.IntN(len(roles))], users[rng.IntN(len(users))])
				} else {
					a.grantGroup(roles[rng.IntN(len(roles))], groups[rng.IntN(len(groups))])
				}
			}
			rolePolicy := func(role string, reauth bool) *gatehousev1.SessionPolicy {
				pol := &gatehousev1.SessionPolicy{Scope: &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: role}}}
				if reauth {
					pol.OnRoleChange = gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE
				} else {
					pol.AbsoluteTimeout = durationpb.New(time.Duration(5+rng.IntN(20)) * time.Minute)
				}
				return pol
			}
			for _, pol := range []*gatehousev1.SessionPolicy{rolePolicy("r4", true), rolePolicy("r5", false)} {
				testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, fronts[0], gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, a.tok,
					&gatehousev1.CreateSessionPolicyRequest{Policy: pol})
			}
			login := func() {
				u := rng.IntN(len(users))
				testnode.Login(t, fronts[0], fmt.Sprintf("u%d", u), password)
			}
			for range 10 {
				login()
			}

			pick := func(s []string) string { return s[rng.IntN(len(s))] }
			userOrGroup := func() (string, string) {
				if rng.IntN(2) == 0 {
					return pick(users), ""
				}
				return "", pick(groups)
			}
			var affected, refreshed, ended, failed int
			for i := range changes {
				var what, method string
				var req proto.Message
				switch op := rng.IntN(13); op {
				case 0, 1:
					g, u := pick(groups), pick(users)
					what, method = "AddGroupMember "+g+" "+u, gatehousev1.IdentityService_AddGroupMember_FullMethodName
					req = &gatehousev1.AddGroupMemberRequest{GroupId: g, UserId: u}
				case 2:
					g, u := pick(groups), pick(users)
					what, method = "RemoveGroupMember "+g+" "+u, gatehousev1.IdentityService_RemoveGroupMember_FullMethodName
					req = &gatehousev1.RemoveGroupMemberRequest{GroupId: g, UserId: u}
				case 3, 4:
					r := pick(roles)
					u, g := userOrGroup()
					what, method = "GrantRole "+r+" "+u+g, gatehousev1.IdentityService_GrantRole_FullMethodName
					gr := &gatehousev1.GrantRoleRequest{Role: r, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u}}
					if g != "" {
						gr.Principal = &gatehousev1.GrantRoleRequest_GroupId{GroupId: g}
					}
					req = gr
				case 5:
					r := pick(roles)
					u, g := userOrGroup()
					what, method = "RevokeRole "+r+" "+u+g, gatehousev1.IdentityService_RevokeRole_FullMethodName
					rr := &gatehousev1.RevokeRoleRequest{Role: r, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: u}}
					if g != "" {
						rr.Principal = &gatehousev1.RevokeRoleRequest_GroupId{GroupId: g}
					}
					req = rr
				case 6, 7:
					r, cr := pick(roles), pick(roles)
					what, method = "AddContainedRole "+r+" "+cr, gatehousev1.IdentityService_AddContainedRole_FullMethodName
					req = &gatehousev1.AddContainedRoleRequest{Role: r, ContainedRole: cr}
				case 8:
					r, cr := pick(roles), pick(roles)
					what, method = "RemoveContainedRole "+r+" "+cr, gatehousev1.IdentityService_RemoveContainedRole_FullMethodName
					req = &gatehousev1.RemoveContainedRoleRequest{Role: r, ContainedRole: cr}
				case 9:
					r := pick(roles)
					what, method = "DeleteRole "+r, gatehousev1.IdentityService_DeleteRole_FullMethodName
					req = &gatehousev1.DeleteRoleRequest{Name: r}
				case 10:
					g := pick(groups)
					what, method = "DeleteGroup "+g, gatehousev1.IdentityService_DeleteGroup_FullMethodName
					req = &gatehousev1.DeleteGroupRequest{GroupId: g}
				case 11:
					r := pick(roles)
					what, method = "CreateSessionPolicy "+r, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName
					req = &gatehousev1.CreateSessionPolicyRequest{Policy: rolePolicy(r, rng.IntN(2) == 0)}
				default:
					ps := read[gatehousev1.ListSessionPoliciesResponse](a, gatehousev1.PolicyService_ListSessionPolicies_FullMethodName,
						&gatehousev1.ListSessionPoliciesRequest{}).Policies
					if len(ps) == 0 {
						continue
					}
					pol := ps[rng.IntN(len(ps))]
					if rng.IntN(2) == 0 {
						what, method = "DeleteSessionPolicy "+pol.Id, gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName
						req = &gatehousev1.DeleteSessionPolicyRequest{PolicyId: pol.Id}
					} else {
						what, method = "UpdateSessionPolicy "+pol.Id, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName
						req = &gatehousev1.UpdateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
							Id: pol.Id, AbsoluteTimeout: durationpb.New(time.Duration(5+rng.IntN(20)) * time.Minute),
						}}
					}
				}
				what = fmt.Sprintf("change %d (%s)", i, what)
				impact, err := p.previewThenApply(fronts[rng.IntN(len(fronts))], what, method, req)
				if err != nil {
					failed++
				} else {
					affected += int(impact.UsersAffected)
					refreshed += int(impact.SessionsRefreshed)
					ended += int(impact.SessionsEnded)
				}
				// Keep the graph alive: a deleted role or group comes back empty.
				switch r := req.(type) {
				case *gatehousev1.DeleteRoleRequest:
					if err == nil {
						a.createRole(r.Name)
					}
				case *gatehousev1.DeleteGroupRequest:
					if err == nil {
						g := a.createGroup(fmt.Sprintf("g-%d", i))
						groups[slices.Index(groups, r.GroupId)] = g.Id
					}
				}
				if rng.IntN(3) == 0 {
					login()
				}
			}
			t.Logf("%d changes: %d users affected, %d sessions refreshed, %d ended, %d refused alike", changes, affected, refreshed, ended, failed)
			if affected == 0 || refreshed == 0 || ended == 0 || failed == 0 {
				t.Errorf("the random changes did not exercise every outcome (affected %d, refreshed %d, ended %d, failed %d): change the seed",
					affected, refreshed, ended, failed)
			}
		})
	}
}

// TestPreviewReachesNoWatcher watches a user's session on gRPC and REST while her roles are
// previewed changing (once so that her session would end): the first message after the snapshot is
// the one of the real change made after the previews.
func TestPreviewReachesNoWatcher(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.GRPC)
			a := newIDAdmin(t, n, c)
			p := &previewer{t: t, n: n, tok: a.tok}
			alice := a.createUser("alice", "alice-password-1")
			for _, r := range []string{"previewed", "payroll", "real"} {
				a.createRole(r)
			}
			testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, a.tok,
				&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
					Scope:        &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: "payroll"}},
					OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE,
				}})
			tok := testnode.Login(t, c, "alice", "alice-password-1").Token
			var watches []<-chan liveMsg
			for _, front := range []string{"grpc", "rest"} {
				w := liveWatch(t, n, front, tok)
				if m := liveNext(t, w, front+" snapshot"); m.resp.GetSnapshot() == nil {
					t.Fatalf("%s: first message %v (err %v), want the snapshot", front, m.resp, m.err)
				}
				watches = append(watches, w)
			}
			for _, role := range []string{"previewed", "payroll"} {
				if _, err := p.call(c, gatehousev1.IdentityService_GrantRole_FullMethodName,
					&gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: alice.Id}}, true); err != nil {
					t.Fatalf("previewing a grant of %s: %v", role, err)
				}
			}
			a.grantUser("real", alice.Id)
			for i, w := range watches {
				m := liveNext(t, w, "after the change")
				if rc := m.resp.GetRolesChanged(); rc == nil || !slices.Equal(rc.Added, []string{"real"}) {
					t.Errorf("watch %d: the first message after the previews is %v (err %v), want roles_changed adding only real", i, m.resp, m.err)
				}
			}
		})
	}
}
