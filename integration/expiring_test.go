package integration_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// Expiry warnings (issue 15 part 4): WatchSession sends expiring {expire_time, reason} from
// --expiry-warning before the first of the idle and absolute expiries; activity that moves the
// idle expiry sends a fresh warning or a cancel (no expire_time); then the session ends.

// expiringNext returns the next message that is not a heartbeat, failing the test after liveWait.
func expiringNext(t testing.TB, ch <-chan liveMsg, what string) *gatehousev1.WatchSessionResponse {
	t.Helper()
	m := nextWhere(t, ch, what, func(r *gatehousev1.WatchSessionResponse) bool { return r.GetHeartbeat() != nil })
	if m.resp == nil {
		t.Fatalf("%s: the stream ended (%v)", what, m.err)
	}
	t.Logf("%s: %v %v", what, time.Now().Format("05.000"), m.resp)
	return m.resp
}

// wantExpiring expects a warning of reason for expire.
func wantExpiring(t testing.TB, m *gatehousev1.WatchSessionResponse, what string, reason gatehousev1.TerminationReason, expire *timestamppb.Timestamp) {
	t.Helper()
	e := m.GetExpiring()
	if e == nil || e.Reason != reason || !e.ExpireTime.AsTime().Equal(expire.AsTime()) {
		t.Fatalf("%s: got %v, want expiring %v at %v", what, m, reason, expire.AsTime())
	}
}

func TestExpiryWarnings(t *testing.T) {
	t.Parallel()
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.StartWith(t, server.Config{Database: testnode.DatabaseURL(t, b), ExpiryWarning: 3 * time.Second})
			for _, front := range []string{"grpc", "rest"} {
				c := n.Client(testnode.Protocol(front))
				admin := testnode.AdminToken(t, c)
				setup := func(t *testing.T, name string, p *gatehousev1.SessionPolicy) (*gatehousev1.CreateSessionResponse, <-chan liveMsg, *gatehousev1.Session) {
					u := testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
						&gatehousev1.CreateUserRequest{Username: name, Password: name + "-password"}).User
					p.Scope = &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: u.Id}}
					testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, admin,
						&gatehousev1.CreateSessionPolicyRequest{Policy: p})
					s := testnode.Login(t, c, name, name+"-password")
					ch := liveWatch(t, n, front, s.Token)
					snap := expiringNext(t, ch, "snapshot").GetSnapshot()
					if snap == nil {
						t.Fatal("the first message is not a snapshot")
					}
					return s, ch, snap.Session
				}
				validate := func(t *testing.T, token string) *gatehousev1.Session {
					return testnode.MustCall[gatehousev1.ValidateSessionResponse](t, c, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
						&gatehousev1.ValidateSessionRequest{Token: token}).Session
				}
				t.Run(front+"/idle", func(t *testing.T) {
					t.Parallel()
					idle := gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT
					s, ch, sess := setup(t, "idle-"+front, &gatehousev1.SessionPolicy{IdleTimeout: durationpb.New(4 * time.Second)})
					wantExpiring(t, expiringNext(t, ch, "the idle warning"), "the idle warning", idle, sess.IdleExpireTime)

					// Activity moves the idle expiry: a cancel (when the new expiry is beyond the
					// warning's lead) and then, or at once, a warning of the new expiry.
					moved := validate(t, s.Token)
					t.Logf("validated %v: %v", time.Now().Format("05.000"), moved.IdleExpireTime.AsTime())
					if !moved.IdleExpireTime.AsTime().After(sess.IdleExpireTime.AsTime()) {
						t.Fatalf("the validation did not move the idle expiry: %v then %v", sess.IdleExpireTime.AsTime(), moved.IdleExpireTime.AsTime())
					}
					m := expiringNext(t, ch, "after the activity")
					if e := m.GetExpiring(); e != nil && e.ExpireTime == nil {
						if e.Reason != gatehousev1.TerminationReason_TERMINATION_REASON_UNSPECIFIED {
							t.Errorf("a cancel names a reason: %v", m)
						}
						m = expiringNext(t, ch, "the warning after the cancel")
					}
					wantExpiring(t, m, "the moved warning", idle, moved.IdleExpireTime)
					liveWantTerminated(t, ch, "idle", idle)
				})
				t.Run(front+"/absolute", func(t *testing.T) {
					t.Parallel()
					absolute := gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT
					s, ch, sess := setup(t, "absolute-"+front, &gatehousev1.SessionPolicy{AbsoluteTimeout: durationpb.New(4 * time.Second)})
					wantExpiring(t, expiringNext(t, ch, "the absolute warning"), "the absolute warning", absolute, sess.AbsoluteExpireTime)
					// Activity moves the idle expiry, not the absolute one: nothing more is sent
					// before the end.
					validate(t, s.Token)
					if m := expiringNext(t, ch, "the end"); m.GetTerminated().GetReason() != absolute {
						t.Fatalf("after the warning: %v, want terminated %v", m, absolute)
					}
				})
			}
			t.Run("policy", func(t *testing.T) {
				// A policy change that brings the idle expiry within reach warns of the new expiry
				// (2 s ahead: half the 4 s timeout, under the 3 s lead): the change writes no event
				// per session, the node's view wakes the stream, which looks again when it is due.
				t.Parallel()
				c := n.Client(testnode.GRPC)
				admin := testnode.AdminToken(t, c)
				u := testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: "shortened", Password: "shortened-password"}).User
				p := testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, admin,
					&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
						Scope:       &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: u.Id}},
						IdleTimeout: durationpb.New(time.Hour),
					}}).Policy
				s := testnode.Login(t, c, "shortened", "shortened-password")
				ch := liveWatch(t, n, "grpc", s.Token)
				snap := expiringNext(t, ch, "snapshot").GetSnapshot()
				if snap == nil {
					t.Fatal("the first message is not a snapshot")
				}
				testnode.MustCall[gatehousev1.UpdateSessionPolicyResponse](t, c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, admin,
					&gatehousev1.UpdateSessionPolicyRequest{
						Policy:     &gatehousev1.SessionPolicy{Id: p.Id, IdleTimeout: durationpb.New(4 * time.Second)},
						UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"idle_timeout"}},
					})
				e := expiringNext(t, ch, "the warning after the policy change").GetExpiring()
				if e.GetReason() != gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT ||
					!e.GetExpireTime().AsTime().Equal(snap.Session.LastActiveTime.AsTime().Add(4*time.Second)) {
					t.Fatalf("after the policy change: %v, want expiring IDLE_TIMEOUT at the last activity plus 4s", e)
				}
				liveWantTerminated(t, ch, "policy", gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT)
			})
			t.Run("rest/ndjson", func(t *testing.T) {
				t.Parallel()
				c := n.Client(testnode.REST)
				admin := testnode.AdminToken(t, c)
				u := testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: "curl", Password: "curl-password"}).User
				testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, admin,
					&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
						Scope:           &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: u.Id}},
						AbsoluteTimeout: durationpb.New(2 * time.Second),
					}})
				s := testnode.Login(t, c, "curl", "curl-password")
				ctx, cancel := context.WithTimeout(context.Background(), liveWait)
				defer cancel()
				hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, n.BaseURL()+"/v1/sessions:watch", nil)
				if err != nil {
					t.Fatal(err)
				}
				hreq.Header.Set("Authorization", "Bearer "+s.Token)
				resp, err := http.DefaultClient.Do(hreq)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				lines := bufio.NewScanner(resp.Body)
				for lines.Scan() {
					line := lines.Text()
					if !strings.Contains(line, "expiring") {
						continue
					}
					if !strings.HasPrefix(line, `{"result":{"expiring":{"expireTime":"`) || !strings.Contains(line, `"reason":"TERMINATION_REASON_ABSOLUTE_TIMEOUT"`) {
						t.Fatalf("the expiring line: %s", line)
					}
					return
				}
				t.Fatalf("no expiring line: %v", lines.Err())
			})
		})
	}
}

// TestExpiryWarningAcrossNodes: activity on node A that moves an announced idle expiry reaches
// the stream on node B through the log (EVENT_TYPE_SESSION_EXTENDED), which warns of the new one.
func TestExpiryWarningAcrossNodes(t *testing.T) {
	t.Parallel()
	url := testnode.DatabaseURL(t, testnode.Postgres)
	a := testnode.StartWith(t, server.Config{Database: url, ExpiryWarning: 3 * time.Second})
	b := testnode.StartWith(t, server.Config{Database: url, ExpiryWarning: 3 * time.Second})
	ga, gb := a.Client(testnode.GRPC), b.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, ga)
	u := testnode.MustCall[gatehousev1.CreateUserResponse](t, ga, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "roaming", Password: "roaming-password"}).User
	testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, ga, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, admin,
		&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
			Scope:       &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: u.Id}},
			IdleTimeout: durationpb.New(4 * time.Second),
		}})
	s := testnode.Login(t, gb, "roaming", "roaming-password")
	ch := liveWatch(t, b, "grpc", s.Token)
	snap := expiringNext(t, ch, "snapshot").GetSnapshot()
	if snap == nil {
		t.Fatal("the first message is not a snapshot")
	}
	idle := gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT
	wantExpiring(t, expiringNext(t, ch, "the idle warning"), "the idle warning", idle, snap.Session.IdleExpireTime)
	moved := testnode.MustCall[gatehousev1.ValidateSessionResponse](t, ga, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
		&gatehousev1.ValidateSessionRequest{Token: s.Token}).Session
	if !moved.IdleExpireTime.AsTime().After(snap.Session.IdleExpireTime.AsTime()) {
		t.Fatalf("the validation on node A did not move the idle expiry")
	}
	m := expiringNext(t, ch, "after the activity on node A")
	if e := m.GetExpiring(); e != nil && e.ExpireTime == nil {
		m = expiringNext(t, ch, "the warning after the cancel")
	}
	wantExpiring(t, m, "the moved warning", idle, moved.IdleExpireTime)
	// The log carries the extension, with the new expiry, for every node and every auditor.
	extended := testnode.MustCall[gatehousev1.ListEventsResponse](t, gb, gatehousev1.SessionService_ListEvents_FullMethodName, admin,
		&gatehousev1.ListEventsRequest{Types: []gatehousev1.EventType{gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED}, UserId: u.Id}).Events
	if len(extended) == 0 || extended[0].SessionId != s.Session.Id ||
		!extended[0].GetSessionExtended().GetIdleExpireTime().AsTime().Equal(moved.IdleExpireTime.AsTime()) {
		t.Errorf("SESSION_EXTENDED events of the user: %v, want one of session %s to %v", extended, s.Session.Id, moved.IdleExpireTime.AsTime())
	}
	liveWantTerminated(t, ch, "idle across nodes", idle)
}
