package integration_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// toDeadline bounds every wait for the sweeper: far above its 500 ms interval plus the short
// timeouts used here, so that only a session that is never ended fails the test.
const toDeadline = 15 * time.Second

// toAwait polls cond with a short, growing backoff until it reports true, and fails the test if it
// does not within toDeadline.
func toAwait(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toDeadline)
	defer cancel()
	backoff := 20 * time.Millisecond
	var lastErr error
	for {
		ok, err := cond()
		if err != nil {
			lastErr = err
		} else if ok {
			return
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			t.Fatalf("%s: not within %s (last error: %v)", what, toDeadline, lastErr)
		case <-timer.C:
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// toRow is a session's state in the sessions table.
type toRow struct {
	active bool
	reason string
}

func toReadRow(n *testnode.Node, sessionID string) (toRow, error) {
	st := n.Store()
	var r toRow
	err := st.DB.QueryRow(st.Rebind("SELECT active, termination_reason FROM sessions WHERE id = ?"), sessionID).Scan(&r.active, &r.reason)
	return r, err
}

// toAwaitEnded waits until the sweeper has ended a session, then checks that it ended for reason:
// in its row, in a SESSION_TERMINATED event, and in what validation says.
func toAwaitEnded(t *testing.T, n *testnode.Node, c testnode.Invoker, s *gatehousev1.CreateSessionResponse, reason gatehousev1.TerminationReason) {
	t.Helper()
	var row toRow
	toAwait(t, "the sweeper ending session "+s.Session.Id, func() (bool, error) {
		var err error
		row, err = toReadRow(n, s.Session.Id)
		return err == nil && !row.active, err
	})
	if row.reason != reason.String() {
		t.Errorf("the ended session's termination_reason is %q, want %s", row.reason, reason)
	}
	var found []gatehousev1.TerminationReason
	for _, e := range ofType(eventsAfter(t, n, 0), gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED) {
		if e.Event.SessionId == s.Session.Id {
			found = append(found, e.Event.GetSessionTerminated().GetReason())
		}
	}
	if len(found) != 1 || found[0] != reason {
		t.Errorf("SESSION_TERMINATED events for the session: %v, want one with %s", found, reason)
	}
	wantEnded(t, c, "after the sweeper ended it", s.Token, reason)
}

// toUserWithPolicy creates a user and a policy of its own, and returns the user.
func toUserWithPolicy(a *idAdmin, username string, p *gatehousev1.SessionPolicy) *gatehousev1.User {
	a.t.Helper()
	u := a.createUser(username, username+"-password")
	p.Scope = polUser(u.Id)
	polCreate(a, p)
	return u
}

func TestTimeoutIdle(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.GRPC)
			a := newIDAdmin(t, n, c)
			toUserWithPolicy(a, "ida", &gatehousev1.SessionPolicy{IdleTimeout: durationpb.New(2 * time.Second)})
			s := testnode.Login(t, c, "ida", "ida-password")
			if got := s.Session.IdleExpireTime.AsTime().Sub(s.Session.LastActiveTime.AsTime()); got != 2*time.Second {
				t.Errorf("idle expiry %s after the last activity, want 2s", got)
			}
			if got := s.Session.AbsoluteExpireTime.AsTime().Sub(s.Session.CreateTime.AsTime()); got != 24*time.Hour {
				t.Errorf("absolute expiry %s after creation, want the built-in 24h", got)
			}
			// Nothing uses the session: the sweeper ends it for idleness (polling the table does
			// not count as activity; validating would).
			toAwaitEnded(t, n, c, s, gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT)
			mustValidate(t, c, "the administrator's session", a.tok)
		})
	}
}

func TestTimeoutAbsolute(t *testing.T) {
	for _, b := range testnode.Backends {
		for _, p := range []testnode.Protocol{testnode.GRPC, testnode.REST} {
			t.Run(string(b)+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				c := n.Client(p)
				a := newIDAdmin(t, n, c)
				toUserWithPolicy(a, "abe", &gatehousev1.SessionPolicy{AbsoluteTimeout: durationpb.New(2 * time.Second)})
				s := testnode.Login(t, c, "abe", "abe-password")
				if got := s.Session.AbsoluteExpireTime.AsTime().Sub(s.Session.CreateTime.AsTime()); got != 2*time.Second {
					t.Errorf("absolute expiry %s after creation, want 2s", got)
				}
				// Validating while waiting keeps it from idling but not from its absolute timeout.
				toAwait(t, "validation failing after the absolute timeout", func() (bool, error) {
					_, err := validate(c, s.Token)
					if err == nil {
						return false, nil
					}
					if status.Code(err) != codes.Unauthenticated {
						return false, err
					}
					// SESSION_EXPIRED until the sweeper has ended it, then SESSION_TERMINATED.
					return testnode.Reason(err) == "SESSION_TERMINATED", nil
				})
				toAwaitEnded(t, n, c, s, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT)
			})
		}
	}
}

func TestIdleTimeoutSlidesWithActivity(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.GRPC)
			a := newIDAdmin(t, n, c)
			// NOTE: the absolute timeout is far beyond the test's span, so that only idleness can end
			// the session however slowly the machine runs.
			const idle, absolute = 3 * time.Second, 5 * time.Minute
			toUserWithPolicy(a, "ivy", &gatehousev1.SessionPolicy{IdleTimeout: durationpb.New(idle), AbsoluteTimeout: durationpb.New(absolute)})
			s := testnode.Login(t, c, "ivy", "ivy-password")
			created := s.Session.CreateTime.AsTime()

			// A session validated every 500 ms for twice its idle timeout stays valid throughout.
			ticker := time.NewTicker(500 * time.Millisecond)
			for i := range 12 {
				<-ticker.C
				if _, err := validate(c, s.Token); err != nil {
					ticker.Stop()
					t.Fatalf("validation %d of a session in regular use: %v", i+1, err)
				}
			}
			ticker.Stop()
			row, err := toReadRow(n, s.Session.Id)
			if err != nil || !row.active {
				t.Fatalf("after regular use the session row is %+v (%v), want active", row, err)
			}
			got, err := smGet(c, a.tok, s.Session.Id)
			if err != nil {
				t.Fatal(err)
			}
			if !got.LastActiveTime.AsTime().After(created) || !got.IdleExpireTime.AsTime().After(created.Add(idle)) ||
				!got.AbsoluteExpireTime.AsTime().Equal(created.Add(absolute)) {
				t.Errorf("after regular use: created %s, last active %s, idle expiry %s, absolute expiry %s; want the idle expiry to have slid",
					created, got.LastActiveTime.AsTime(), got.IdleExpireTime.AsTime(), got.AbsoluteExpireTime.AsTime())
			}

			// Left alone, it ends for idleness, still before its absolute timeout.
			toAwaitEnded(t, n, c, s, gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT)
			ended, err := smGet(c, a.tok, s.Session.Id)
			if err != nil {
				t.Fatal(err)
			}
			if end := ended.TerminateTime.AsTime(); end.Before(got.IdleExpireTime.AsTime()) {
				t.Errorf("the session ended at %s, before its slid idle expiry %s", end, got.IdleExpireTime.AsTime())
			}
		})
	}
}

func TestTimeoutPolicyChangeAppliesToLiveSessions(t *testing.T) {
	for _, b := range testnode.Backends {
		for _, scope := range []string{"user", "role", "global", "role-grant"} {
			t.Run(string(b)+"/"+scope, func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				c := n.Client(testnode.GRPC)
				a := newIDAdmin(t, n, c)
				// The administrator keeps a long-lived session whatever the global policy says.
				polCreate(a, &gatehousev1.SessionPolicy{Scope: polUser(a.userID), AbsoluteTimeout: durationpb.New(time.Hour)})
				amy := a.createUser("amy", "amy-password")
				a.createRole("temp")

				long := &gatehousev1.SessionPolicy{AbsoluteTimeout: durationpb.New(time.Hour)}
				switch scope {
				case "user":
					long.Scope = polUser(amy.Id)
				case "role", "role-grant":
					long.Scope = polRole("temp")
				case "global":
					long.Scope = polGlobal()
				}
				if scope != "role-grant" {
					a.grantUser("temp", amy.Id)
				}
				p := polCreate(a, long)
				s := testnode.Login(t, c, "amy", "amy-password")
				created := s.Session.CreateTime.AsTime()
				if got := s.Session.AbsoluteExpireTime.AsTime().Sub(created); got != time.Hour && scope != "role-grant" {
					t.Errorf("absolute expiry %s after creation, want 1h", got)
				}
				mustValidate(t, c, "before the change", s.Token)

				// Shorten the absolute timeout: the live session's stored expiry is rewritten in the
				// change's transaction, so its next validation and the sweeper apply it.
				// For role-grant, amy does not hold the role yet: the update changes nothing for
				// her, and the grant brings the role's short timeout to her live session.
				polUpdate(a, &gatehousev1.SessionPolicy{Id: p.Id, AbsoluteTimeout: durationpb.New(2 * time.Second)}, "absolute_timeout")
				if scope == "role-grant" {
					a.grantUser("temp", amy.Id)
				}
				got, err := smGet(c, a.tok, s.Session.Id)
				if err != nil {
					t.Fatal(err)
				}
				if want := created.Add(2 * time.Second); !got.AbsoluteExpireTime.AsTime().Equal(want) || got.IdleExpireTime.AsTime().After(want) {
					t.Errorf("after shortening the policy: absolute expiry %s, idle expiry %s; want both at most %s",
						got.AbsoluteExpireTime.AsTime(), got.IdleExpireTime.AsTime(), want)
				}
				toAwait(t, "validation failing after the shortened timeout", func() (bool, error) {
					_, err := validate(c, s.Token)
					if err != nil && status.Code(err) != codes.Unauthenticated {
						return false, err
					}
					return err != nil, nil
				})
				toAwaitEnded(t, n, c, s, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT)
				mustValidate(t, c, "the administrator's session", a.tok)

				// Lengthening it again does not bring the ended session back.
				polUpdate(a, &gatehousev1.SessionPolicy{Id: p.Id, AbsoluteTimeout: durationpb.New(time.Hour)}, "absolute_timeout")
				wantEnded(t, c, "after lengthening the policy", s.Token, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT)
				fresh := testnode.Login(t, c, "amy", "amy-password")
				if got := fresh.Session.AbsoluteExpireTime.AsTime().Sub(fresh.Session.CreateTime.AsTime()); got != time.Hour {
					t.Errorf("a new session's absolute expiry: %s after creation, want 1h", got)
				}
			})
		}
	}
}

// TestTimeoutRoleDeletionReleasesSessions deletes a role whose policy set a short absolute timeout:
// its holders' live sessions must then follow the policy that resolves without it.
func TestTimeoutRoleDeletionReleasesSessions(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.GRPC)
			a := newIDAdmin(t, n, c)
			bo := a.createUser("bo", "bo-password")
			a.createRole("temp")
			a.grantUser("temp", bo.Id)
			polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("temp"), AbsoluteTimeout: durationpb.New(time.Minute)})
			s := testnode.Login(t, c, "bo", "bo-password")
			created := s.Session.CreateTime.AsTime()
			if got := s.Session.AbsoluteExpireTime.AsTime().Sub(created); got != time.Minute {
				t.Fatalf("absolute expiry %s after creation, want the role's 1m", got)
			}
			mutate[gatehousev1.DeleteRoleResponse](a, gatehousev1.IdentityService_DeleteRole_FullMethodName, &gatehousev1.DeleteRoleRequest{Name: "temp"})
			resolved := polResolve(t, c, a.tok, bo.Id)
			got, err := smGet(c, a.tok, s.Session.Id)
			if err != nil {
				t.Fatal(err)
			}
			if want := created.Add(resolved.AbsoluteTimeout.AsDuration()); !got.AbsoluteExpireTime.AsTime().Equal(want) {
				t.Errorf("after deleting the role (and its policy) the session's absolute expiry is %s after creation; "+
					"the resolved policy says %s", got.AbsoluteExpireTime.AsTime().Sub(created), resolved.AbsoluteTimeout.AsDuration())
			}
		})
	}
}
