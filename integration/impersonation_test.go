package integration_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/session"
)

// Audited impersonation (issue 15, part 3): a gatehouse.impersonator opens a session as another
// user, marked as such, with the target's roles, outside the target's limits, with a short absolute
// timeout, ending with the impersonator's own session, every event naming both.

const impPassword = "imp-password-1"

// grpcAndREST are the fronts the impersonation and what-if tests run through: native gRPC and the
// REST gateway (Connect shares its handlers with gRPC; the authorisation matrix covers it too).
var grpcAndREST = []testnode.Protocol{testnode.GRPC, testnode.REST}

// forEachGRPCAndREST runs f on a fresh node of every backend, through each front of grpcAndREST.
func forEachGRPCAndREST(t *testing.T, f func(t *testing.T, n *testnode.Node, c testnode.Invoker)) {
	for _, b := range testnode.Backends {
		for _, p := range grpcAndREST {
			t.Run(string(b)+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				f(t, n, n.Client(p))
			})
		}
	}
}

// impReq is an impersonate CreateSessionRequest for a web-browser session.
func impReq(username, reason string) *gatehousev1.CreateSessionRequest {
	return &gatehousev1.CreateSessionRequest{
		Credential: &gatehousev1.CreateSessionRequest_Impersonate{Impersonate: &gatehousev1.ImpersonateCredential{Username: username, Reason: reason}},
		Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
	}
}

// impEvents follows the event log after cursor on node n through native gRPC, as an
// administrator.
func impEvents(t *testing.T, n *testnode.Node, admin, after string) <-chan *gatehousev1.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := gatehousev1.NewSessionServiceClient(conn).WatchEvents(
		metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin), &gatehousev1.WatchEventsRequest{After: after})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *gatehousev1.Event, 256)
	go func() {
		defer close(out)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			out <- m.Event
		}
	}()
	return out
}

// impWaitEvent returns the first event from ch of type typ about sessionID, failing the test after
// liveWait.
func impWaitEvent(t *testing.T, ch <-chan *gatehousev1.Event, typ gatehousev1.EventType, sessionID string) *gatehousev1.Event {
	t.Helper()
	deadline := time.After(liveWait)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s of session %s: the event stream ended", typ, sessionID)
			}
			if ev.Type == typ && ev.SessionId == sessionID {
				return ev
			}
		case <-deadline:
			t.Fatalf("waiting for %s of session %s: nothing within %s", typ, sessionID, liveWait)
		}
	}
}

// impUser creates a user with impPassword and the given roles.
func impUser(a *idAdmin, name string, roles ...string) *gatehousev1.User {
	a.t.Helper()
	u := a.createUser(name, impPassword)
	for _, r := range roles {
		a.grantUser(r, u.Id)
	}
	return u
}

// impWantMarked checks the impersonation markers of a session.
func impWantMarked(t *testing.T, what string, s *gatehousev1.Session, by *gatehousev1.CreateSessionResponse, reason string) {
	t.Helper()
	if s.GetImpersonatorUserId() != by.User.Id || s.GetImpersonatorSessionId() != by.Session.Id || s.GetImpersonationReason() != reason {
		t.Fatalf("%s: impersonator %q session %q reason %q, want %q %q %q", what,
			s.GetImpersonatorUserId(), s.GetImpersonatorSessionId(), s.GetImpersonationReason(), by.User.Id, by.Session.Id, reason)
	}
}

func TestImpersonation(t *testing.T) {
	forEachGRPCAndREST(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("imp-reader")
		target := impUser(a, "imp-target", "imp-reader")
		impUser(a, "imp-support", auth.RoleImpersonator)
		// The target may hold one web session, and a new one is refused past it.
		limCreatePolicy(t, c, a.tok, &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: target.Id}}, 1,
			gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW, gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER)

		own := testnode.Login(t, c, "imp-target", impPassword)
		sup := testnode.Login(t, c, "imp-support", impPassword)
		evs := impEvents(t, n, a.tok, sup.ConsistencyToken)

		// The impersonation: the target's roles, marked, not refused by the target's full limit.
		const reason = "ticket 42: the user cannot see the reports"
		imp, err := smTryCreate(c, sup.Token, impReq("IMP-Target", reason))
		if err != nil {
			t.Fatalf("impersonating: %v", err)
		}
		if imp.User.Id != target.Id || !slices.Equal(imp.Roles, []string{"imp-reader"}) {
			t.Fatalf("the impersonation is user %s with roles %v, want %s with [imp-reader]", imp.User.Id, imp.Roles, target.Id)
		}
		if len(imp.EvictedSessionIds) != 0 {
			t.Fatalf("the impersonation evicted %v", imp.EvictedSessionIds)
		}
		impWantMarked(t, "CreateSession", imp.Session, sup, reason)
		if life := imp.Session.AbsoluteExpireTime.AsTime().Sub(imp.Session.CreateTime.AsTime()); life <= 0 || life > session.ImpersonationTimeout {
			t.Fatalf("the impersonation's absolute timeout is %s, want at most %s", life, session.ImpersonationTimeout)
		}
		if _, err := validate(c, own.Token); err != nil {
			t.Fatalf("the target's own session after the impersonation: %v", err)
		}

		// ValidateSession and Check name the impersonator.
		v, err := validate(c, imp.Token)
		if err != nil {
			t.Fatalf("validating the impersonation: %v", err)
		}
		if v.User.Id != target.Id || !slices.Equal(v.Roles, []string{"imp-reader"}) {
			t.Fatalf("ValidateSession: user %s roles %v, want %s [imp-reader]", v.User.Id, v.Roles, target.Id)
		}
		impWantMarked(t, "ValidateSession", v.Session, sup, reason)
		for role, want := range map[string]bool{"imp-reader": true, auth.RoleImpersonator: false} {
			ch, err := testnode.Call[gatehousev1.CheckResponse](context.Background(), c, gatehousev1.PolicyService_Check_FullMethodName, "",
				polCheckReq(imp.Token, "", role, ""))
			if err != nil {
				t.Fatalf("Check %s: %v", role, err)
			}
			if ch.Allowed != want || ch.ImpersonatorUserId != sup.User.Id || ch.ImpersonatorSessionId != sup.Session.Id {
				t.Fatalf("Check %s by the impersonation: %v, want allowed %v and the impersonator %s/%s", role, ch, want, sup.User.Id, sup.Session.Id)
			}
		}
		if ch, err := testnode.Call[gatehousev1.CheckResponse](context.Background(), c, gatehousev1.PolicyService_Check_FullMethodName, "",
			polCheckReq(own.Token, "", "imp-reader", "")); err != nil || ch.ImpersonatorUserId != "" || ch.ImpersonatorSessionId != "" {
			t.Fatalf("Check by the target's own session: %v %v, want no impersonator", ch, err)
		}

		// The audit stream: SESSION_CREATED names both.
		created := impWaitEvent(t, evs, gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED, imp.Session.Id)
		if created.UserId != target.Id || created.ActorUserId != sup.User.Id || created.ActorSessionId != sup.Session.Id ||
			created.ImpersonatorUserId != sup.User.Id || created.ImpersonatorSessionId != sup.Session.Id {
			t.Fatalf("SESSION_CREATED of the impersonation: %v", created)
		}
		impWantMarked(t, "SESSION_CREATED's session", created.GetSessionCreated().GetSession(), sup, reason)

		// The impersonation does not count towards the target's limit of one: with the target's own
		// session gone, the target logs in again although the impersonation is active.
		testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, own.Token, &gatehousev1.LogoutRequest{})
		own = testnode.Login(t, c, "imp-target", impPassword)

		// What the impersonation does names both: it ends the target's own session.
		testnode.MustCall[gatehousev1.TerminateSessionResponse](t, c, gatehousev1.SessionService_TerminateSession_FullMethodName, imp.Token,
			&gatehousev1.TerminateSessionRequest{SessionId: own.Session.Id})
		acted := impWaitEvent(t, evs, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED, own.Session.Id)
		if acted.ActorUserId != target.Id || acted.ActorSessionId != imp.Session.Id ||
			acted.ImpersonatorUserId != sup.User.Id || acted.ImpersonatorSessionId != sup.Session.Id {
			t.Fatalf("an event the impersonation caused: %v, want actor %s/%s and impersonator %s/%s",
				acted, target.Id, imp.Session.Id, sup.User.Id, sup.Session.Id)
		}

		// Ending the impersonator's session ends the impersonation, and tells its watcher.
		watch := liveWatch(t, n, "grpc", imp.Token)
		if snap := liveNext(t, watch, "snapshot").resp.GetSnapshot(); snap == nil {
			t.Fatal("the impersonation's watcher got no snapshot")
		}
		testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, sup.Token, &gatehousev1.LogoutRequest{})
		wantEnded(t, c, "the impersonation after the impersonator's logout", imp.Token, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)
		liveWantTerminated(t, watch, "the impersonation's watcher", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)
		ended := impWaitEvent(t, evs, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED, imp.Session.Id)
		if ended.UserId != target.Id || ended.ImpersonatorUserId != sup.User.Id || ended.ImpersonatorSessionId != sup.Session.Id ||
			ended.GetSessionTerminated().GetReason() != gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER ||
			ended.GetSessionTerminated().GetNote() != "the impersonator's session ended (TERMINATION_REASON_LOGOUT)" {
			t.Fatalf("SESSION_TERMINATED of the impersonation: %v", ended)
		}
	})
}

// TestImpersonationEndsWithTheImpersonator: an administrator ending the impersonator's sessions,
// or disabling the impersonator, ends the impersonations in the same change.
func TestImpersonationEndsWithTheImpersonator(t *testing.T) {
	forEachGRPCAndREST(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		impUser(a, "imp-target")
		support := impUser(a, "imp-support", auth.RoleImpersonator)

		impersonate := func() (sup, imp *gatehousev1.CreateSessionResponse) {
			t.Helper()
			sup = testnode.Login(t, c, "imp-support", impPassword)
			imp, err := smTryCreate(c, sup.Token, impReq("imp-target", "support"))
			if err != nil {
				t.Fatalf("impersonating: %v", err)
			}
			return sup, imp
		}

		_, imp := impersonate()
		testnode.MustCall[gatehousev1.TerminateUserSessionsResponse](t, c, gatehousev1.SessionService_TerminateUserSessions_FullMethodName, a.tok,
			&gatehousev1.TerminateUserSessionsRequest{UserId: support.Id})
		wantEnded(t, c, "after an administrator ended the impersonator's sessions", imp.Token,
			gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)

		_, imp = impersonate()
		a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User: &gatehousev1.User{Id: support.Id, Disabled: true}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
		})
		wantEnded(t, c, "after the impersonator was disabled", imp.Token, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)

		// The sweeper ends an idle impersonator's session, and with it the impersonation, whose own
		// idle timeout (the target's policy, 30 minutes) is far off.
		idler := impUser(a, "imp-idler", auth.RoleImpersonator)
		testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
				Scope:       &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: idler.Id}},
				IdleTimeout: durationpb.New(3 * time.Second),
			}})
		idle := testnode.Login(t, c, "imp-idler", impPassword)
		evs := impEvents(t, n, a.tok, idle.ConsistencyToken)
		imp, err := smTryCreate(c, idle.Token, impReq("imp-target", "support"))
		if err != nil {
			t.Fatalf("impersonating from a session with a 3-second idle timeout: %v", err)
		}
		ended := impWaitEvent(t, evs, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED, imp.Session.Id)
		if got := ended.GetSessionTerminated(); got.GetReason() != gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER ||
			got.GetNote() != "the impersonator's session ended (TERMINATION_REASON_IDLE_TIMEOUT)" {
			t.Fatalf("the impersonation of an idle impersonator ended with %v", got)
		}
	})
}

// TestImpersonationGuards: who may not be impersonated, and by whom.
func TestImpersonationGuards(t *testing.T) {
	forEachGRPCAndREST(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		impUser(a, "imp-target")
		impUser(a, "imp-auditor", auth.RoleAuditor)
		impUser(a, "imp-peer", auth.RoleImpersonator)
		impUser(a, "imp-plain")
		disabled := impUser(a, "imp-disabled")
		a.mustUpdateUser(&gatehousev1.UpdateUserRequest{
			User: &gatehousev1.User{Id: disabled.Id, Disabled: true}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
		})
		impUser(a, "imp-support", auth.RoleImpersonator)
		sup := testnode.Login(t, c, "imp-support", impPassword)
		plain := testnode.Login(t, c, "imp-plain", impPassword)

		// The policy's absolute timeout, when shorter than an hour, bounds the impersonation.
		short := impUser(a, "imp-short")
		pol := testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
				Scope:           &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: short.Id}},
				AbsoluteTimeout: durationpb.New(10 * time.Minute),
			}}).Policy
		s, err := smTryCreate(c, sup.Token, impReq("imp-short", "support"))
		if err != nil {
			t.Fatalf("impersonating a user with a 10-minute policy: %v", err)
		}
		if life := s.Session.AbsoluteExpireTime.AsTime().Sub(s.Session.CreateTime.AsTime()); life != 10*time.Minute {
			t.Fatalf("under a 10-minute absolute timeout the impersonation lasts %s", life)
		}
		// A longer policy afterwards does not lengthen it.
		testnode.MustCall[gatehousev1.UpdateSessionPolicyResponse](t, c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.UpdateSessionPolicyRequest{
				Policy:     &gatehousev1.SessionPolicy{Id: pol.Id, AbsoluteTimeout: durationpb.New(48 * time.Hour)},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"absolute_timeout"}},
			})
		v, err := validate(c, s.Token)
		if err != nil {
			t.Fatalf("validating the impersonation after the policy change: %v", err)
		}
		if life := v.Session.AbsoluteExpireTime.AsTime().Sub(v.Session.CreateTime.AsTime()); life != 10*time.Minute {
			t.Fatalf("after the policy grew to 48 hours the impersonation lasts %s, want still 10 minutes", life)
		}

		// An impersonation session may not impersonate (the peer holds gatehouse.impersonator too).
		peer, err := smTryCreate(c, sup.Token, impReq("imp-peer", "support"))
		if err != nil {
			t.Fatalf("impersonating a fellow impersonator: %v", err)
		}
		if !slices.Contains(peer.Roles, auth.RoleImpersonator) {
			t.Fatalf("the peer's impersonation has roles %v", peer.Roles)
		}

		for _, tc := range []struct {
			name   string
			token  string
			req    *gatehousev1.CreateSessionRequest
			code   codes.Code
			reason string
		}{
			{"anonymous", "", impReq("imp-target", "support"), codes.Unauthenticated, ""},
			{"a user without the role", plain.Token, impReq("imp-target", "support"), codes.PermissionDenied, ""},
			{"oneself", sup.Token, impReq("IMP-SUPPORT", "support"), codes.InvalidArgument, "IMPERSONATING_SELF"},
			{"an unknown user", sup.Token, impReq("imp-nobody", "support"), codes.NotFound, "USER_NOT_FOUND"},
			{"without a reason", sup.Token, impReq("imp-target", ""), codes.InvalidArgument, ""},
			{"a disabled user", sup.Token, impReq("imp-disabled", "support"), codes.FailedPrecondition, "USER_DISABLED"},
			{"a holder of a built-in role the caller lacks", sup.Token, impReq("imp-auditor", "support"), codes.PermissionDenied, "CALLER_LACKS_ROLE"},
			{"the administrator", sup.Token, impReq("admin", "support"), codes.PermissionDenied, "CALLER_LACKS_ROLE"},
			{"from an impersonation session", peer.Token, impReq("imp-target", "support"), codes.PermissionDenied, "IMPERSONATION_CHAIN"},
		} {
			_, err := smTryCreate(c, tc.token, tc.req)
			if status.Code(err) != tc.code || (tc.reason != "" && testnode.Reason(err) != tc.reason) {
				t.Errorf("impersonating %s: %v (reason %q), want %s %s", tc.name, err, testnode.Reason(err), tc.code, tc.reason)
			}
		}

		// gatehouse.admin holds every role, so it may impersonate the auditor.
		if _, err := smTryCreate(c, a.tok, impReq("imp-auditor", "audit")); err != nil {
			t.Fatalf("the administrator impersonating an auditor: %v", err)
		}
	})
}

// TestREADMEImpersonation runs the README's impersonation block against a real node.
func TestREADMEImpersonation(t *testing.T) {
	t.Parallel()
	script := readmeBlock(t, "# Impersonation:")
	out := runShell(t, onNode(script, readmeNode(t, testnode.DatabaseURL(t, testnode.SQLite))))
	matchLines(t, "the impersonation section", out, []string{
		`\{"user":"erin","roles":\["billing"\],"by":"ticket 42"\}`,
		`\{"allowed":true,"byDana":true\}`,
		`\{"reason":"SESSION_TERMINATED","why":\{"termination_reason":"TERMINATION_REASON_REVOKED_BY_USER"\}\}`,
	})
}

// TestImpersonationEndsWhenRolesOutgrowIt: an impersonation is allowed when it opens only if the
// impersonator holds every built-in role of the user; a role change past that ends it
// (ROLE_CHANGE): the user gaining a built-in role the impersonator lacks (it would otherwise
// hand that role to the impersonator), or the impersonator losing gatehouse.impersonator.
func TestImpersonationEndsWhenRolesOutgrowIt(t *testing.T) {
	forEachGRPCAndREST(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		target := impUser(a, "imp-promoted")
		support := impUser(a, "imp-support", auth.RoleImpersonator)
		impersonate := func() *gatehousev1.CreateSessionResponse {
			t.Helper()
			sup := testnode.Login(t, c, "imp-support", impPassword)
			imp, err := smTryCreate(c, sup.Token, impReq("imp-promoted", "support"))
			if err != nil {
				t.Fatalf("impersonating: %v", err)
			}
			return imp
		}
		own := testnode.Login(t, c, "imp-promoted", impPassword)

		imp := impersonate()
		a.grantUser(auth.RoleAdmin, target.Id)
		wantEnded(t, c, "after the user became an administrator", imp.Token, gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE)
		if v := mustValidate(t, c, "the user's own session", own.Token); !slices.Contains(v.Roles, auth.RoleAdmin) {
			t.Errorf("the user's own session carries %v, want the new role", v.Roles)
		}
		if _, err := smTryCreate(c, testnode.Login(t, c, "imp-support", impPassword).Token, impReq("imp-promoted", "support")); status.Code(err) != codes.PermissionDenied {
			t.Errorf("impersonating an administrator without being one: %v, want PERMISSION_DENIED", err)
		}

		testnode.MustCall[gatehousev1.RevokeRoleResponse](t, c, gatehousev1.IdentityService_RevokeRole_FullMethodName, a.tok,
			&gatehousev1.RevokeRoleRequest{Role: auth.RoleAdmin, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: target.Id}})
		imp = impersonate()
		testnode.MustCall[gatehousev1.RevokeRoleResponse](t, c, gatehousev1.IdentityService_RevokeRole_FullMethodName, a.tok,
			&gatehousev1.RevokeRoleRequest{Role: auth.RoleImpersonator, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: support.Id}})
		wantEnded(t, c, "after the impersonator lost gatehouse.impersonator", imp.Token, gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE)
		mustValidate(t, c, "the user's own session after the impersonator's change", own.Token)
	})
}
