package integration_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/auth"
)

// caSubject is a user whose roles Check is asked about, with a session of theirs.
type caSubject struct {
	name   string
	userID string
	token  string
	roles  []string // effective roles, as ValidateSession returns them
}

// caProbe is a call that only holders of one built-in role (and gatehouse.admin) may make: it is
// refused with PERMISSION_DENIED to everyone else, and answered otherwise (successfully or not).
type caProbe struct {
	role string
	call func(a *idAdmin, token string) error
}

// caProbes returns the probes; name makes unique names.
func caProbes(name func(kind string) string) []caProbe {
	call := func(a *idAdmin, method, token string, req proto.Message) error {
		resp, err := respFor(method)
		if err != nil {
			a.t.Fatal(err)
		}
		return a.c.Invoke(context.Background(), method, token, req, resp)
	}
	return []caProbe{
		// Only gatehouse.admin changes who holds a built-in role.
		{auth.RoleAdmin, func(a *idAdmin, token string) error {
			u := a.createUser(name("target"), "")
			return call(a, gatehousev1.IdentityService_GrantRole_FullMethodName, token,
				&gatehousev1.GrantRoleRequest{Role: auth.RoleAuditor, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
		}},
		{auth.RoleIdentityAdmin, func(a *idAdmin, token string) error {
			return call(a, gatehousev1.IdentityService_CreateGroup_FullMethodName, token, &gatehousev1.CreateGroupRequest{Name: name("group")})
		}},
		{auth.RoleSessionAdmin, func(a *idAdmin, token string) error {
			return call(a, gatehousev1.SessionService_TerminateUserSessions_FullMethodName, token,
				&gatehousev1.TerminateUserSessionsRequest{UserId: unknownID})
		}},
		{auth.RolePolicyAdmin, func(a *idAdmin, token string) error {
			return call(a, gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName, token,
				&gatehousev1.DeleteSessionPolicyRequest{PolicyId: unknownID})
		}},
		// ListEvents is for auditors only (and is pending implementation: allowed callers get
		// UNIMPLEMENTED, the others PERMISSION_DENIED).
		{auth.RoleAuditor, func(a *idAdmin, token string) error {
			return call(a, gatehousev1.SessionService_ListEvents_FullMethodName, token, &gatehousev1.ListEventsRequest{})
		}},
		{auth.RoleIntrospector, func(a *idAdmin, token string) error {
			return call(a, gatehousev1.PolicyService_Check_FullMethodName, token, polCheckReq("", unknownID, auth.RoleAuditor, ""))
		}},
		{auth.RoleSessionIssuer, func(a *idAdmin, token string) error {
			u := a.createUser(name("sso"), "")
			return call(a, gatehousev1.SessionService_CreateSession_FullMethodName, token,
				smTrustedReq(u.Username, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER))
		}},
		{auth.RoleImpersonator, func(a *idAdmin, token string) error {
			u := a.createUser(name("impersonated"), "")
			return call(a, gatehousev1.SessionService_CreateSession_FullMethodName, token,
				impReq(u.Username, "checking what the user sees"))
		}},
	}
}

// TestCheckAgreesWithAuthorization checks that Check's answer for a role is the one Gatehouse's own
// authorisation gives: for every built-in role, Check says a subject holds it exactly when the
// subject may make a call reserved to that role; and for every role, built-in or not, Check answers
// as auth.Principal.Has does (gatehouse.admin holds every role).
func TestCheckAgreesWithAuthorization(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("ca-reports")
		admins := a.createGroup("ca-admins")
		a.grantGroup(auth.RoleAdmin, admins.Id)

		subject := func(name string, grant func(userID string)) *caSubject {
			t.Helper()
			u := a.createUser(name, "")
			if grant != nil {
				grant(u.Id)
			}
			s, err := smTryCreate(c, a.tok, smTrustedReq(name, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER))
			if err != nil {
				t.Fatalf("opening a session for %s: %v", name, err)
			}
			return &caSubject{name: name, userID: u.Id, token: s.Token, roles: s.Roles}
		}
		adminLogin := testnode.Login(t, c, "admin", testnode.AdminPassword)
		subjects := []*caSubject{
			{name: "the bootstrap admin", userID: adminLogin.User.Id, token: adminLogin.Token, roles: adminLogin.Roles},
			subject("ca-group-admin", func(id string) { a.addMember(admins.Id, id) }),
			subject("ca-plain", nil),
			subject("ca-reporter", func(id string) { a.grantUser("ca-reports", id) }),
		}
		for _, r := range auth.BuiltInRoles {
			if r.Name == auth.RoleAdmin {
				continue
			}
			subjects = append(subjects, subject("ca-"+strings.TrimPrefix(r.Name, auth.ReservedRolePrefix), func(id string) { a.grantUser(r.Name, id) }))
		}

		check := func(s *caSubject, role string) (byToken, byID bool) {
			t.Helper()
			byToken, err := polCheck(c, "", polCheckReq(s.token, "", role, ""))
			if err != nil {
				t.Fatalf("Check of %s by token for %s: %v", s.name, role, err)
			}
			byID, err = polCheck(c, a.tok, polCheckReq("", s.userID, role, ""))
			if err != nil {
				t.Fatalf("Check of %s by user id for %s: %v", s.name, role, err)
			}
			return byToken, byID
		}

		// Built-in roles: Check against what the subject may actually do.
		seq := 0
		name := func(kind string) string {
			seq++
			return fmt.Sprintf("ca-%s-%d", kind, seq)
		}
		probes := caProbes(name)
		for _, r := range auth.BuiltInRoles {
			if !slices.ContainsFunc(probes, func(p caProbe) bool { return p.role == r.Name }) {
				t.Fatalf("built-in role %s has no probe in caProbes: add a call only its holders may make", r.Name)
			}
		}
		for _, p := range probes {
			for _, s := range subjects {
				err := p.call(a, s.token)
				if code := status.Code(err); code == codes.Internal || code == codes.Unknown || code == codes.Unauthenticated {
					t.Fatalf("probe for %s as %s: %v", p.role, s.name, err)
				}
				may := status.Code(err) != codes.PermissionDenied
				byToken, byID := check(s, p.role)
				if byToken != may || byID != may {
					t.Errorf("Check says %s holds %s: %v by token, %v by user id; but Gatehouse's authorisation %s (%v)",
						s.name, p.role, byToken, byID, map[bool]string{true: "lets them act as one", false: "refuses them"}[may], err)
				}
			}
		}

		// Every role, built-in or custom, and one that does not exist: Check agrees with the rule
		// that Gatehouse's own authorisation applies.
		all := []string{"ca-reports", "ca-no-such-role"}
		for _, r := range auth.BuiltInRoles {
			all = append(all, r.Name)
		}
		for _, s := range subjects {
			held := slices.Clone(s.roles)
			slices.Sort(held)
			p := &auth.Principal{UserID: s.userID, Roles: held}
			for _, role := range all {
				byToken, byID := check(s, role)
				if want := p.Has(role); byToken != want || byID != want {
					t.Errorf("Check says %s (roles %v) holds %s: %v by token, %v by user id; auth.Principal.Has says %v",
						s.name, s.roles, role, byToken, byID, want)
				}
			}
		}
	})
}

// caSameAnswer checks that two errors are the same answer: the same code and reason, and the same
// message once each names its own id.
func caSameAnswer(t *testing.T, what string, got error, gotID string, want error, wantID string) {
	t.Helper()
	g, w := status.Convert(got), status.Convert(want)
	gm, wm := strings.ReplaceAll(g.Message(), gotID, "ID"), strings.ReplaceAll(w.Message(), wantID, "ID")
	if g.Code() != w.Code() || testnode.Reason(got) != testnode.Reason(want) || gm != wm {
		t.Errorf("%s: %s %q (reason %q), but for an id that does not exist %s %q (reason %q): the answer reveals that the session exists",
			what, g.Code(), gm, testnode.Reason(got), w.Code(), wm, testnode.Reason(want))
	}
}

// TestSessionExistenceNotRevealed checks that GetSession and TerminateSession answer a caller who
// may not read another user's session exactly as they answer for a session id that does not exist
// (NOT_FOUND, SESSION_NOT_FOUND), so that session ids cannot be probed. A caller who may read the
// session (an auditor) but not end it is told PERMISSION_DENIED by TerminateSession.
func TestSessionExistenceNotRevealed(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		trusted := func(username string, roles ...string) *gatehousev1.CreateSessionResponse {
			t.Helper()
			u := a.createUser(username, "")
			for _, r := range roles {
				a.grantUser(r, u.Id)
			}
			s, err := smTryCreate(c, a.tok, smTrustedReq(username, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER))
			if err != nil {
				t.Fatalf("opening a session for %s: %v", username, err)
			}
			return s
		}
		owner := trusted("se-owner")
		other := trusted("se-other")
		auditor := trusted("se-auditor", auth.RoleAuditor)
		sadmin := trusted("se-sadmin", auth.RoleSessionAdmin)
		id := owner.Session.Id

		for _, who := range []struct {
			name  string
			token string
		}{
			{"another plain user", other.Token},
			{"an identity admin", trusted("se-iadmin", auth.RoleIdentityAdmin).Token},
			{"an introspector", trusted("se-intro", auth.RoleIntrospector).Token},
		} {
			_, got := smGet(c, who.token, id)
			_, unknown := smGet(c, who.token, unknownID)
			polWantErr(t, "GetSession of an unknown id by "+who.name, unknown, codes.NotFound, "SESSION_NOT_FOUND", "")
			caSameAnswer(t, "GetSession of another user's session by "+who.name, got, id, unknown, unknownID)

			_, got = smTerminate(c, who.token, id, "probe")
			_, unknown = smTerminate(c, who.token, unknownID, "probe")
			polWantErr(t, "TerminateSession of an unknown id by "+who.name, unknown, codes.NotFound, "SESSION_NOT_FOUND", "")
			caSameAnswer(t, "TerminateSession of another user's session by "+who.name, got, id, unknown, unknownID)
		}

		// An auditor may read the session, so it learns nothing from being refused to end it.
		if _, err := smGet(c, auditor.Token, id); err != nil {
			t.Errorf("GetSession by an auditor: %v", err)
		}
		_, err := smTerminate(c, auditor.Token, id, "probe")
		polWantErr(t, "TerminateSession of another user's session by an auditor", err, codes.PermissionDenied, "", "")
		_, err = smTerminate(c, auditor.Token, unknownID, "probe")
		polWantErr(t, "TerminateSession of an unknown id by an auditor", err, codes.NotFound, "SESSION_NOT_FOUND", "")
		_, err = smGet(c, sadmin.Token, unknownID)
		polWantErr(t, "GetSession of an unknown id by a session admin", err, codes.NotFound, "SESSION_NOT_FOUND", "")

		// Nothing the refused callers did touched the session; its user and session admins see it.
		if s, err := smGet(c, owner.Token, id); err != nil || !s.Active {
			t.Errorf("GetSession by the session's user: %v, %v; want it active", s, err)
		}
		if s, err := smGet(c, sadmin.Token, id); err != nil || !s.Active {
			t.Errorf("GetSession by a session admin: %v, %v; want it active", s, err)
		}
	})
}
