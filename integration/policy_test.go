package integration_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/events"
)

// Policy scopes.

func polGlobal() *gatehousev1.PolicyScope {
	return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}}
}

func polRole(role string) *gatehousev1.PolicyScope {
	return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: role}}
}

func polUser(userID string) *gatehousev1.PolicyScope {
	return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: userID}}
}

// polCreate creates a policy as the administrator and returns it.
func polCreate(a *idAdmin, p *gatehousev1.SessionPolicy) *gatehousev1.SessionPolicy {
	a.t.Helper()
	return mutate[gatehousev1.CreateSessionPolicyResponse](a, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName,
		&gatehousev1.CreateSessionPolicyRequest{Policy: p}).Policy
}

// polTryCreate creates a policy as the administrator and returns the error.
func polTryCreate(a *idAdmin, p *gatehousev1.SessionPolicy) error {
	_, err := testnode.Call[gatehousev1.CreateSessionPolicyResponse](context.Background(), a.c,
		gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, a.tok, &gatehousev1.CreateSessionPolicyRequest{Policy: p})
	return err
}

// polUpdate updates a policy as the administrator; a nil mask sends no update_mask.
func polUpdate(a *idAdmin, p *gatehousev1.SessionPolicy, mask ...string) *gatehousev1.SessionPolicy {
	a.t.Helper()
	req := &gatehousev1.UpdateSessionPolicyRequest{Policy: p}
	if mask != nil {
		req.UpdateMask = &fieldmaskpb.FieldMask{Paths: mask}
	}
	return mutate[gatehousev1.UpdateSessionPolicyResponse](a, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, req).Policy
}

// polGet reads a policy as the administrator.
func polGet(a *idAdmin, id string) *gatehousev1.SessionPolicy {
	a.t.Helper()
	return read[gatehousev1.GetSessionPolicyResponse](a, gatehousev1.PolicyService_GetSessionPolicy_FullMethodName,
		&gatehousev1.GetSessionPolicyRequest{PolicyId: id}).Policy
}

// polResolve resolves a user's policy with token.
func polResolve(t *testing.T, c testnode.Invoker, token, userID string) *gatehousev1.ResolveSessionPolicyResponse {
	t.Helper()
	return testnode.MustCall[gatehousev1.ResolveSessionPolicyResponse](t, c, gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, token,
		&gatehousev1.ResolveSessionPolicyRequest{UserId: userID})
}

// polCount counts the rows of a table.
func polCount(t *testing.T, n *testnode.Node, table string) int64 {
	t.Helper()
	var c int64
	if err := n.Store().DB.QueryRow(`SELECT COUNT(*) FROM "` + table + `"`).Scan(&c); err != nil {
		t.Fatalf("counting %s: %v", table, err)
	}
	return c
}

// polWantErr checks, without stopping the test, that err has code, (unless empty) reason, and
// (unless empty) a field violation naming field.
func polWantErr(t *testing.T, what string, err error, code codes.Code, reason, field string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want %s %s", what, code, reason)
		return
	}
	if got := status.Code(err); got != code {
		t.Errorf("%s: code %s (%v), want %s", what, got, err, code)
		return
	}
	if reason != "" && testnode.Reason(err) != reason {
		t.Errorf("%s: reason %q (%v), want %q", what, testnode.Reason(err), err, reason)
	}
	if field != "" && !slices.Contains(testnode.Violations(err), field) {
		t.Errorf("%s: field violations %q (%v), want one naming %s", what, testnode.Violations(err), err, field)
	}
}

// smUser creates a user with a password (its username followed by "-password"), grants it roles
// and logs it in; it returns the user and the session token.
func smUser(a *idAdmin, username string, roles ...string) (*gatehousev1.User, string) {
	a.t.Helper()
	u := a.createUser(username, username+"-password")
	for _, r := range roles {
		a.grantUser(r, u.Id)
	}
	return u, testnode.Login(a.t, a.c, username, username+"-password").Token
}

// polEvents returns the policy payloads of the events of type typ among evs.
func polEvents(evs []loggedEvent, typ gatehousev1.EventType) []*gatehousev1.SessionPolicy {
	var out []*gatehousev1.SessionPolicy
	for _, e := range ofType(evs, typ) {
		var p *gatehousev1.PolicyPayload
		switch typ {
		case gatehousev1.EventType_EVENT_TYPE_POLICY_CREATED:
			p = e.Event.GetPolicyCreated()
		case gatehousev1.EventType_EVENT_TYPE_POLICY_UPDATED:
			p = e.Event.GetPolicyUpdated()
		default:
			p = e.Event.GetPolicyDeleted()
		}
		out = append(out, p.GetPolicy())
	}
	return out
}

func TestPolicyCRUD(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		pia := a.createUser("pia", "")
		a.createRole("contractor")
		mark := lastEventID(t, n)

		global := polCreate(a, &gatehousev1.SessionPolicy{Scope: polGlobal(), IdleTimeout: durationpb.New(time.Hour)})
		role := polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polRole("contractor"), MaxSessions: proto.Int32(2), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW,
			CountedTypes: []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER, gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP},
		})
		user := polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polUser(pia.Id), AbsoluteTimeout: durationpb.New(8 * time.Hour),
			OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE,
		})
		for _, p := range []*gatehousev1.SessionPolicy{global, role, user} {
			if p.GetId() == "" || p.GetCreateTime() == nil || p.GetUpdateTime() == nil {
				t.Errorf("created policy lacks id or times: %v", p)
			}
		}
		if !proto.Equal(global.Scope, polGlobal()) || global.MaxSessions != nil || global.IdleTimeout.AsDuration() != time.Hour ||
			global.AbsoluteTimeout != nil || global.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_UNSPECIFIED || len(global.CountedTypes) != 0 {
			t.Errorf("global policy = %v", global)
		}
		if !proto.Equal(role.Scope, polRole("contractor")) || role.GetMaxSessions() != 2 || role.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW ||
			len(role.CountedTypes) != 2 || role.IdleTimeout != nil {
			t.Errorf("role policy = %v", role)
		}
		if !proto.Equal(user.Scope, polUser(pia.Id)) || user.AbsoluteTimeout.AsDuration() != 8*time.Hour ||
			user.OnRoleChange != gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE || user.MaxSessions != nil {
			t.Errorf("user policy = %v", user)
		}

		// Each creation is one POLICY_CREATED event carrying the policy; a user policy names the user.
		evs := eventsAfter(t, n, mark)
		created := polEvents(evs, gatehousev1.EventType_EVENT_TYPE_POLICY_CREATED)
		if len(evs) != 3 || len(created) != 3 {
			t.Fatalf("creating three policies wrote events %v, want three POLICY_CREATED", evs)
		}
		for i, want := range []*gatehousev1.SessionPolicy{global, role, user} {
			if diff := cmp.Diff(want, created[i], protocmp.Transform()); diff != "" {
				t.Errorf("POLICY_CREATED %d payload (-want +got):\n%s", i, diff)
			}
		}
		if evs[2].UserID != pia.Id || evs[0].UserID != "" {
			t.Errorf("POLICY_CREATED user ids: %q, %q, %q; want only the user policy's to name %s", evs[0].UserID, evs[1].UserID, evs[2].UserID, pia.Id)
		}

		// One policy per scope.
		policies, events := polCount(t, n, "session_policies"), polCount(t, n, "events")
		for _, sc := range []*gatehousev1.PolicyScope{polGlobal(), polRole("contractor"), polUser(pia.Id)} {
			err := polTryCreate(a, &gatehousev1.SessionPolicy{Scope: sc, MaxSessions: proto.Int32(9)})
			polWantErr(t, "a second policy for "+sc.String(), err, codes.AlreadyExists, "POLICY_EXISTS", "")
		}
		if p, e := polCount(t, n, "session_policies"), polCount(t, n, "events"); p != policies || e != events {
			t.Errorf("refused duplicates changed the tables: policies %d -> %d, events %d -> %d", policies, p, events, e)
		}

		// Get returns what Create returned.
		for _, want := range []*gatehousev1.SessionPolicy{global, role, user} {
			if diff := cmp.Diff(want, polGet(a, want.Id), protocmp.Transform()); diff != "" {
				t.Errorf("GetSessionPolicy(%s) (-created +got):\n%s", want.Id, diff)
			}
		}
		a.fails(gatehousev1.PolicyService_GetSessionPolicy_FullMethodName, &gatehousev1.GetSessionPolicyRequest{PolicyId: unknownID},
			codes.NotFound, "POLICY_NOT_FOUND")

		// List pages through every policy exactly once, in creation order.
		var listed []string
		token := ""
		for page := 0; ; page++ {
			resp := read[gatehousev1.ListSessionPoliciesResponse](a, gatehousev1.PolicyService_ListSessionPolicies_FullMethodName,
				&gatehousev1.ListSessionPoliciesRequest{PageSize: 2, PageToken: token})
			if len(resp.Policies) > 2 {
				t.Fatalf("page %d has %d policies, more than page_size 2", page, len(resp.Policies))
			}
			for _, p := range resp.Policies {
				listed = append(listed, p.Id)
			}
			if token = resp.NextPageToken; token == "" {
				break
			}
			if page > 3 {
				t.Fatalf("ListSessionPolicies does not end: %v", listed)
			}
		}
		if want := []string{global.Id, role.Id, user.Id}; !slices.Equal(listed, want) {
			t.Errorf("listed policies %v, want %v", listed, want)
		}

		// Update with a mask changes only the named fields.
		mark = lastEventID(t, n)
		up := polUpdate(a, &gatehousev1.SessionPolicy{Id: role.Id, MaxSessions: proto.Int32(3), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST},
			"max_sessions")
		if up.GetMaxSessions() != 3 || up.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW || len(up.CountedTypes) != 2 ||
			!proto.Equal(up.Scope, role.Scope) || !proto.Equal(up.CreateTime, role.CreateTime) || up.UpdateTime.AsTime().Before(role.UpdateTime.AsTime()) {
			t.Errorf("after updating max_sessions: %v", up)
		}
		// A field named in the mask but unset in the request is cleared.
		up = polUpdate(a, &gatehousev1.SessionPolicy{Id: role.Id}, "on_limit", "counted_types")
		if up.GetMaxSessions() != 3 || up.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_UNSPECIFIED || len(up.CountedTypes) != 0 {
			t.Errorf("after clearing on_limit and counted_types: %v", up)
		}
		if diff := cmp.Diff(up, polGet(a, role.Id), protocmp.Transform()); diff != "" {
			t.Errorf("GetSessionPolicy after the update (-updated +got):\n%s", diff)
		}
		up = polUpdate(a, &gatehousev1.SessionPolicy{Id: role.Id}, "max_sessions")
		if up.MaxSessions != nil {
			t.Errorf("after clearing max_sessions: %v", up)
		}
		// Sending the scope back unchanged is fine.
		up = polUpdate(a, &gatehousev1.SessionPolicy{Id: user.Id, Scope: polUser(pia.Id), IdleTimeout: durationpb.New(time.Minute)}, "idle_timeout")
		if up.IdleTimeout.AsDuration() != time.Minute || up.AbsoluteTimeout.AsDuration() != 8*time.Hour {
			t.Errorf("after updating idle_timeout: %v", up)
		}
		// Without a mask, the populated fields change (over REST: the fields present in the body).
		up = polUpdate(a, &gatehousev1.SessionPolicy{Id: user.Id, IdleTimeout: durationpb.New(2 * time.Minute)})
		if up.IdleTimeout.AsDuration() != 2*time.Minute || up.AbsoluteTimeout.AsDuration() != 8*time.Hour ||
			up.OnRoleChange != gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE {
			t.Errorf("after an update without a mask: %v", up)
		}
		updates := 5

		// The scope cannot change, and a refused update writes nothing.
		policies, events = polCount(t, n, "session_policies"), polCount(t, n, "events")
		before := polGet(a, user.Id)
		_, err := testnode.Call[gatehousev1.UpdateSessionPolicyResponse](context.Background(), c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.UpdateSessionPolicyRequest{
				Policy:     &gatehousev1.SessionPolicy{Id: user.Id, Scope: polRole("contractor"), IdleTimeout: durationpb.New(time.Second)},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"idle_timeout"}},
			})
		polWantErr(t, "changing a policy's scope", err, codes.InvalidArgument, "", "policy.scope")
		_, err = testnode.Call[gatehousev1.UpdateSessionPolicyResponse](context.Background(), c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.UpdateSessionPolicyRequest{
				Policy:     &gatehousev1.SessionPolicy{Id: unknownID, IdleTimeout: durationpb.New(time.Second)},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"idle_timeout"}},
			})
		polWantErr(t, "updating an unknown policy", err, codes.NotFound, "POLICY_NOT_FOUND", "")
		if diff := cmp.Diff(before, polGet(a, user.Id), protocmp.Transform()); diff != "" {
			t.Errorf("a refused update changed the policy (-before +after):\n%s", diff)
		}
		if p, e := polCount(t, n, "session_policies"), polCount(t, n, "events"); p != policies || e != events {
			t.Errorf("refused updates changed the tables: policies %d -> %d, events %d -> %d", policies, p, events, e)
		}

		// Delete.
		del := mutate[gatehousev1.DeleteSessionPolicyResponse](a, gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName,
			&gatehousev1.DeleteSessionPolicyRequest{PolicyId: global.Id})
		if del.ConsistencyToken == "" {
			t.Error("DeleteSessionPolicy returned no consistency token")
		}
		a.fails(gatehousev1.PolicyService_GetSessionPolicy_FullMethodName, &gatehousev1.GetSessionPolicyRequest{PolicyId: global.Id},
			codes.NotFound, "POLICY_NOT_FOUND")
		a.fails(gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName, &gatehousev1.DeleteSessionPolicyRequest{PolicyId: global.Id},
			codes.NotFound, "POLICY_NOT_FOUND")
		// The scope is free again.
		again := polCreate(a, &gatehousev1.SessionPolicy{Scope: polGlobal(), MaxSessions: proto.Int32(4)})

		evs = eventsAfter(t, n, mark)
		if got := polEvents(evs, gatehousev1.EventType_EVENT_TYPE_POLICY_UPDATED); len(got) != updates {
			t.Errorf("%d POLICY_UPDATED events for %d updates", len(got), updates)
		} else if diff := cmp.Diff(up, got[len(got)-1], protocmp.Transform()); diff != "" {
			t.Errorf("last POLICY_UPDATED payload (-updated +event):\n%s", diff)
		}
		deleted := polEvents(evs, gatehousev1.EventType_EVENT_TYPE_POLICY_DELETED)
		if len(deleted) != 1 || deleted[0].GetId() != global.Id {
			t.Errorf("POLICY_DELETED events %v, want one for %s", deleted, global.Id)
		}
		if got := polEvents(evs, gatehousev1.EventType_EVENT_TYPE_POLICY_CREATED); len(got) != 1 || got[0].GetId() != again.Id {
			t.Errorf("POLICY_CREATED events %v, want one for %s", got, again.Id)
		}
		if len(evs) != updates+2 {
			t.Errorf("%d events for %d updates, a delete and a create: %v", len(evs), updates, evs)
		}
	})
}

func TestPolicyBadInputWritesNothing(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		u := a.createUser("quin", "")
		a.createRole("staff")
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("staff"), MaxSessions: proto.Int32(5)})

		cases := []struct {
			what          string
			policy        *gatehousev1.SessionPolicy
			code          codes.Code
			reason, field string
		}{
			{"zero max_sessions", &gatehousev1.SessionPolicy{Scope: polGlobal(), MaxSessions: proto.Int32(0)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.max_sessions"},
			{"negative max_sessions", &gatehousev1.SessionPolicy{Scope: polGlobal(), MaxSessions: proto.Int32(-1)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.max_sessions"},
			{"zero idle_timeout", &gatehousev1.SessionPolicy{Scope: polGlobal(), IdleTimeout: durationpb.New(0)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.idle_timeout"},
			{"negative idle_timeout", &gatehousev1.SessionPolicy{Scope: polUser(u.Id), IdleTimeout: durationpb.New(-5 * time.Second)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.idle_timeout"},
			{"zero absolute_timeout", &gatehousev1.SessionPolicy{Scope: polGlobal(), AbsoluteTimeout: durationpb.New(0)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.absolute_timeout"},
			{"negative absolute_timeout", &gatehousev1.SessionPolicy{Scope: polUser(u.Id), AbsoluteTimeout: durationpb.New(-time.Hour)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.absolute_timeout"},
			{"unknown role", &gatehousev1.SessionPolicy{Scope: polRole("no_such_role"), MaxSessions: proto.Int32(1)},
				codes.NotFound, "ROLE_NOT_FOUND", ""},
			{"unknown user", &gatehousev1.SessionPolicy{Scope: polUser(unknownID), MaxSessions: proto.Int32(1)},
				codes.NotFound, "USER_NOT_FOUND", ""},
			{"missing scope", &gatehousev1.SessionPolicy{MaxSessions: proto.Int32(1)},
				codes.InvalidArgument, "", "policy.scope"},
			{"unknown on_limit", &gatehousev1.SessionPolicy{Scope: polGlobal(), MaxSessions: proto.Int32(1), OnLimit: gatehousev1.LimitAction(99)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.on_limit"},
			{"unknown on_role_change", &gatehousev1.SessionPolicy{Scope: polGlobal(), OnRoleChange: gatehousev1.RoleChangeAction(7)},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.on_role_change"},
			{"unspecified counted type", &gatehousev1.SessionPolicy{Scope: polGlobal(), CountedTypes: []gatehousev1.SessionType{0}},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.counted_types[0]"},
			{"global scope set to false", &gatehousev1.SessionPolicy{Scope: &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{}}},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.scope.global"},
			{"malformed role name", &gatehousev1.SessionPolicy{Scope: polRole("Not A Role")},
				codes.InvalidArgument, "INVALID_ARGUMENT", "policy.scope.role"},
			{"a second policy for a role", &gatehousev1.SessionPolicy{Scope: polRole("staff"), IdleTimeout: durationpb.New(time.Hour)},
				codes.AlreadyExists, "POLICY_EXISTS", ""},
		}
		for _, tc := range cases {
			policies, events := polCount(t, n, "session_policies"), polCount(t, n, "events")
			maxEvent := lastEventID(t, n)
			err := polTryCreate(a, tc.policy)
			polWantErr(t, tc.what, err, tc.code, tc.reason, tc.field)
			if p, e := polCount(t, n, "session_policies"), polCount(t, n, "events"); p != policies || e != events || lastEventID(t, n) != maxEvent {
				t.Errorf("%s: the refused create wrote rows: policies %d -> %d, events %d -> %d", tc.what, policies, p, events, e)
			}
		}
		if policies := read[gatehousev1.ListSessionPoliciesResponse](a, gatehousev1.PolicyService_ListSessionPolicies_FullMethodName,
			&gatehousev1.ListSessionPoliciesRequest{}).Policies; len(policies) != 1 {
			t.Errorf("policies after refused creates: %v, want only the staff policy", policies)
		}

		// The same rules apply to updates.
		staff := read[gatehousev1.ListSessionPoliciesResponse](a, gatehousev1.PolicyService_ListSessionPolicies_FullMethodName,
			&gatehousev1.ListSessionPoliciesRequest{}).Policies[0]
		events := polCount(t, n, "events")
		for _, tc := range []struct {
			what   string
			policy *gatehousev1.SessionPolicy
			mask   string
			field  string
		}{
			{"zero max_sessions", &gatehousev1.SessionPolicy{Id: staff.Id, MaxSessions: proto.Int32(0)}, "max_sessions", "policy.max_sessions"},
			{"zero idle_timeout", &gatehousev1.SessionPolicy{Id: staff.Id, IdleTimeout: durationpb.New(0)}, "idle_timeout", "policy.idle_timeout"},
			{"negative absolute_timeout", &gatehousev1.SessionPolicy{Id: staff.Id, AbsoluteTimeout: durationpb.New(-time.Second)}, "absolute_timeout", "policy.absolute_timeout"},
			{"unknown field in the mask", &gatehousev1.SessionPolicy{Id: staff.Id}, "no_such_field", "update_mask"},
			{"unknown path under the scope", &gatehousev1.SessionPolicy{Id: staff.Id, Scope: polRole("staff")}, "scope.bogus", "update_mask"},
			{"malformed id", &gatehousev1.SessionPolicy{Id: "not-a-uuid", MaxSessions: proto.Int32(3)}, "max_sessions", "policy.id"},
		} {
			_, err := testnode.Call[gatehousev1.UpdateSessionPolicyResponse](context.Background(), c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, a.tok,
				&gatehousev1.UpdateSessionPolicyRequest{Policy: tc.policy, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{tc.mask}}})
			polWantErr(t, "update with "+tc.what, err, codes.InvalidArgument, "", tc.field)
		}
		if !isREST(t) {
			// The id names the policy to change: it is required (a REST path always carries one).
			_, err := testnode.Call[gatehousev1.UpdateSessionPolicyResponse](context.Background(), c, gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, a.tok,
				&gatehousev1.UpdateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{MaxSessions: proto.Int32(3)}})
			polWantErr(t, "update without an id", err, codes.InvalidArgument, "INVALID_ARGUMENT", "policy")
		}
		if diff := cmp.Diff(staff, polGet(a, staff.Id), protocmp.Transform()); diff != "" {
			t.Errorf("refused updates changed the policy (-before +after):\n%s", diff)
		}
		if e := polCount(t, n, "events"); e != events {
			t.Errorf("refused updates wrote %d events", e-events)
		}
	})
}

// polIgnoreUpdateTime compares policies without their update_time.
var polIgnoreUpdateTime = protocmp.IgnoreFields(&gatehousev1.SessionPolicy{}, "update_time")

// TestPolicyUpdateWithoutMask checks AIP-134 on every front: an update without an update_mask
// changes the fields populated in the request and keeps every other (over REST, the fields present
// in the body, which for this client are the populated ones).
func TestPolicyUpdateWithoutMask(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("staff")
		const (
			web = gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
			app = gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP
		)
		p := polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polRole("staff"), MaxSessions: proto.Int32(4), CountedTypes: []gatehousev1.SessionType{web},
			OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW, IdleTimeout: durationpb.New(time.Hour),
			AbsoluteTimeout: durationpb.New(8 * time.Hour), OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE,
		})
		mark := lastEventID(t, n)
		want := proto.Clone(p).(*gatehousev1.SessionPolicy)
		steps := []struct {
			what   string
			in     *gatehousev1.SessionPolicy
			change func(w *gatehousev1.SessionPolicy)
		}{
			{"max_sessions", &gatehousev1.SessionPolicy{MaxSessions: proto.Int32(6)},
				func(w *gatehousev1.SessionPolicy) { w.MaxSessions = proto.Int32(6) }},
			{"counted_types", &gatehousev1.SessionPolicy{CountedTypes: []gatehousev1.SessionType{web, app}},
				func(w *gatehousev1.SessionPolicy) { w.CountedTypes = []gatehousev1.SessionType{web, app} }},
			{"on_limit", &gatehousev1.SessionPolicy{OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST},
				func(w *gatehousev1.SessionPolicy) { w.OnLimit = gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST }},
			{"idle_timeout", &gatehousev1.SessionPolicy{IdleTimeout: durationpb.New(2 * time.Hour)},
				func(w *gatehousev1.SessionPolicy) { w.IdleTimeout = durationpb.New(2 * time.Hour) }},
			{"absolute_timeout", &gatehousev1.SessionPolicy{AbsoluteTimeout: durationpb.New(4 * time.Hour)},
				func(w *gatehousev1.SessionPolicy) { w.AbsoluteTimeout = durationpb.New(4 * time.Hour) }},
			{"on_role_change", &gatehousev1.SessionPolicy{OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH},
				func(w *gatehousev1.SessionPolicy) {
					w.OnRoleChange = gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH
				}},
			{"two fields, with the scope sent back", &gatehousev1.SessionPolicy{Scope: polRole("staff"), MaxSessions: proto.Int32(2), IdleTimeout: durationpb.New(3 * time.Hour)},
				func(w *gatehousev1.SessionPolicy) {
					w.MaxSessions, w.IdleTimeout = proto.Int32(2), durationpb.New(3*time.Hour)
				}},
		}
		last := p.UpdateTime.AsTime()
		for _, st := range steps {
			st.in.Id = p.Id
			got := polUpdate(a, st.in)
			st.change(want)
			if diff := cmp.Diff(want, got, protocmp.Transform(), polIgnoreUpdateTime); diff != "" {
				t.Errorf("after an update of %s without a mask (-want +got):\n%s", st.what, diff)
			}
			if got.UpdateTime.AsTime().Before(last) {
				t.Errorf("after an update of %s: update_time %v went back from %v", st.what, got.UpdateTime.AsTime(), last)
			}
			last = got.UpdateTime.AsTime()
		}
		if diff := cmp.Diff(want, polGet(a, p.Id), protocmp.Transform(), polIgnoreUpdateTime); diff != "" {
			t.Errorf("GetSessionPolicy after the updates (-want +got):\n%s", diff)
		}
		if got := polEvents(eventsAfter(t, n, mark), gatehousev1.EventType_EVENT_TYPE_POLICY_UPDATED); len(got) != len(steps) {
			t.Errorf("%d POLICY_UPDATED events for %d updates", len(got), len(steps))
		}
	})
}

// TestPolicyUpdateChangingNothing checks that an update whose mask (given, or implied by the
// populated fields) names no updatable field changes nothing: no update_time bump, no event, the
// policy returned as stored, and the head of the log as the consistency token.
func TestPolicyUpdateChangingNothing(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("staff")
		p := polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("staff"), MaxSessions: proto.Int32(4), IdleTimeout: durationpb.New(time.Hour)})
		for _, tc := range []struct {
			what     string
			req      *gatehousev1.UpdateSessionPolicyRequest
			skipREST bool // grpc-gateway derives a mask from the body when the one sent is empty
		}{
			{"an empty mask", &gatehousev1.UpdateSessionPolicyRequest{
				Policy: &gatehousev1.SessionPolicy{Id: p.Id, MaxSessions: proto.Int32(9)}, UpdateMask: &fieldmaskpb.FieldMask{}}, true},
			{"no mask and no field set", &gatehousev1.UpdateSessionPolicyRequest{
				Policy: &gatehousev1.SessionPolicy{Id: p.Id}}, false},
			{"no mask, only the scope sent back", &gatehousev1.UpdateSessionPolicyRequest{
				Policy: &gatehousev1.SessionPolicy{Id: p.Id, Scope: polRole("staff")}}, false},
			{"a mask of output-only fields and the unchanged scope", &gatehousev1.UpdateSessionPolicyRequest{
				Policy:     &gatehousev1.SessionPolicy{Id: p.Id, Scope: polRole("staff"), MaxSessions: proto.Int32(9)},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"id", "create_time", "update_time", "scope"}}}, false},
		} {
			if tc.skipREST && isREST(t) {
				continue
			}
			mark := lastEventID(t, n)
			head := smPositions(t, n, mark-1)[mark]
			resp, err := testnode.Call[gatehousev1.UpdateSessionPolicyResponse](context.Background(), c,
				gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName, a.tok, tc.req)
			if err != nil {
				t.Errorf("update with %s: %v", tc.what, err)
				continue
			}
			if diff := cmp.Diff(p, resp.Policy, protocmp.Transform()); diff != "" {
				t.Errorf("update with %s returned a policy other than the stored one (-stored +returned):\n%s", tc.what, diff)
			}
			if diff := cmp.Diff(p, polGet(a, p.Id), protocmp.Transform()); diff != "" {
				t.Errorf("update with %s changed the policy (-before +after):\n%s", tc.what, diff)
			}
			if evs := eventsAfter(t, n, mark); len(evs) != 0 {
				t.Errorf("update with %s wrote events %v", tc.what, evs)
			}
			if tok, err := events.ParseCursor(resp.ConsistencyToken); err != nil || tok != head {
				t.Errorf("update with %s: consistency token %q (%+v, %v), want the log head %+v", tc.what, resp.ConsistencyToken, tok, err, head)
			}
		}
	})
}

// polRESTBody returns the policy object of a GetSessionPolicy REST response body, decoded as
// generic JSON.
func polRESTBody(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var resp struct {
		Policy map[string]any `json:"policy"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil || resp.Policy == nil {
		t.Fatalf("GetSessionPolicy body %s: %v", raw, err)
	}
	return resp.Policy
}

// TestPolicyRESTPatchWithoutMask sends raw REST PATCH requests without an update_mask, so that
// grpc-gateway derives the mask from the body: a policy read with GET and sent back with one field
// changed (the mask then names id, the times and scope.role, scope.user_id or scope.global) changes
// that field; a body with a different scope is refused; a malformed id is invalid.
func TestPolicyRESTPatchWithoutMask(t *testing.T) {
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, b)
			c := n.Client(testnode.REST)
			a := newIDAdmin(t, n, c)
			a.createRole("staff")
			uma := a.createUser("uma", "")
			hc := testnode.HTTPClient()
			send := func(method, path, body string) (int, *status.Status, []byte) {
				t.Helper()
				return sendRaw(t, hc, n.BaseURL(), a.tok, method, path, body)
			}
			policies := []*gatehousev1.SessionPolicy{
				polCreate(a, &gatehousev1.SessionPolicy{Scope: polGlobal(), MaxSessions: proto.Int32(9)}),
				polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("staff"), MaxSessions: proto.Int32(3),
					OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW, CountedTypes: []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER}}),
				polCreate(a, &gatehousev1.SessionPolicy{Scope: polUser(uma.Id), IdleTimeout: durationpb.New(time.Hour),
					OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE}),
			}
			for _, p := range policies {
				what := "PATCH of the " + p.Scope.String() + " policy"
				code, _, raw := send(http.MethodGet, "/v1/policies/"+p.Id, "")
				if code != http.StatusOK {
					t.Fatalf("GET /v1/policies/%s: HTTP %d: %s", p.Id, code, raw)
				}
				body := polRESTBody(t, raw)
				body["absoluteTimeout"] = "7200s"
				echoed, err := json.Marshal(body)
				if err != nil {
					t.Fatal(err)
				}
				code, st, raw := send(http.MethodPatch, "/v1/policies/"+p.Id, string(echoed))
				if code != http.StatusOK {
					t.Errorf("%s echoing the GET response: HTTP %d (%v): %s", what, code, st.Err(), raw)
					continue
				}
				got := &gatehousev1.UpdateSessionPolicyResponse{}
				if err := protojson.Unmarshal(raw, got); err != nil {
					t.Fatalf("%s: response %s: %v", what, raw, err)
				}
				want := proto.Clone(p).(*gatehousev1.SessionPolicy)
				want.AbsoluteTimeout = durationpb.New(2 * time.Hour)
				if diff := cmp.Diff(want, got.Policy, protocmp.Transform(), polIgnoreUpdateTime); diff != "" {
					t.Errorf("%s echoing the GET response (-want +got):\n%s", what, diff)
				}

				// A different scope in the body stays immutable, and writes nothing.
				other := map[string]any{"role": "staff"}
				if p.Scope.GetRole() != "" {
					other = map[string]any{"userId": uma.Id}
				}
				body["scope"] = other
				moved, _ := json.Marshal(body)
				before := takeSnapshot(t, n.Store())
				code, st, raw = send(http.MethodPatch, "/v1/policies/"+p.Id, string(moved))
				if st == nil {
					t.Errorf("%s with another scope: HTTP %d, want 400: %s", what, code, raw)
				} else {
					polWantErr(t, what+" with another scope", st.Err(), codes.InvalidArgument, "IMMUTABLE_SCOPE", "policy.scope")
				}
				checkNothingChanged(t, n.Store(), before, takeSnapshot(t, n.Store()), false)
			}

			// A field present in the body as null is cleared.
			staff := policies[1]
			code, st, raw := send(http.MethodPatch, "/v1/policies/"+staff.Id, `{"maxSessions": null}`)
			if code != http.StatusOK {
				t.Errorf("PATCH {maxSessions: null}: HTTP %d (%v): %s", code, st.Err(), raw)
			} else if got := polGet(a, staff.Id); got.MaxSessions != nil || got.OnLimit != staff.OnLimit || len(got.CountedTypes) != 1 {
				t.Errorf("after PATCH {maxSessions: null}: %v, want only max_sessions cleared", got)
			}

			// The id in the path must be a UUID.
			before := takeSnapshot(t, n.Store())
			code, st, raw = send(http.MethodPatch, "/v1/policies/not-a-uuid", `{"maxSessions": 2}`)
			if st == nil || code != http.StatusBadRequest {
				t.Errorf("PATCH /v1/policies/not-a-uuid: HTTP %d, want 400: %s", code, raw)
			} else {
				polWantErr(t, "PATCH /v1/policies/not-a-uuid", st.Err(), codes.InvalidArgument, "INVALID_ARGUMENT", "policy.id")
			}
			checkNothingChanged(t, n.Store(), before, takeSnapshot(t, n.Store()), false)
		})
	}
}

// TestPolicyLimitActionFromSmallestLimit checks, through ResolveSessionPolicy and a login, that the
// older on_limit field comes from the most restrictive limit: a larger limit's deny-new does not
// apply to a smaller limit that sets no action (which is evict-oldest by default, whatever the
// global policy says), and deny-new wins a tie on the smallest limit.
func TestPolicyLimitActionFromSmallestLimit(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		for _, r := range []string{"lim_small", "lim_big", "lim_tie"} {
			a.createRole(r)
		}
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("lim_small"), MaxSessions: proto.Int32(2)})
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("lim_big"), MaxSessions: proto.Int32(5), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW})
		lia, _ := smUser(a, "lia", "lim_small", "lim_big") // one session

		check := func(what string, action gatehousev1.LimitAction, src *gatehousev1.PolicySource) {
			t.Helper()
			r := polResolve(t, c, a.tok, lia.Id)
			if r.GetMaxSessions() != 2 || !proto.Equal(r.MaxSessionsSource, polSource(polRole("lim_small"))) {
				t.Errorf("%s: max_sessions %d from %v, want 2 from lim_small", what, r.GetMaxSessions(), r.MaxSessionsSource)
			}
			if r.OnLimit != action || !proto.Equal(r.OnLimitSource, src) {
				t.Errorf("%s: on_limit %s from %v, want %s from %v", what, r.OnLimit, r.OnLimitSource, action, src)
			}
		}
		check("the smallest limit sets no action", gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST, polBuiltIn)

		// Logins follow the resolution: at the limit of 2 the oldest session is evicted.
		testnode.Login(t, c, "lia", "lia-password")
		if third := testnode.Login(t, c, "lia", "lia-password"); len(third.EvictedSessionIds) != 1 {
			t.Errorf("a third login under a limit of 2 that evicts evicted %v, want one session", third.EvictedSessionIds)
		}

		// Each limit takes its action from its own policy only (issue 15): the global policy's
		// action does not apply to a role's limit.
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polGlobal(), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW})
		check("the smallest limit sets no action, the global policy does", gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST, polBuiltIn)

		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("lim_tie"), MaxSessions: proto.Int32(2), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW})
		a.grantUser("lim_tie", lia.Id)
		r := polResolve(t, c, a.tok, lia.Id)
		if r.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW || !proto.Equal(r.OnLimitSource, polSource(polRole("lim_tie"))) {
			t.Errorf("with a tie on the smallest limit: on_limit %s from %v, want DENY_NEW from lim_tie", r.OnLimit, r.OnLimitSource)
		}
	})
}

// polSource is a PolicySource naming scopes.
func polSource(scopes ...*gatehousev1.PolicyScope) *gatehousev1.PolicySource {
	return &gatehousev1.PolicySource{Scopes: scopes}
}

var polBuiltIn = &gatehousev1.PolicySource{BuiltInDefault: true}

// polResolvedDiff compares resolutions, ignoring the order of counted types and of source scopes.
func polResolvedDiff(want, got *gatehousev1.ResolveSessionPolicyResponse) string {
	return cmp.Diff(want, got, protocmp.Transform(),
		protocmp.SortRepeated(func(a, b gatehousev1.SessionType) bool { return a < b }),
		protocmp.SortRepeated(func(a, b *gatehousev1.PolicyScope) bool { return a.String() < b.String() }))
}

func TestPolicyResolution(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("staff")
		a.createRole("contractor")
		a.createRole("unheld")
		ray, rayTok := smUser(a, "ray", "staff")
		g := a.createGroup("vendors")
		a.grantGroup("contractor", g.Id)
		a.addMember(g.Id, ray.Id)
		_, otherTok := smUser(a, "sue")

		const (
			web    = gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
			mobile = gatehousev1.SessionType_SESSION_TYPE_MOBILE_BROWSER
			app    = gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP
			api    = gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE
		)

		// No policy: every field is the built-in default. The user may resolve their own policy.
		want := &gatehousev1.ResolveSessionPolicyResponse{
			CountedTypes:          []gatehousev1.SessionType{web, mobile, app},
			OnLimit:               gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST,
			IdleTimeout:           durationpb.New(30 * time.Minute),
			AbsoluteTimeout:       durationpb.New(24 * time.Hour),
			OnRoleChange:          gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH,
			MaxSessionsSource:     polBuiltIn,
			CountedTypesSource:    polBuiltIn,
			OnLimitSource:         polBuiltIn,
			IdleTimeoutSource:     polBuiltIn,
			AbsoluteTimeoutSource: polBuiltIn,
			OnRoleChangeSource:    polBuiltIn,
		}
		if diff := polResolvedDiff(want, polResolve(t, c, rayTok, ray.Id)); diff != "" {
			t.Errorf("with no policy (-want +got):\n%s", diff)
		}
		expectError(t, c, gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, otherTok,
			&gatehousev1.ResolveSessionPolicyRequest{UserId: ray.Id}, codes.PermissionDenied, "")
		expectError(t, c, gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, a.tok,
			&gatehousev1.ResolveSessionPolicyRequest{UserId: unknownID}, codes.NotFound, "USER_NOT_FOUND")

		// A global policy sets what it sets; the rest stays built in.
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polGlobal(), MaxSessions: proto.Int32(1), IdleTimeout: durationpb.New(10 * time.Minute)})
		want.MaxSessions, want.MaxSessionsSource = proto.Int32(1), polSource(polGlobal())
		want.Limits = []*gatehousev1.LimitConstraint{{MaxSessions: 1, CountedTypes: []gatehousev1.SessionType{web, mobile, app},
			OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST, Source: polGlobal()}}
		want.IdleTimeout, want.IdleTimeoutSource = durationpb.New(10*time.Minute), polSource(polGlobal())
		if diff := polResolvedDiff(want, polResolve(t, c, a.tok, ray.Id)); diff != "" {
			t.Errorf("with a global policy (-want +got):\n%s", diff)
		}

		// Role policies beat the global one (even where it is stricter); each role's limit is its
		// own constraint, and the older limit fields describe the most restrictive one; among roles
		// the smallest timeouts win. A role the user does not hold does not count.
		polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polRole("staff"), MaxSessions: proto.Int32(5), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST,
			CountedTypes: []gatehousev1.SessionType{web}, IdleTimeout: durationpb.New(20 * time.Minute),
		})
		polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polRole("contractor"), MaxSessions: proto.Int32(3), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW,
			CountedTypes: []gatehousev1.SessionType{app, api}, IdleTimeout: durationpb.New(40 * time.Minute), AbsoluteTimeout: durationpb.New(2 * time.Hour),
		})
		polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polRole("unheld"), MaxSessions: proto.Int32(1), IdleTimeout: durationpb.New(time.Minute), AbsoluteTimeout: durationpb.New(time.Minute),
			OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE,
		})
		want = &gatehousev1.ResolveSessionPolicyResponse{
			MaxSessions:           proto.Int32(3),
			CountedTypes:          []gatehousev1.SessionType{app, api},
			OnLimit:               gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW,
			IdleTimeout:           durationpb.New(20 * time.Minute),
			AbsoluteTimeout:       durationpb.New(2 * time.Hour),
			OnRoleChange:          gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH,
			MaxSessionsSource:     polSource(polRole("contractor")),
			CountedTypesSource:    polSource(polRole("contractor")),
			OnLimitSource:         polSource(polRole("contractor")),
			IdleTimeoutSource:     polSource(polRole("staff")),
			AbsoluteTimeoutSource: polSource(polRole("contractor")),
			OnRoleChangeSource:    polBuiltIn,
			Limits: []*gatehousev1.LimitConstraint{
				{MaxSessions: 3, CountedTypes: []gatehousev1.SessionType{app, api}, OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW, Source: polRole("contractor")},
				{MaxSessions: 5, CountedTypes: []gatehousev1.SessionType{web}, OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST, Source: polRole("staff")},
			},
		}
		if diff := polResolvedDiff(want, polResolve(t, c, rayTok, ray.Id)); diff != "" {
			t.Errorf("with role policies (-want +got):\n%s", diff)
		}

		// The user's own policy beats the roles', even where it is laxer.
		polCreate(a, &gatehousev1.SessionPolicy{
			Scope: polUser(ray.Id), MaxSessions: proto.Int32(7), IdleTimeout: durationpb.New(45 * time.Minute),
			OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE,
		})
		want.MaxSessions, want.MaxSessionsSource = proto.Int32(7), polSource(polUser(ray.Id))
		want.CountedTypes, want.CountedTypesSource = []gatehousev1.SessionType{web, mobile, app}, polBuiltIn
		want.OnLimit, want.OnLimitSource = gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST, polBuiltIn
		want.Limits = []*gatehousev1.LimitConstraint{{MaxSessions: 7, CountedTypes: []gatehousev1.SessionType{web, mobile, app},
			OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST, Source: polUser(ray.Id)}}
		want.IdleTimeout, want.IdleTimeoutSource = durationpb.New(45*time.Minute), polSource(polUser(ray.Id))
		want.OnRoleChange, want.OnRoleChangeSource = gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE, polSource(polUser(ray.Id))
		if diff := polResolvedDiff(want, polResolve(t, c, a.tok, ray.Id)); diff != "" {
			t.Errorf("with a user policy (-want +got):\n%s", diff)
		}

		// A tie on the smallest limit: deny-new wins, from the policy that says so.
		a.createRole("tie_evict")
		a.createRole("tie_deny")
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("tie_evict"), MaxSessions: proto.Int32(2), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST})
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("tie_deny"), MaxSessions: proto.Int32(2), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW})
		tia := a.createUser("tia", "")
		a.grantUser("tie_evict", tia.Id)
		a.grantUser("tie_deny", tia.Id)
		tied := polResolve(t, c, a.tok, tia.Id)
		if tied.GetMaxSessions() != 2 || tied.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW ||
			!proto.Equal(tied.OnLimitSource, polSource(polRole("tie_deny"))) {
			t.Errorf("with two roles tied on the limit: max %d, on_limit %s from %v; want 2, DENY_NEW from tie_deny",
				tied.GetMaxSessions(), tied.OnLimit, tied.OnLimitSource)
		}

		// Another user, holding none of the roles, sees only the global policy.
		sue := read[gatehousev1.LookupUserResponse](a, gatehousev1.IdentityService_LookupUser_FullMethodName,
			&gatehousev1.LookupUserRequest{Username: "sue"}).User
		got := polResolve(t, c, otherTok, sue.Id)
		if got.GetMaxSessions() != 1 || !proto.Equal(got.MaxSessionsSource, polSource(polGlobal())) ||
			got.AbsoluteTimeout.AsDuration() != 24*time.Hour || !proto.Equal(got.AbsoluteTimeoutSource, polBuiltIn) {
			t.Errorf("sue's resolution: %v", got)
		}
	})
}

// polCheck calls Check and returns the answer or the error.
func polCheck(c testnode.Invoker, callerToken string, req *gatehousev1.CheckRequest) (bool, error) {
	resp, err := testnode.Call[gatehousev1.CheckResponse](context.Background(), c, gatehousev1.PolicyService_Check_FullMethodName, callerToken, req)
	if err != nil {
		return false, err
	}
	return resp.Allowed, nil
}

func polCheckReq(token, userID, role, groupID string) *gatehousev1.CheckRequest {
	req := &gatehousev1.CheckRequest{}
	if token != "" {
		req.Subject = &gatehousev1.CheckRequest_Token{Token: token}
	} else {
		req.Subject = &gatehousev1.CheckRequest_UserId{UserId: userID}
	}
	if role != "" {
		req.Requirement = &gatehousev1.CheckRequest_Role{Role: role}
	} else {
		req.Requirement = &gatehousev1.CheckRequest_GroupId{GroupId: groupID}
	}
	return req
}

func TestCheck(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("reader")
		a.createRole("viewer", "reader")
		a.createRole("editor")
		members := a.createGroup("members")
		others := a.createGroup("others")
		val, valTok := smUser(a, "val", "viewer")
		a.addMember(members.Id, val.Id)
		_, plainTok := smUser(a, "walt")
		_, introTok := smUser(a, "intro", "gatehouse.introspector")

		// By token: the holder needs no authorization header.
		for _, tc := range []struct {
			what        string
			role, group string
			want        bool
		}{
			{"a role held directly", "viewer", "", true},
			{"a role held by containment", "reader", "", true},
			{"a role not held", "editor", "", false},
			{"a group of the user", "", members.Id, true},
			{"a group the user is not in", "", others.Id, false},
		} {
			got, err := polCheck(c, "", polCheckReq(valTok, "", tc.role, tc.group))
			if err != nil || got != tc.want {
				t.Errorf("Check by token, %s: %v, %v; want %v", tc.what, got, err, tc.want)
			}
			// By user id: introspectors only.
			got, err = polCheck(c, introTok, polCheckReq("", val.Id, tc.role, tc.group))
			if err != nil || got != tc.want {
				t.Errorf("Check by user id as an introspector, %s: %v, %v; want %v", tc.what, got, err, tc.want)
			}
		}
		_, err := polCheck(c, plainTok, polCheckReq("", val.Id, "viewer", ""))
		polWantErr(t, "Check by user id as a plain user", err, codes.PermissionDenied, "", "")
		_, err = polCheck(c, valTok, polCheckReq("", val.Id, "viewer", ""))
		polWantErr(t, "Check of one's own user id without introspector", err, codes.PermissionDenied, "", "")
		_, err = polCheck(c, "", polCheckReq("", val.Id, "viewer", ""))
		polWantErr(t, "Check by user id, anonymous", err, codes.Unauthenticated, "", "")
		_, err = polCheck(c, introTok, polCheckReq("", unknownID, "viewer", ""))
		polWantErr(t, "Check of an unknown user", err, codes.NotFound, "USER_NOT_FOUND", "")
		_, err = polCheck(c, "", polCheckReq(valTok, "", "", unknownID))
		polWantErr(t, "Check of an unknown group", err, codes.NotFound, "GROUP_NOT_FOUND", "")

		// A grant is visible to the next check.
		a.grantUser("editor", val.Id)
		if got, err := polCheck(c, "", polCheckReq(valTok, "", "editor", "")); err != nil || !got {
			t.Errorf("Check after granting editor: %v, %v", got, err)
		}

		// An ended session's token checks nothing.
		ended := testnode.Login(t, c, "val", "val-password")
		testnode.MustCall[gatehousev1.LogoutResponse](t, c, gatehousev1.SessionService_Logout_FullMethodName, ended.Token, &gatehousev1.LogoutRequest{})
		_, err = polCheck(c, "", polCheckReq(ended.Token, "", "viewer", ""))
		polWantErr(t, "Check with an ended session's token", err, codes.Unauthenticated, "SESSION_TERMINATED", "")
		_, err = polCheck(c, "", polCheckReq(wellFormedToken(t), "", "viewer", ""))
		polWantErr(t, "Check with an unknown token", err, codes.Unauthenticated, "SESSION_NOT_FOUND", "")
	})
}

// smSessions creates sessions of user of the given types with a password.
func smSessions(t *testing.T, c testnode.Invoker, username, password string, types ...gatehousev1.SessionType) []*gatehousev1.CreateSessionResponse {
	t.Helper()
	var out []*gatehousev1.CreateSessionResponse
	for _, typ := range types {
		out = append(out, smCreate(t, c, username, password, typ, nil))
	}
	return out
}

func TestRoleChangeRefreshesEverySession(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("reports")
		a.createRole("ops")
		g := a.createGroup("ops-team")
		a.grantGroup("ops", g.Id)
		xena := a.createUser("xena", "xena-password")
		sessions := smSessions(t, c, "xena", "xena-password", gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
			gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP, gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE)
		checkAll := func(what string, want ...string) {
			t.Helper()
			for _, s := range sessions {
				v := mustValidate(t, c, what, s.Token)
				if !slices.Equal(v.Roles, want) || v.Session.GetId() != s.Session.Id || !v.Session.GetActive() {
					t.Errorf("%s: %s session %s validates with roles %v (session %s, active %v), want %v", what, s.Session.Type,
						s.Session.Id, v.Roles, v.Session.GetId(), v.Session.GetActive(), want)
				}
			}
		}
		checkAll("before any grant")

		mark := lastEventID(t, n)
		a.grantUser("reports", xena.Id)
		checkAll("after a direct grant", "reports")
		a.addMember(g.Id, xena.Id)
		checkAll("after joining a group that carries a role", "ops", "reports")
		mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "reports", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: xena.Id}})
		checkAll("after a revoke", "ops")

		evs := eventsAfter(t, n, mark)
		if got := terminations(evs); len(got) != 0 {
			t.Errorf("refreshing role changes ended sessions: %v", got)
		}
		if got := ofType(evs, gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED); len(got) != 3 {
			t.Errorf("%d ROLES_CHANGED events for three changes", len(got))
		}
	})
}

// smPositions returns the log positions of the events after id, by event id.
func smPositions(t *testing.T, n *testnode.Node, after int64) map[int64]events.Position {
	t.Helper()
	st := n.Store()
	q := "SELECT id, '0' FROM events WHERE id > ?"
	if st.IsPostgres() {
		q = "SELECT id, xid::text FROM events WHERE id > ?"
	}
	rows, err := st.DB.Query(st.Rebind(q), after)
	if err != nil {
		t.Fatalf("reading event positions: %v", err)
	}
	defer rows.Close()
	out := map[int64]events.Position{}
	for rows.Next() {
		var id int64
		var xid uint64
		if err := rows.Scan(&id, &xid); err != nil {
			t.Fatalf("reading event positions: %v", err)
		}
		out[id] = events.Position{Log: st.LogID(), Xid: xid, ID: id}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading event positions: %v", err)
	}
	return out
}

// wantEndedInChange checks that a change whose response carried consistencyToken, made after event
// mark, ended exactly the sessions of ended with ROLE_CHANGE, in its own transaction: the
// SESSION_TERMINATED events come no later than the token, in the same transaction as the change's
// own event of type changeType, and no other event was written in between.
func wantEndedInChange(t *testing.T, n *testnode.Node, c testnode.Invoker, what string, mark int64, consistencyToken string,
	changeType gatehousev1.EventType, ended ...*gatehousev1.CreateSessionResponse) {
	t.Helper()
	for _, s := range ended {
		wantEnded(t, c, what, s.Token, gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE)
	}
	tok, err := events.ParseCursor(consistencyToken)
	if err != nil || tok.IsZero() {
		t.Fatalf("%s: consistency token %q: %v", what, consistencyToken, err)
	}
	evs := eventsAfter(t, n, mark)
	pos := smPositions(t, n, mark)
	want := map[string]gatehousev1.TerminationReason{}
	for _, s := range ended {
		want[s.Session.Id] = gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE
	}
	if got := terminations(evs); !mapsEqual(got, want) {
		t.Errorf("%s: SESSION_TERMINATED events %v, want %v", what, got, want)
	}
	changes := ofType(evs, changeType)
	if len(changes) != 1 {
		t.Fatalf("%s: %d %s events, want 1", what, len(changes), changeType)
	}
	change := pos[changes[0].ID]
	var last events.Position
	for _, e := range evs {
		p := pos[e.ID]
		if last.Less(p) {
			last = p
		}
		if e.Event.Type != gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED {
			continue
		}
		if tok.Less(p) {
			t.Errorf("%s: SESSION_TERMINATED at %+v comes after the response's consistency token %+v", what, p, tok)
		}
		if p.Xid != change.Xid {
			t.Errorf("%s: SESSION_TERMINATED at %+v is not in the transaction of %s at %+v", what, p, changeType, change)
		}
	}
	if last != tok {
		t.Errorf("%s: the consistency token %+v is not the position of the change's last event %+v (events %v)", what, tok, last, evs)
	}
	// Every event from the change's first to the token is the change's own: one transaction.
	for _, e := range evs {
		switch e.Event.Type {
		case changeType, gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED:
		case gatehousev1.EventType_EVENT_TYPE_POLICY_DELETED:
			// Deleting a role deletes its policy in the same transaction.
			if changeType != gatehousev1.EventType_EVENT_TYPE_ROLE_DELETED {
				t.Errorf("%s: unexpected event %s (%d) among the change's", what, e.Type, e.ID)
			}
		default:
			t.Errorf("%s: unexpected event %s (%d) among the change's", what, e.Type, e.ID)
		}
	}
}

func TestRoleChangeReauthenticate(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("payroll")
		a.createRole("plain")
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("payroll"), OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE})
		finance := a.createGroup("finance")
		a.grantGroup("payroll", finance.Id)
		yan := a.createUser("yan", "yan-password")
		zoe := a.createUser("zoe", "zoe-password")
		types := []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER, gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE}
		yans := smSessions(t, c, "yan", "yan-password", types...)
		zoes := smSessions(t, c, "zoe", "zoe-password", types...)

		// A role without a re-authenticate policy refreshes the sessions.
		mark := lastEventID(t, n)
		a.grantUser("plain", yan.Id)
		for _, s := range yans {
			if v := mustValidate(t, c, "after granting plain", s.Token); !slices.Equal(v.Roles, []string{"plain"}) {
				t.Errorf("after granting plain: roles %v", v.Roles)
			}
		}
		if got := terminations(eventsAfter(t, n, mark)); len(got) != 0 {
			t.Errorf("granting a role without a policy ended sessions: %v", got)
		}

		// A direct grant of a re-authenticate role ends every session of the user, in the grant's
		// transaction; other users' sessions live on.
		mark = lastEventID(t, n)
		grant := mutate[gatehousev1.GrantRoleResponse](a, gatehousev1.IdentityService_GrantRole_FullMethodName,
			&gatehousev1.GrantRoleRequest{Role: "payroll", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: yan.Id}})
		wantEndedInChange(t, n, c, "after granting payroll directly", mark, grant.ConsistencyToken, gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED, yans...)
		for _, s := range zoes {
			mustValidate(t, c, "another user's session after the grant", s.Token)
		}

		// A new login carries the role; revoking it ends the sessions again.
		again := smSessions(t, c, "yan", "yan-password", types...)
		if v := mustValidate(t, c, "a new login", again[0].Token); !slices.Equal(v.Roles, []string{"payroll", "plain"}) {
			t.Errorf("a new login's roles: %v", v.Roles)
		}
		mark = lastEventID(t, n)
		revoke := mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "payroll", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: yan.Id}})
		wantEndedInChange(t, n, c, "after revoking payroll", mark, revoke.ConsistencyToken, gatehousev1.EventType_EVENT_TYPE_ROLE_REVOKED, again...)

		// Revoking a role without a policy does not end them.
		third := smSessions(t, c, "yan", "yan-password", types...)
		mark = lastEventID(t, n)
		mutate[gatehousev1.RevokeRoleResponse](a, gatehousev1.IdentityService_RevokeRole_FullMethodName,
			&gatehousev1.RevokeRoleRequest{Role: "plain", Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: yan.Id}})
		for _, s := range third {
			if v := mustValidate(t, c, "after revoking plain", s.Token); len(v.Roles) != 0 {
				t.Errorf("after revoking plain: roles %v", v.Roles)
			}
		}
		if got := terminations(eventsAfter(t, n, mark)); len(got) != 0 {
			t.Errorf("revoking a role without a policy ended sessions: %v", got)
		}

		// Joining a group that carries the role ends the member's sessions just the same.
		mark = lastEventID(t, n)
		join := mutate[gatehousev1.AddGroupMemberResponse](a, gatehousev1.IdentityService_AddGroupMember_FullMethodName,
			&gatehousev1.AddGroupMemberRequest{GroupId: finance.Id, UserId: zoe.Id})
		wantEndedInChange(t, n, c, "after joining finance", mark, join.ConsistencyToken, gatehousev1.EventType_EVENT_TYPE_GROUP_MEMBER_ADDED, zoes...)
		for _, s := range third {
			mustValidate(t, c, "another user's session after the join", s.Token)
		}
		mustValidate(t, c, "the administrator's session", a.tok)
	})
}

// TestRoleChangeReauthenticateThroughGroups covers the other ways of gaining or losing a role whose
// policy says re-authenticate: a grant to a group, leaving the group, deleting the group, and
// deleting the role itself. Each ends exactly the affected users' sessions in its own transaction.
func TestRoleChangeReauthenticateThroughGroups(t *testing.T) {
	testnode.ForEach(t, func(t *testing.T, n *testnode.Node, c testnode.Invoker) {
		a := newIDAdmin(t, n, c)
		a.createRole("payroll")
		polCreate(a, &gatehousev1.SessionPolicy{Scope: polRole("payroll"), OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE})
		finance := a.createGroup("finance")
		amos := a.createUser("amos", "amos-password")
		bea := a.createUser("bea", "bea-password")
		a.createUser("cy", "cy-password") // not a member
		a.addMember(finance.Id, amos.Id)
		a.addMember(finance.Id, bea.Id)
		web := gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
		login := func() (amosS, beaS, cyS *gatehousev1.CreateSessionResponse) {
			return smCreate(t, c, "amos", "amos-password", web, nil), smCreate(t, c, "bea", "bea-password", web, nil),
				smCreate(t, c, "cy", "cy-password", web, nil)
		}

		// A grant to the group ends its members' sessions, not others'.
		amosS, beaS, cyS := login()
		mark := lastEventID(t, n)
		grant := mutate[gatehousev1.GrantRoleResponse](a, gatehousev1.IdentityService_GrantRole_FullMethodName,
			&gatehousev1.GrantRoleRequest{Role: "payroll", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: finance.Id}})
		wantEndedInChange(t, n, c, "after granting payroll to the group", mark, grant.ConsistencyToken,
			gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED, amosS, beaS)
		mustValidate(t, c, "a non-member's session", cyS.Token)

		// Leaving the group loses the role.
		amosS, beaS, _ = login()
		beaKept := beaS
		mark = lastEventID(t, n)
		left := mutate[gatehousev1.RemoveGroupMemberResponse](a, gatehousev1.IdentityService_RemoveGroupMember_FullMethodName,
			&gatehousev1.RemoveGroupMemberRequest{GroupId: finance.Id, UserId: amos.Id})
		wantEndedInChange(t, n, c, "after leaving finance", mark, left.ConsistencyToken,
			gatehousev1.EventType_EVENT_TYPE_GROUP_MEMBER_REMOVED, amosS)
		mustValidate(t, c, "a remaining member's session", beaS.Token)

		// Deleting the group loses the role for its members.
		a.addMember(finance.Id, amos.Id)
		amosS, beaS, cyS = login()
		mark = lastEventID(t, n)
		deleted := mutate[gatehousev1.DeleteGroupResponse](a, gatehousev1.IdentityService_DeleteGroup_FullMethodName,
			&gatehousev1.DeleteGroupRequest{GroupId: finance.Id})
		wantEndedInChange(t, n, c, "after deleting finance", mark, deleted.ConsistencyToken,
			gatehousev1.EventType_EVENT_TYPE_GROUP_DELETED, amosS, beaS, beaKept)
		mustValidate(t, c, "a non-member's session", cyS.Token)

		// Deleting the role itself is losing it: its policy (deleted with it) still decides.
		a.grantUser("payroll", bea.Id)
		amosS, beaS, _ = login()
		mark = lastEventID(t, n)
		gone := mutate[gatehousev1.DeleteRoleResponse](a, gatehousev1.IdentityService_DeleteRole_FullMethodName,
			&gatehousev1.DeleteRoleRequest{Name: "payroll"})
		mustValidate(t, c, "the session of a user who no longer holds the role", amosS.Token)
		if _, err := validate(c, beaS.Token); err == nil {
			t.Errorf("after DeleteRole of a role whose policy says re-authenticate, its holder's session %s still validates "+
				"(want SESSION_TERMINATED with ROLE_CHANGE)", beaS.Session.Id)
		} else {
			wantEndedInChange(t, n, c, "after deleting payroll", mark, gone.ConsistencyToken, gatehousev1.EventType_EVENT_TYPE_ROLE_DELETED, beaS)
		}
	})
}
