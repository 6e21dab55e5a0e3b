package integration_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/server/auth"
)

// TestImpersonationReachesTheTargetsWatchers: the target user's own session, watching itself, is
// told that an impersonation of its user began (with who and why) and that it ended when the
// impersonator logged out; the watch goes on. Both backends, native gRPC and REST streams.
func TestImpersonationReachesTheTargetsWatchers(t *testing.T) {
	for _, b := range testnode.Backends {
		for _, front := range []string{"grpc", "rest"} {
			t.Run(string(b)+"/"+front, func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				c := n.Client(testnode.GRPC)
				a := newIDAdmin(t, n, c)
				impUser(a, "watched-target")
				support := impUser(a, "watched-support", auth.RoleImpersonator)
				own := testnode.Login(t, c, "watched-target", impPassword)
				ch := liveWatch(t, n, front, own.Token)
				if liveNext(t, ch, "snapshot").resp.GetSnapshot() == nil {
					t.Fatal("the first message is not a snapshot")
				}

				sup := testnode.Login(t, c, "watched-support", impPassword)
				const reason = "ticket 7: reproduce the error"
				imp, err := smTryCreate(c, sup.Token, impReq("watched-target", reason))
				if err != nil {
					t.Fatalf("impersonating: %v", err)
				}
				began := liveNext(t, ch, "impersonation began").resp.GetImpersonation()
				if began == nil || !began.Active || began.SessionId != imp.Session.Id || began.ImpersonatorUserId != support.Id || began.Reason != reason {
					t.Fatalf("after the impersonation began: %v, want impersonation{active, session %s, by %s, %q}", began, imp.Session.Id, support.Id, reason)
				}

				testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, sup.Token, &gatehousev1.LogoutRequest{})
				ended := liveNext(t, ch, "impersonation ended").resp.GetImpersonation()
				if ended == nil || ended.Active || ended.SessionId != imp.Session.Id {
					t.Fatalf("after the impersonator logged out: %v, want impersonation{active: false, session %s}", ended, imp.Session.Id)
				}
				wantEnded(t, c, "the impersonation", imp.Token, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER)

				// The target's own session goes on, and still hears of its own end.
				testnode.MustCall[gatehousev1.TerminateSessionResponse](t, c, gatehousev1.SessionService_TerminateSession_FullMethodName, a.tok,
					&gatehousev1.TerminateSessionRequest{SessionId: own.Session.Id})
				liveWantTerminated(t, ch, "terminated", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN)
			})
		}
	}
}

// capThreeNode starts a node on backend b whose cap on one user's active sessions is 3, with users
// PREFIX-target and PREFIX-support (an impersonator); it returns the node, a gRPC client, the
// target and the impersonator's login.
func capThreeNode(t *testing.T, b testnode.Backend, prefix string) (*testnode.Node, testnode.Invoker, *gatehousev1.User, *gatehousev1.CreateSessionResponse) {
	t.Helper()
	n := testnode.StartWith(t, server.Config{Database: testnode.DatabaseURL(t, b), MaxSessionsPerUser: 3})
	c := n.Client(testnode.GRPC)
	a := newIDAdmin(t, n, c)
	target := impUser(a, prefix+"-target")
	impUser(a, prefix+"-support", auth.RoleImpersonator)
	return n, c, target, testnode.Login(t, c, prefix+"-support", impPassword)
}

// TestImpersonationRespectsTheSessionCap: an impersonation that would take its target past the
// per-user cap on active sessions is refused (RESOURCE_EXHAUSTED SESSION_CAP), and ends none of
// the target's own sessions, where a login past the cap would evict the oldest.
func TestImpersonationRespectsTheSessionCap(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n, c, target, sup := capThreeNode(t, b, "capped")
			testnode.Login(t, c, "capped-target", impPassword)
			testnode.Login(t, c, "capped-target", impPassword)
			if _, err := smTryCreate(c, sup.Token, impReq("capped-target", "third of three")); err != nil {
				t.Fatalf("an impersonation within the cap: %v", err)
			}
			_, err := smTryCreate(c, sup.Token, impReq("capped-target", "one too many"))
			if status.Code(err) != codes.ResourceExhausted || testnode.Reason(err) != "SESSION_CAP" {
				t.Fatalf("an impersonation past the cap: %v (reason %q), want RESOURCE_EXHAUSTED SESSION_CAP", err, testnode.Reason(err))
			}
			active := 0
			for _, r := range mnSessions(t, n, target.Id) {
				if r.active {
					active++
				}
			}
			if active != 3 {
				t.Errorf("the target holds %d active sessions after the refused impersonation, want its 2 and the first impersonation", active)
			}
		})
	}
}

// TestTheSessionCapSparesImpersonations: a login past the per-user cap evicts the user's own
// oldest session, not an older impersonation of the user: impersonations do not count towards the
// target's limits, and ending one is the impersonator's business.
func TestTheSessionCapSparesImpersonations(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n, c, target, sup := capThreeNode(t, b, "spared")
			imp, err := smTryCreate(c, sup.Token, impReq("spared-target", "the oldest session of the target"))
			if err != nil {
				t.Fatalf("impersonating: %v", err)
			}
			first := testnode.Login(t, c, "spared-target", impPassword)
			testnode.Login(t, c, "spared-target", impPassword)
			last := testnode.Login(t, c, "spared-target", impPassword)
			if got := last.EvictedSessionIds; len(got) != 1 || got[0] != first.Session.Id {
				t.Errorf("the login past the cap evicted %v, want the target's own oldest session %s", got, first.Session.Id)
			}
			rows := mnSessions(t, n, target.Id)
			if !rows[imp.Session.Id].active {
				t.Errorf("the impersonation ended (%s), want it spared", rows[imp.Session.Id].reason)
			}
		})
	}
}
