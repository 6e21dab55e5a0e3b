package integration_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// The concurrent-session limit (ARCHITECTURE.md sections 7 and 8, API.md SessionService and
// PolicyService): eviction of the oldest counted session, deny-new, counted types, role policies and
// the resolution of several of them, through REST and native gRPC on SQLite and PostgreSQL.

// limCallTimeout bounds every RPC of these tests.
const limCallTimeout = 2 * time.Minute

// limPassword is the password of every user these tests create.
const limPassword = "limit-test-password"

// Short names for the enums the tests use most.
const (
	limWeb           = gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
	limMobileBrowser = gatehousev1.SessionType_SESSION_TYPE_MOBILE_BROWSER
	limMobileApp     = gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP
	limAPI           = gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE

	limEvict       = gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST
	limDeny        = gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW
	limUnspecified = gatehousev1.LimitAction_LIMIT_ACTION_UNSPECIFIED

	limConcurrent = gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT
)

// limEnv is one node under test, a client of one front, and an administrator's token.
type limEnv struct {
	n     *testnode.Node
	c     testnode.Invoker
	admin string
}

// limForEach runs f as a parallel subtest per backend and per front (REST and native gRPC), each
// with its own node.
func limForEach(t *testing.T, f func(t *testing.T, e *limEnv)) {
	t.Helper()
	for _, b := range testnode.Backends {
		for _, p := range []testnode.Protocol{testnode.REST, testnode.GRPC} {
			t.Run(string(b)+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				c := n.Client(p)
				f(t, &limEnv{n: n, c: c, admin: testnode.AdminToken(t, c)})
			})
		}
	}
}

// limCall calls method with a deadline.
func limCall[R any, PR interface {
	*R
	proto.Message
}](t testing.TB, c testnode.Invoker, method, token string, req proto.Message) (PR, error) {
	ctx, cancel := context.WithTimeout(t.Context(), limCallTimeout)
	defer cancel()
	return testnode.Call[R, PR](ctx, c, method, token, req)
}

// limMust is limCall that fails the test on an error.
func limMust[R any, PR interface {
	*R
	proto.Message
}](t testing.TB, c testnode.Invoker, method, token string, req proto.Message) PR {
	t.Helper()
	resp, err := limCall[R, PR](t, c, method, token, req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return resp
}

// limNewUser creates a user with limPassword.
func limNewUser(t testing.TB, c testnode.Invoker, admin, username string) *gatehousev1.User {
	t.Helper()
	return limMust[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: username, Email: username + "@example.com", Password: limPassword}).User
}

// limNewRole creates a role and grants it to the users.
func limNewRole(t testing.TB, e *limEnv, role string, users ...*gatehousev1.User) {
	t.Helper()
	limMust[gatehousev1.CreateRoleResponse](t, e.c, gatehousev1.IdentityService_CreateRole_FullMethodName, e.admin,
		&gatehousev1.CreateRoleRequest{Name: role})
	for _, u := range users {
		limMust[gatehousev1.GrantRoleResponse](t, e.c, gatehousev1.IdentityService_GrantRole_FullMethodName, e.admin,
			&gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
	}
}

// limLogin logs username in with a password and a session type.
func limLogin(t testing.TB, c testnode.Invoker, username string, typ gatehousev1.SessionType) (*gatehousev1.CreateSessionResponse, error) {
	return limCall[gatehousev1.CreateSessionResponse](t, c, gatehousev1.SessionService_CreateSession_FullMethodName, "",
		&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: username, Password: limPassword}},
			Type:       typ,
			Client:     &gatehousev1.ClientInfo{DeviceName: typ.String()},
		})
}

// limMustLogin logs in and checks which sessions the login evicted.
func limMustLogin(t testing.TB, c testnode.Invoker, what, username string, typ gatehousev1.SessionType, wantEvicted ...string) *gatehousev1.CreateSessionResponse {
	t.Helper()
	resp, err := limLogin(t, c, username, typ)
	if err != nil {
		t.Fatalf("%s: logging in as %s with %s: %v", what, username, typ, err)
	}
	if !limSameSet(resp.EvictedSessionIds, wantEvicted) {
		t.Errorf("%s: CreateSession evicted_session_ids = %v, want %v", what, resp.EvictedSessionIds, wantEvicted)
	}
	return resp
}

// limWantDenied logs in and expects the deny-new answer: RESOURCE_EXHAUSTED, CONCURRENT_SESSION_LIMIT.
func limWantDenied(t testing.TB, c testnode.Invoker, what, username string, typ gatehousev1.SessionType) {
	t.Helper()
	resp, err := limLogin(t, c, username, typ)
	if err == nil {
		t.Errorf("%s: CreateSession succeeded (session %s, evicted %v), want RESOURCE_EXHAUSTED CONCURRENT_SESSION_LIMIT",
			what, resp.Session.GetId(), resp.EvictedSessionIds)
		return
	}
	if status.Code(err) != codes.ResourceExhausted || testnode.Reason(err) != "CONCURRENT_SESSION_LIMIT" {
		t.Errorf("%s: CreateSession = %v (reason %q), want RESOURCE_EXHAUSTED CONCURRENT_SESSION_LIMIT", what, err, testnode.Reason(err))
	}
}

// limValidate validates a token.
func limValidate(ctx context.Context, c testnode.Invoker, token string) (*gatehousev1.ValidateSessionResponse, error) {
	return testnode.Call[gatehousev1.ValidateSessionResponse](ctx, c, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
		&gatehousev1.ValidateSessionRequest{Token: token})
}

// limWantValid checks that each login's token still validates, for its own session.
func limWantValid(t testing.TB, c testnode.Invoker, what string, logins ...*gatehousev1.CreateSessionResponse) {
	t.Helper()
	for i, l := range logins {
		ctx, cancel := context.WithTimeout(t.Context(), limCallTimeout)
		v, err := limValidate(ctx, c, l.Token)
		cancel()
		if err != nil {
			t.Errorf("%s: session %d (%s, %s): ValidateSession = %v (reason %q, metadata %v), want valid",
				what, i, l.Session.GetId(), l.Session.GetType(), err, testnode.Reason(err), testnode.Metadata(err))
			continue
		}
		if v.Session.GetId() != l.Session.GetId() || !v.Session.GetActive() {
			t.Errorf("%s: session %d: ValidateSession returned session %s (active %v), want %s active",
				what, i, v.Session.GetId(), v.Session.GetActive(), l.Session.GetId())
		}
	}
}

// limWantEnded checks that each login's token is refused as SESSION_TERMINATED for reason.
func limWantEnded(t testing.TB, c testnode.Invoker, what string, reason gatehousev1.TerminationReason, logins ...*gatehousev1.CreateSessionResponse) {
	t.Helper()
	for i, l := range logins {
		ctx, cancel := context.WithTimeout(t.Context(), limCallTimeout)
		_, err := limValidate(ctx, c, l.Token)
		cancel()
		if status.Code(err) != codes.Unauthenticated || testnode.Reason(err) != "SESSION_TERMINATED" {
			t.Errorf("%s: session %d (%s): ValidateSession = %v (reason %q), want UNAUTHENTICATED SESSION_TERMINATED",
				what, i, l.Session.GetId(), err, testnode.Reason(err))
			continue
		}
		if got := testnode.Metadata(err)["termination_reason"]; got != reason.String() {
			t.Errorf("%s: session %d (%s): termination_reason = %q, want %s", what, i, l.Session.GetId(), got, reason)
		}
	}
}

// limActive lists the user's active sessions as the administrator and checks that they are
// exactly want.
func limActive(t testing.TB, e *limEnv, what, userID string, want ...*gatehousev1.CreateSessionResponse) {
	t.Helper()
	resp := limMust[gatehousev1.ListSessionsResponse](t, e.c, gatehousev1.SessionService_ListSessions_FullMethodName, e.admin,
		&gatehousev1.ListSessionsRequest{UserId: userID, PageSize: 1000})
	var got, wantIDs []string
	for _, s := range resp.Sessions {
		got = append(got, s.Id)
		if !s.Active {
			t.Errorf("%s: ListSessions without include_inactive returned ended session %s (%s)", what, s.Id, s.TerminationReason)
		}
	}
	for _, l := range want {
		wantIDs = append(wantIDs, l.Session.GetId())
	}
	if !limSameSet(got, wantIDs) {
		t.Errorf("%s: active sessions (ListSessions as admin) = %v, want %v", what, got, wantIDs)
	}
}

// limSessionCount counts every session of the user, active or not, as the administrator.
func limSessionCount(t testing.TB, e *limEnv, userID string) int {
	t.Helper()
	return len(limMust[gatehousev1.ListSessionsResponse](t, e.c, gatehousev1.SessionService_ListSessions_FullMethodName, e.admin,
		&gatehousev1.ListSessionsRequest{UserId: userID, IncludeInactive: true, PageSize: 1000}).Sessions)
}

func limUserScope(id string) *gatehousev1.PolicyScope {
	return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: id}}
}

func limRoleScope(role string) *gatehousev1.PolicyScope {
	return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: role}}
}

// limCreatePolicy creates a policy with a limit through c; onLimit may be unspecified (the policy
// leaves the action unset) and counted may be empty (the policy leaves counted types unset).
func limCreatePolicy(t testing.TB, c testnode.Invoker, admin string, scope *gatehousev1.PolicyScope, maxSessions int32,
	onLimit gatehousev1.LimitAction, counted ...gatehousev1.SessionType) *gatehousev1.SessionPolicy {
	t.Helper()
	p := limMust[gatehousev1.CreateSessionPolicyResponse](t, c, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, admin,
		&gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
			Scope: scope, MaxSessions: proto.Int32(maxSessions), OnLimit: onLimit, CountedTypes: counted,
		}}).Policy
	if p.GetMaxSessions() != maxSessions || p.OnLimit != onLimit || !slices.Equal(p.CountedTypes, counted) {
		t.Fatalf("CreateSessionPolicy returned max_sessions %d on_limit %s counted %v, want %d %s %v",
			p.GetMaxSessions(), p.OnLimit, p.CountedTypes, maxSessions, onLimit, counted)
	}
	return p
}

// limSetAction changes only the policy's on_limit, through c.
func limSetAction(t testing.TB, c testnode.Invoker, admin string, p *gatehousev1.SessionPolicy, action gatehousev1.LimitAction) *gatehousev1.SessionPolicy {
	t.Helper()
	out := limMust[gatehousev1.UpdateSessionPolicyResponse](t, c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, admin,
		&gatehousev1.UpdateSessionPolicyRequest{
			Policy:     &gatehousev1.SessionPolicy{Id: p.Id, OnLimit: action},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"on_limit"}},
		}).Policy
	if out.OnLimit != action || out.GetMaxSessions() != p.GetMaxSessions() || !slices.Equal(out.CountedTypes, p.CountedTypes) {
		t.Fatalf("UpdateSessionPolicy(on_limit %s) returned %v, want only on_limit changed from %v", action, out, p)
	}
	return out
}

// limSetMax changes only the policy's max_sessions, through c.
func limSetMax(t testing.TB, c testnode.Invoker, admin string, p *gatehousev1.SessionPolicy, maxSessions int32) *gatehousev1.SessionPolicy {
	t.Helper()
	out := limMust[gatehousev1.UpdateSessionPolicyResponse](t, c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, admin,
		&gatehousev1.UpdateSessionPolicyRequest{
			Policy:     &gatehousev1.SessionPolicy{Id: p.Id, MaxSessions: proto.Int32(maxSessions)},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"max_sessions"}},
		}).Policy
	if out.GetMaxSessions() != maxSessions || out.OnLimit != p.OnLimit || !slices.Equal(out.CountedTypes, p.CountedTypes) {
		t.Fatalf("UpdateSessionPolicy(max_sessions %d) returned %v, want only max_sessions changed from %v", maxSessions, out, p)
	}
	return out
}

// limResolved is the part of a resolved policy that the limit depends on, with sources written as
// "user:ID", "role:NAME", "global" or "default" and sorted.
type limResolved struct {
	Max         int32 // -1: no limit
	OnLimit     gatehousev1.LimitAction
	Counted     []gatehousev1.SessionType
	MaxFrom     []string
	OnLimitFrom []string
	CountedFrom []string
}

func limSources(src *gatehousev1.PolicySource) []string {
	var out []string
	if src.GetBuiltInDefault() {
		out = append(out, "default")
	}
	for _, sc := range src.GetScopes() {
		switch k := sc.Kind.(type) {
		case *gatehousev1.PolicyScope_Global:
			out = append(out, "global")
		case *gatehousev1.PolicyScope_Role:
			out = append(out, "role:"+k.Role)
		case *gatehousev1.PolicyScope_UserId:
			out = append(out, "user:"+k.UserId)
		}
	}
	slices.Sort(out)
	return out
}

// limResolve resolves the user's policy as the administrator.
func limResolve(t testing.TB, e *limEnv, userID string) limResolved {
	t.Helper()
	r := limMust[gatehousev1.ResolveSessionPolicyResponse](t, e.c, gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, e.admin,
		&gatehousev1.ResolveSessionPolicyRequest{UserId: userID,
			Consistency: &gatehousev1.Consistency{Requirement: &gatehousev1.Consistency_FullyConsistent{FullyConsistent: true}}})
	out := limResolved{
		Max: -1, OnLimit: r.OnLimit, Counted: r.CountedTypes,
		MaxFrom: limSources(r.MaxSessionsSource), OnLimitFrom: limSources(r.OnLimitSource), CountedFrom: limSources(r.CountedTypesSource),
	}
	if r.MaxSessions != nil {
		out.Max = *r.MaxSessions
	}
	return out
}

// limWantResolved checks the limit fields of the user's resolved policy.
func limWantResolved(t testing.TB, e *limEnv, what, userID string, want limResolved) {
	t.Helper()
	got := limResolve(t, e, userID)
	if got.Max != want.Max || !slices.Equal(got.MaxFrom, want.MaxFrom) {
		t.Errorf("%s: resolved max_sessions = %d from %v, want %d from %v", what, got.Max, got.MaxFrom, want.Max, want.MaxFrom)
	}
	if got.OnLimit != want.OnLimit || !slices.Equal(got.OnLimitFrom, want.OnLimitFrom) {
		t.Errorf("%s: resolved on_limit = %s from %v, want %s from %v", what, got.OnLimit, got.OnLimitFrom, want.OnLimit, want.OnLimitFrom)
	}
	if want.Counted != nil && (!slices.Equal(got.Counted, want.Counted) || !slices.Equal(got.CountedFrom, want.CountedFrom)) {
		t.Errorf("%s: resolved counted_types = %v from %v, want %v from %v", what, got.Counted, got.CountedFrom, want.Counted, want.CountedFrom)
	}
}

// limEvent is a decoded row of the events table.
type limEvent struct {
	ID        int64
	SessionID string
	Event     *gatehousev1.Event
}

// limEvents reads the events of one type about one user from the node's events table, decoding
// each payload as a gatehouse.v1.Event and checking it against the row's columns.
func limEvents(t testing.TB, n *testnode.Node, userID string, typ gatehousev1.EventType) []limEvent {
	t.Helper()
	st := n.Store()
	ctx, cancel := context.WithTimeout(t.Context(), limCallTimeout)
	defer cancel()
	rows, err := st.DB.QueryContext(ctx, st.Rebind("SELECT id, type, user_id, session_id, payload FROM events WHERE user_id = ? AND type = ? ORDER BY id"),
		userID, typ.String())
	if err != nil {
		t.Fatalf("reading events: %v", err)
	}
	defer rows.Close()
	var out []limEvent
	for rows.Next() {
		var e limEvent
		var rowType, rowUser string
		var payload []byte
		if err := rows.Scan(&e.ID, &rowType, &rowUser, &e.SessionID, &payload); err != nil {
			t.Fatalf("reading events: %v", err)
		}
		e.Event = &gatehousev1.Event{}
		if err := proto.Unmarshal(payload, e.Event); err != nil {
			t.Fatalf("event %d: the payload is not a gatehouse.v1.Event: %v", e.ID, err)
		}
		if e.Event.Type.String() != rowType || e.Event.UserId != rowUser || e.Event.SessionId != e.SessionID {
			t.Errorf("event %d: columns (type %s, user %s, session %s) disagree with the payload (type %s, user %s, session %s)",
				e.ID, rowType, rowUser, e.SessionID, e.Event.Type, e.Event.UserId, e.Event.SessionId)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading events: %v", err)
	}
	return out
}

// limTerminations returns the reasons of the SESSION_TERMINATED events of a user's sessions, by
// session id (a session ended once has exactly one).
func limTerminations(t testing.TB, n *testnode.Node, userID string) map[string][]gatehousev1.TerminationReason {
	t.Helper()
	out := map[string][]gatehousev1.TerminationReason{}
	for _, e := range limEvents(t, n, userID, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED) {
		out[e.SessionID] = append(out[e.SessionID], e.Event.GetSessionTerminated().GetReason())
	}
	return out
}

// limWantTerminations checks that each login's session has exactly one SESSION_TERMINATED event,
// with reason.
func limWantTerminations(t testing.TB, what string, got map[string][]gatehousev1.TerminationReason, reason gatehousev1.TerminationReason,
	logins ...*gatehousev1.CreateSessionResponse) {
	t.Helper()
	for _, l := range logins {
		if rs := got[l.Session.GetId()]; !slices.Equal(rs, []gatehousev1.TerminationReason{reason}) {
			t.Errorf("%s: SESSION_TERMINATED events of session %s have reasons %v, want exactly [%s]", what, l.Session.GetId(), rs, reason)
		}
	}
}

// limWantNoTermination checks that no SESSION_TERMINATED event names the logins' sessions.
func limWantNoTermination(t testing.TB, what string, got map[string][]gatehousev1.TerminationReason, logins ...*gatehousev1.CreateSessionResponse) {
	t.Helper()
	for _, l := range logins {
		if rs, ok := got[l.Session.GetId()]; ok {
			t.Errorf("%s: session %s (%s) has SESSION_TERMINATED events %v, want none", what, l.Session.GetId(), l.Session.GetType(), rs)
		}
	}
}

func limSameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestLimitEvictOldest: with a user policy of one session (evict-oldest by default), the phone's
// login ends the laptop's session, which then says why; API tokens are not counted and never
// evicted.
func TestLimitEvictOldest(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		u := limNewUser(t, e.c, e.admin, "dana")
		limCreatePolicy(t, e.c, e.admin, limUserScope(u.Id), 1, limUnspecified)
		limWantResolved(t, e, "user policy of 1", u.Id, limResolved{
			Max: 1, MaxFrom: []string{"user:" + u.Id},
			OnLimit: limEvict, OnLimitFrom: []string{"default"},
			Counted: []gatehousev1.SessionType{limWeb, limMobileBrowser, limMobileApp}, CountedFrom: []string{"default"},
		})

		apiBefore := limMustLogin(t, e.c, "API token before", "dana", limAPI)
		laptop := limMustLogin(t, e.c, "laptop", "dana", limWeb)
		phone := limMustLogin(t, e.c, "phone", "dana", limMobileApp, laptop.Session.Id)

		limWantEnded(t, e.c, "laptop after the phone's login", limConcurrent, laptop)
		limWantValid(t, e.c, "after the phone's login", phone, apiBefore)

		apiAfter := limMustLogin(t, e.c, "API token after", "dana", limAPI)
		limWantValid(t, e.c, "after the second API token", phone, apiBefore, apiAfter)

		tablet := limMustLogin(t, e.c, "tablet", "dana", limMobileBrowser, phone.Session.Id)
		limWantEnded(t, e.c, "phone after the tablet's login", limConcurrent, phone)
		limWantValid(t, e.c, "after the tablet's login", tablet, apiBefore, apiAfter)
		limActive(t, e, "after the tablet's login", u.Id, apiBefore, apiAfter, tablet)

		// The ended session reads as ended, for the eviction.
		got := limMust[gatehousev1.GetSessionResponse](t, e.c, gatehousev1.SessionService_GetSession_FullMethodName, e.admin,
			&gatehousev1.GetSessionRequest{SessionId: laptop.Session.Id}).Session
		if got.Active || got.TerminationReason != limConcurrent || got.TerminateTime == nil {
			t.Errorf("GetSession(laptop) = active %v, reason %s, terminate_time %v; want ended with CONCURRENT_LIMIT",
				got.Active, got.TerminationReason, got.TerminateTime)
		}

		ends := limTerminations(t, e.n, u.Id)
		limWantTerminations(t, "events", ends, limConcurrent, laptop, phone)
		limWantNoTermination(t, "events", ends, apiBefore, apiAfter, tablet)
		if len(ends) != 2 {
			t.Errorf("SESSION_TERMINATED events name sessions %v, want only the laptop's and the phone's", ends)
		}
	})
}

// TestLimitRolePolicy: "at most 2 for everyone holding contractor": the third login of a contractor
// evicts the oldest; a user without the role is not limited.
func TestLimitRolePolicy(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		carl := limNewUser(t, e.c, e.admin, "carl")
		limNewUser(t, e.c, e.admin, "erin")
		limNewRole(t, e, "contractor", carl)
		limCreatePolicy(t, e.c, e.admin, limRoleScope("contractor"), 2, limUnspecified)
		limWantResolved(t, e, "contractor", carl.Id, limResolved{
			Max: 2, MaxFrom: []string{"role:contractor"}, OnLimit: limEvict, OnLimitFrom: []string{"default"},
		})

		s1 := limMustLogin(t, e.c, "first", "carl", limWeb)
		s2 := limMustLogin(t, e.c, "second", "carl", limMobileApp)
		s3 := limMustLogin(t, e.c, "third", "carl", limWeb, s1.Session.Id)
		limWantEnded(t, e.c, "oldest after the third login", limConcurrent, s1)
		limWantValid(t, e.c, "after the third login", s2, s3)
		limActive(t, e, "after the third login", carl.Id, s2, s3)
		ends := limTerminations(t, e.n, carl.Id)
		limWantTerminations(t, "events", ends, limConcurrent, s1)
		limWantNoTermination(t, "events", ends, s2, s3)

		// Erin does not hold contractor: no limit.
		var erins []*gatehousev1.CreateSessionResponse
		for i := range 4 {
			erins = append(erins, limMustLogin(t, e.c, fmt.Sprintf("erin's login %d", i+1), "erin", limWeb))
		}
		limWantValid(t, e.c, "erin without the role", erins...)
	})
}

// TestLimitDenyNew: switched to deny-new, the next login is refused and the existing sessions stay;
// lowering the limit evicts nothing: only the next login is affected.
func TestLimitDenyNew(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		carl := limNewUser(t, e.c, e.admin, "carl")
		limNewRole(t, e, "contractor", carl)
		p := limCreatePolicy(t, e.c, e.admin, limRoleScope("contractor"), 2, limUnspecified)
		s1 := limMustLogin(t, e.c, "first", "carl", limWeb)
		s2 := limMustLogin(t, e.c, "second", "carl", limMobileBrowser)

		p = limSetAction(t, e.c, e.admin, p, limDeny)
		limWantResolved(t, e, "deny-new", carl.Id, limResolved{
			Max: 2, MaxFrom: []string{"role:contractor"}, OnLimit: limDeny, OnLimitFrom: []string{"role:contractor"},
		})
		before := limSessionCount(t, e, carl.Id)
		limWantDenied(t, e.c, "third login under deny-new", "carl", limWeb)
		limWantDenied(t, e.c, "third login under deny-new, as a mobile app", "carl", limMobileApp)
		limWantValid(t, e.c, "after the denied logins", s1, s2)
		limActive(t, e, "after the denied logins", carl.Id, s1, s2)
		if after := limSessionCount(t, e, carl.Id); after != before {
			t.Errorf("denied logins changed the user's session count from %d to %d", before, after)
		}
		// An API token is not counted, so deny-new does not refuse it.
		api := limMustLogin(t, e.c, "API token under deny-new", "carl", limAPI)

		// Lowering the limit below the current count ends nothing.
		p = limSetMax(t, e.c, e.admin, p, 1)
		limWantResolved(t, e, "lowered to 1", carl.Id, limResolved{
			Max: 1, MaxFrom: []string{"role:contractor"}, OnLimit: limDeny, OnLimitFrom: []string{"role:contractor"},
		})
		limWantValid(t, e.c, "after lowering the limit", s1, s2, api)
		limActive(t, e, "after lowering the limit", carl.Id, s1, s2, api)
		limWantDenied(t, e.c, "login after lowering the limit", "carl", limWeb)
		limWantValid(t, e.c, "after the login denied under the lowered limit", s1, s2, api)

		// Back to evict-oldest, still over the lowered limit: the switch ends nothing, the next
		// login evicts as many of the oldest as it takes.
		limSetAction(t, e.c, e.admin, p, limEvict)
		limWantValid(t, e.c, "after switching to evict-oldest", s1, s2, api)
		limActive(t, e, "after switching to evict-oldest", carl.Id, s1, s2, api)
		s4 := limMustLogin(t, e.c, "login under evict-oldest over the lowered limit", "carl", limMobileApp, s1.Session.Id, s2.Session.Id)
		limWantEnded(t, e.c, "after the evicting login", limConcurrent, s1, s2)
		limWantValid(t, e.c, "after the evicting login", s4, api)
		limActive(t, e, "after the evicting login", carl.Id, s4, api)
		ends := limTerminations(t, e.n, carl.Id)
		limWantTerminations(t, "events", ends, limConcurrent, s1, s2)
		limWantNoTermination(t, "events", ends, s4, api)
	})
}

// TestLimitCountedTypes: a policy counting only mobile apps lets any number of web sessions through.
func TestLimitCountedTypes(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		u := limNewUser(t, e.c, e.admin, "mona")
		p := limCreatePolicy(t, e.c, e.admin, limUserScope(u.Id), 1, limUnspecified, limMobileApp)
		limWantResolved(t, e, "mobile apps only", u.Id, limResolved{
			Max: 1, MaxFrom: []string{"user:" + u.Id}, OnLimit: limEvict, OnLimitFrom: []string{"default"},
			Counted: []gatehousev1.SessionType{limMobileApp}, CountedFrom: []string{"user:" + u.Id},
		})

		var others []*gatehousev1.CreateSessionResponse
		for range 6 {
			others = append(others, limMustLogin(t, e.c, "web login", "mona", limWeb))
		}
		others = append(others, limMustLogin(t, e.c, "mobile browser login", "mona", limMobileBrowser))
		m1 := limMustLogin(t, e.c, "first mobile app", "mona", limMobileApp)
		limWantValid(t, e.c, "before the second mobile app", append(others, m1)...)
		m2 := limMustLogin(t, e.c, "second mobile app", "mona", limMobileApp, m1.Session.Id)
		limWantEnded(t, e.c, "first mobile app", limConcurrent, m1)
		others = append(others, limMustLogin(t, e.c, "web login after the eviction", "mona", limWeb))
		limWantValid(t, e.c, "after the second mobile app", append(others, m2)...)
		limActive(t, e, "after the second mobile app", u.Id, append(others, m2)...)

		// Under deny-new the uncounted types still get through.
		limSetAction(t, e.c, e.admin, p, limDeny)
		limWantDenied(t, e.c, "third mobile app under deny-new", "mona", limMobileApp)
		others = append(others, limMustLogin(t, e.c, "web login under deny-new", "mona", limWeb))
		limWantValid(t, e.c, "under deny-new", append(others, m2)...)
		ends := limTerminations(t, e.n, u.Id)
		limWantTerminations(t, "events", ends, limConcurrent, m1)
		limWantNoTermination(t, "events", ends, append(others, m2)...)
	})
}

// TestLimitTwoRolePolicies: when two role policies apply, the smallest limit wins, with its own
// action, and deny-new wins a tie; ResolveSessionPolicy says so and logins behave accordingly.
func TestLimitTwoRolePolicies(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		u := limNewUser(t, e.c, e.admin, "tess")
		limNewRole(t, e, "contractor", u)
		limNewRole(t, e, "temp", u)
		contractor := limCreatePolicy(t, e.c, e.admin, limRoleScope("contractor"), 3, limDeny)
		temp := limCreatePolicy(t, e.c, e.admin, limRoleScope("temp"), 2, limEvict)

		// Smallest limit (temp: 2, evict-oldest) wins over contractor's 3 with deny-new.
		limWantResolved(t, e, "temp's 2 under contractor's 3", u.Id, limResolved{
			Max: 2, MaxFrom: []string{"role:temp"}, OnLimit: limEvict, OnLimitFrom: []string{"role:temp"},
		})
		s1 := limMustLogin(t, e.c, "first", "tess", limWeb)
		s2 := limMustLogin(t, e.c, "second", "tess", limWeb)
		s3 := limMustLogin(t, e.c, "third (evicts under temp's policy)", "tess", limWeb, s1.Session.Id)
		limWantEnded(t, e.c, "oldest", limConcurrent, s1)
		limActive(t, e, "after the third login", u.Id, s2, s3)

		// A tie at 2: deny-new wins.
		contractor = limSetMax(t, e.c, e.admin, contractor, 2)
		limWantResolved(t, e, "tie at 2", u.Id, limResolved{
			Max: 2, MaxFrom: []string{"role:contractor", "role:temp"}, OnLimit: limDeny, OnLimitFrom: []string{"role:contractor"},
		})
		limWantDenied(t, e.c, "login at a tie", "tess", limWeb)
		limWantValid(t, e.c, "after the login denied at a tie", s2, s3)
		limActive(t, e, "after the login denied at a tie", u.Id, s2, s3)

		// The same tie the other way round (deny-new now on the role that sorts last).
		contractor = limSetAction(t, e.c, e.admin, contractor, limEvict)
		temp = limSetAction(t, e.c, e.admin, temp, limDeny)
		limWantResolved(t, e, "tie at 2, deny-new on temp", u.Id, limResolved{
			Max: 2, MaxFrom: []string{"role:contractor", "role:temp"}, OnLimit: limDeny, OnLimitFrom: []string{"role:temp"},
		})
		limWantDenied(t, e.c, "login at a tie, deny-new on temp", "tess", limMobileApp)
		limWantValid(t, e.c, "after the second login denied at a tie", s2, s3)

		// temp lowered to 1 with evict-oldest: smallest again, and its action applies.
		temp = limSetAction(t, e.c, e.admin, temp, limEvict)
		temp = limSetMax(t, e.c, e.admin, temp, 1)
		limWantResolved(t, e, "temp's 1 under contractor's 2", u.Id, limResolved{
			Max: 1, MaxFrom: []string{"role:temp"}, OnLimit: limEvict, OnLimitFrom: []string{"role:temp"},
		})
		s4 := limMustLogin(t, e.c, "login under temp's 1", "tess", limMobileApp, s2.Session.Id, s3.Session.Id)
		limWantEnded(t, e.c, "after the login under temp's 1", limConcurrent, s2, s3)
		limActive(t, e, "after the login under temp's 1", u.Id, s4)

		// The smallest limit's deny-new applies even though the larger limit evicts.
		limSetAction(t, e.c, e.admin, temp, limDeny)
		limWantResolved(t, e, "temp's 1 with deny-new under contractor's 2 with evict-oldest", u.Id, limResolved{
			Max: 1, MaxFrom: []string{"role:temp"}, OnLimit: limDeny, OnLimitFrom: []string{"role:temp"},
		})
		limWantDenied(t, e.c, "login under temp's deny-new", "tess", limWeb)
		limWantValid(t, e.c, "after the login denied under temp's deny-new", s4)
		limActive(t, e, "after the login denied under temp's deny-new", u.Id, s4)

		ends := limTerminations(t, e.n, u.Id)
		limWantTerminations(t, "events", ends, limConcurrent, s1, s2, s3)
		limWantNoTermination(t, "events", ends, s4)
	})
}
