package integration_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// Two nodes on one PostgreSQL database (ARCHITECTURE.md sections 7 and 11): the concurrent-session
// limit holds for logins racing on both nodes, and an ending acknowledged by one node is immediate
// on the other.

// mnTwoNodes starts two nodes on one fresh PostgreSQL database and returns native gRPC clients of
// both.
func mnTwoNodes(t *testing.T) (a, b *testnode.Node, ca, cb testnode.Invoker) {
	t.Helper()
	url := testnode.DatabaseURL(t, testnode.Postgres)
	a, b = testnode.StartOn(t, url), testnode.StartOn(t, url)
	return a, b, a.Client(testnode.GRPC), b.Client(testnode.GRPC)
}

// mnLogin is the outcome of one racing login.
type mnLogin struct {
	node int
	resp *gatehousev1.CreateSessionResponse
	err  error
}

// mnSessionRow is a row of the sessions table.
type mnSessionRow struct {
	typ    string
	active bool
	reason string
}

// mnSessions reads every session of a user from the sessions table.
func mnSessions(t *testing.T, n *testnode.Node, userID string) map[string]mnSessionRow {
	t.Helper()
	st := n.Store()
	ctx, cancel := context.WithTimeout(t.Context(), limCallTimeout)
	defer cancel()
	rows, err := st.DB.QueryContext(ctx, st.Rebind("SELECT id, type, active, termination_reason FROM sessions WHERE user_id = ?"), userID)
	if err != nil {
		t.Fatalf("reading sessions: %v", err)
	}
	defer rows.Close()
	out := map[string]mnSessionRow{}
	for rows.Next() {
		var id string
		var r mnSessionRow
		if err := rows.Scan(&id, &r.typ, &r.active, &r.reason); err != nil {
			t.Fatalf("reading sessions: %v", err)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading sessions: %v", err)
	}
	return out
}

// mnCounted reports whether a stored session type counts under the default counted types.
func mnCounted(typ string) bool {
	switch entsession.Type(typ) {
	case entsession.TypeWebBrowser, entsession.TypeMobileBrowser, entsession.TypeMobileApp:
		return true
	}
	return false
}

// TestConcurrentLoginsTwoNodes races 50 password logins of one user, split across two nodes, against
// a user policy of 3 sessions, 20 times: evict-oldest in even rounds, deny-new in odd ones. After
// each round exactly 3 counted sessions are active, and every other login of the round was either
// evicted (ended with CONCURRENT_LIMIT, with its event) or denied (CONCURRENT_SESSION_LIMIT).
func TestConcurrentLoginsTwoNodes(t *testing.T) {
	t.Parallel()
	const (
		rounds = 20
		logins = 50
		limit  = 3
	)
	a, _, ca, cb := mnTwoNodes(t)
	clients := []testnode.Invoker{ca, cb}
	admin := testnode.AdminToken(t, ca)
	u := limNewUser(t, ca, admin, "racer")
	p := limCreatePolicy(t, cb, admin, limUserScope(u.Id), limit, limEvict)
	types := []gatehousev1.SessionType{limWeb, limMobileBrowser, limMobileApp}

	began := time.Now()
	prevRows := 0
	for round := range rounds {
		action := limEvict
		if round%2 == 1 {
			action = limDeny
		}
		what := fmt.Sprintf("round %d (%s)", round, action)
		// Switch the action through one node; the logins of both nodes must obey it.
		p = limSetAction(t, clients[round%2], admin, p, action)

		roundStart := time.Now()
		results := make([]mnLogin, logins)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range logins {
			wg.Go(func() {
				<-gate
				node := i % 2
				resp, err := limLogin(t, clients[node], "racer", types[i%len(types)])
				results[i] = mnLogin{node: node, resp: resp, err: err}
			})
		}
		close(gate)
		wg.Wait()
		took := time.Since(roundStart)

		var successes, denials []mnLogin
		for i, r := range results {
			switch {
			case r.err == nil:
				successes = append(successes, r)
			case status.Code(r.err) == codes.ResourceExhausted && testnode.Reason(r.err) == "CONCURRENT_SESSION_LIMIT":
				denials = append(denials, r)
			default:
				t.Errorf("%s: login %d on node %d: %v (reason %q), want success or RESOURCE_EXHAUSTED CONCURRENT_SESSION_LIMIT",
					what, i, r.node, r.err, testnode.Reason(r.err))
			}
		}
		if len(successes)+len(denials) != logins {
			t.Errorf("%s: %d successes + %d denials = %d, want %d", what, len(successes), len(denials), len(successes)+len(denials), logins)
		}

		rows := mnSessions(t, a, u.Id)
		if got := len(rows) - prevRows; got != len(successes) {
			t.Errorf("%s: %d new session rows for %d successful logins (denied logins must write nothing)", what, got, len(successes))
		}
		prevRows = len(rows)
		var active []string
		for id, r := range rows {
			if r.active && mnCounted(r.typ) {
				active = append(active, id)
			}
		}
		if len(active) != limit {
			t.Errorf("%s: %d active counted sessions in the sessions table, want exactly %d", what, len(active), limit)
		}

		// Every successful login's session is either one of the active ones or was evicted; the
		// evicted ones are reported exactly once in evicted_session_ids and have exactly one
		// SESSION_TERMINATED event with CONCURRENT_LIMIT.
		ends := limTerminations(t, a, u.Id)
		reported := map[string]int{}
		for _, s := range successes {
			for _, id := range s.resp.EvictedSessionIds {
				reported[id]++
			}
		}
		evicted := 0
		for _, s := range successes {
			id := s.resp.Session.GetId()
			row, ok := rows[id]
			switch {
			case !ok:
				t.Errorf("%s: session %s of a successful login is not in the sessions table", what, id)
			case row.active:
				if !slices.Contains(active, id) {
					t.Errorf("%s: active session %s of type %s is not counted", what, id, row.typ)
				}
				if reported[id] != 0 {
					t.Errorf("%s: active session %s was reported evicted %d times", what, id, reported[id])
				}
			default:
				evicted++
				if row.reason != limConcurrent.String() {
					t.Errorf("%s: session %s ended with %q, want %s", what, id, row.reason, limConcurrent)
				}
				if rs := ends[id]; !slices.Equal(rs, []gatehousev1.TerminationReason{limConcurrent}) {
					t.Errorf("%s: evicted session %s has SESSION_TERMINATED events with reasons %v, want exactly [%s]", what, id, rs, limConcurrent)
				}
				if reported[id] != 1 {
					t.Errorf("%s: evicted session %s was reported in evicted_session_ids %d times, want once", what, id, reported[id])
				}
			}
			delete(reported, id)
		}
		for id, n := range reported {
			t.Errorf("%s: evicted_session_ids names %s (%d times), which is no session of this round", what, id, n)
		}
		for _, id := range active {
			if !slices.ContainsFunc(successes, func(s mnLogin) bool { return s.resp.Session.GetId() == id }) {
				t.Errorf("%s: active session %s is not one of this round's logins", what, id)
			}
		}

		switch action {
		case limEvict:
			if len(denials) != 0 {
				t.Errorf("%s: %d logins denied under evict-oldest", what, len(denials))
			}
			if evicted != len(successes)-limit {
				t.Errorf("%s: %d evicted, want successes - %d = %d", what, evicted, limit, len(successes)-limit)
			}
		case limDeny:
			if len(successes) != limit || evicted != 0 {
				t.Errorf("%s: %d successes and %d evicted under deny-new from no sessions, want %d and 0", what, len(successes), evicted, limit)
			}
		}
		t.Logf("%s: %d successes, %d denials, %d evicted, %d active, in %v", what, len(successes), len(denials), evicted, len(active), took.Round(time.Millisecond))

		// End the round's sessions through the other node.
		ended := limMust[gatehousev1.TerminateUserSessionsResponse](t, clients[(round+1)%2],
			gatehousev1.SessionService_TerminateUserSessions_FullMethodName, admin,
			&gatehousev1.TerminateUserSessionsRequest{UserId: u.Id, Note: "end of " + what}).TerminatedSessionIds
		if !limSameSet(ended, active) {
			t.Errorf("%s: TerminateUserSessions ended %v, want the active sessions %v", what, ended, active)
		}
		if t.Failed() {
			t.Fatalf("stopping after %s", what)
		}
	}
	t.Logf("%d rounds of %d concurrent logins on two nodes took %v", rounds, logins, time.Since(began).Round(time.Millisecond))
}

// TestTerminateIsImmediateAcrossNodes validates a session in a tight loop on node B while node A
// ends it, 20 times: no validation that starts after TerminateSession has returned succeeds.
func TestTerminateIsImmediateAcrossNodes(t *testing.T) {
	t.Parallel()
	const runs = 20
	_, _, ca, cb := mnTwoNodes(t)
	admin := testnode.AdminToken(t, ca)
	limNewUser(t, ca, admin, "victor")
	for run := range runs {
		what := fmt.Sprintf("run %d", run)
		// Log in on either node; validation is always on B and the ending on A.
		login := limMustLogin(t, []testnode.Invoker{ca, cb}[run%2], what, "victor", limWeb)
		mnTerminateWhileValidating(t, what, ca, cb, admin, login)
		if t.Failed() {
			t.Fatalf("stopping after %s", what)
		}
	}
}

// mnValidation is what the validating goroutine saw.
type mnValidation struct {
	preAckOK, preAckEnded, postAckEnded int
	violations                          []string // successes of validations started after the acknowledgement
	err                                 error    // a validation that failed otherwise
}

// mnTerminateWhileValidating ends login's session through ca while cb validates it in a loop.
func mnTerminateWhileValidating(t *testing.T, what string, ca, cb testnode.Invoker, admin string, login *gatehousev1.CreateSessionResponse) {
	t.Helper()
	// postAck is how many validations after the acknowledgement the run checks.
	const postAck = 20
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	var acked atomic.Bool // set right after TerminateSession returned
	validating := make(chan struct{})
	done := make(chan mnValidation, 1)
	go func() {
		var v mnValidation
		defer func() { done <- v }()
		for {
			// NOTE: read before the call starts, so a success counts as a violation only when the
			// whole validation began after the acknowledgement.
			afterAck := acked.Load()
			resp, err := limValidate(ctx, cb, login.Token)
			switch {
			case err == nil && resp.Session.GetId() != login.Session.Id:
				v.err = fmt.Errorf("ValidateSession returned session %s, want %s", resp.Session.GetId(), login.Session.Id)
				return
			case err == nil && afterAck:
				v.violations = append(v.violations, fmt.Sprintf("validation %d after the acknowledgement succeeded (active %v)",
					v.postAckEnded+len(v.violations)+1, resp.Session.GetActive()))
			case err == nil:
				v.preAckOK++
				if v.preAckOK == 1 {
					close(validating)
				}
			case status.Code(err) == codes.Unauthenticated && testnode.Reason(err) == "SESSION_TERMINATED":
				if got := testnode.Metadata(err)["termination_reason"]; got != gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN.String() {
					v.err = fmt.Errorf("termination_reason %q, want REVOKED_BY_ADMIN", got)
					return
				}
				if !afterAck {
					if v.preAckOK == 0 {
						v.err = fmt.Errorf("the session ended before it was ever validated")
						return
					}
					v.preAckEnded++
					continue
				}
				v.postAckEnded++
				if v.postAckEnded+len(v.violations) >= postAck {
					return
				}
			default:
				v.err = fmt.Errorf("ValidateSession: %w (reason %q)", err, testnode.Reason(err))
				return
			}
		}
	}()

	// Wait for the loop to be validating successfully on B, then end the session on A.
	select {
	case <-validating:
	case v := <-done:
		t.Fatalf("%s: the validator stopped before its first success: %v", what, v.err)
	case <-ctx.Done():
		t.Fatalf("%s: no successful validation on node B before the deadline", what)
	}
	resp, err := testnode.Call[gatehousev1.TerminateSessionResponse](ctx, ca, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
		&gatehousev1.TerminateSessionRequest{SessionId: login.Session.Id, Note: what})
	acked.Store(true)
	if err != nil {
		cancel()
		<-done
		t.Fatalf("%s: TerminateSession on node A: %v", what, err)
	}
	if resp.Session.GetActive() || resp.Session.GetTerminationReason() != gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN {
		t.Errorf("%s: TerminateSession returned active %v reason %s, want ended REVOKED_BY_ADMIN",
			what, resp.Session.GetActive(), resp.Session.GetTerminationReason())
	}

	v := <-done // the validator returns after postAck validations, or at the deadline with an error
	if v.err != nil {
		t.Errorf("%s: validating on node B: %v", what, v.err)
	}
	for _, s := range v.violations {
		t.Errorf("%s: %s", what, s)
	}
	if v.postAckEnded+len(v.violations) < postAck && v.err == nil {
		t.Errorf("%s: only %d validations after the acknowledgement", what, v.postAckEnded+len(v.violations))
	}
	t.Logf("%s: %d successful validations before the acknowledgement, %d refused while it was in flight, %d refused after it",
		what, v.preAckOK, v.preAckEnded, v.postAckEnded)
}
