package policy_test

import (
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/policy"
)

func i32(v int32) *int32 { return &v }
func ns(d time.Duration) *int64 {
	v := int64(d)
	return &v
}

func rolePolicy(role string, p ent.SessionPolicy) *ent.SessionPolicy {
	p.ScopeKind, p.ScopeRef = entpolicy.ScopeKindRole, role
	return &p
}

const (
	deny    = "LIMIT_ACTION_DENY_NEW"
	evict   = "LIMIT_ACTION_EVICT_OLDEST"
	reauth  = "ROLE_CHANGE_ACTION_REAUTHENTICATE"
	refresh = "ROLE_CHANGE_ACTION_REFRESH"
)

func TestResolveDefaults(t *testing.T) {
	r := (&policy.Set{}).Resolve()
	if r.MaxSessions != nil || r.OnLimit != policy.DefaultOnLimit || r.IdleTimeout != 30*time.Minute ||
		r.AbsoluteTimeout != 24*time.Hour || r.OnRoleChange != policy.DefaultOnRoleChange ||
		!slices.Equal(r.CountedTypes, policy.DefaultCountedTypes) {
		t.Fatalf("defaults = %+v", r)
	}
	if !r.MaxSessionsSource.BuiltInDefault || !r.IdleTimeoutSource.BuiltInDefault {
		t.Error("default fields must say they are built-in defaults")
	}
	if r.Counts(gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE) {
		t.Error("non-interactive sessions must not count by default")
	}
}

func TestResolveFieldByField(t *testing.T) {
	global := &ent.SessionPolicy{ScopeKind: entpolicy.ScopeKindGlobal, MaxSessions: i32(10), IdleTimeoutNs: ns(time.Hour), OnRoleChange: reauth}
	user := &ent.SessionPolicy{ScopeKind: entpolicy.ScopeKindUser, ScopeRef: "u1", IdleTimeoutNs: ns(2 * time.Hour)}
	contractor := rolePolicy("contractor", ent.SessionPolicy{MaxSessions: i32(2), OnLimit: evict, AbsoluteTimeoutNs: ns(8 * time.Hour),
		CountedTypes: []string{"SESSION_TYPE_WEB_BROWSER"}})
	intern := rolePolicy("intern", ent.SessionPolicy{MaxSessions: i32(2), OnLimit: deny, AbsoluteTimeoutNs: ns(4 * time.Hour),
		CountedTypes: []string{"SESSION_TYPE_MOBILE_APP"}})
	staff := rolePolicy("staff", ent.SessionPolicy{MaxSessions: i32(5), OnLimit: evict, OnRoleChange: refresh})

	r := (&policy.Set{User: user, Roles: []*ent.SessionPolicy{contractor, intern, staff}, Global: global}).Resolve()

	// The user's own value wins, even when less restrictive than the global one.
	if r.IdleTimeout != 2*time.Hour || r.IdleTimeoutSource.Scopes[0].GetUserId() != "u1" {
		t.Errorf("idle = %v from %v, want 2h from the user", r.IdleTimeout, r.IdleTimeoutSource)
	}
	// The smallest limit among roles beats the global one; both tied policies are its source.
	if *r.MaxSessions != 2 || len(r.MaxSessionsSource.Scopes) != 2 {
		t.Errorf("max = %d from %v, want 2 from contractor and intern", *r.MaxSessions, r.MaxSessionsSource)
	}
	// The action comes from the policies with the smallest limit; deny-new wins the tie.
	if r.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW || r.OnLimitSource.Scopes[0].GetRole() != "intern" {
		t.Errorf("on_limit = %v from %v, want deny-new from intern", r.OnLimit, r.OnLimitSource)
	}
	// Counted types are the union over the roles that set them.
	want := []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER, gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP}
	if !slices.Equal(r.CountedTypes, want) {
		t.Errorf("counted = %v, want %v", r.CountedTypes, want)
	}
	// The smallest timeout among roles.
	if r.AbsoluteTimeout != 4*time.Hour {
		t.Errorf("absolute = %v, want 4h", r.AbsoluteTimeout)
	}
	// A role setting refresh is more specific than the global re-authenticate.
	if r.OnRoleChange != gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH {
		t.Errorf("on_role_change = %v, want refresh from staff", r.OnRoleChange)
	}
}

func TestReauthenticateOnChange(t *testing.T) {
	sensitive := rolePolicy("sensitive", ent.SessionPolicy{OnRoleChange: reauth})
	plain := rolePolicy("plain", ent.SessionPolicy{OnRoleChange: refresh})
	globalReauth := &ent.SessionPolicy{ScopeKind: entpolicy.ScopeKindGlobal, OnRoleChange: reauth}
	userReauth := &ent.SessionPolicy{ScopeKind: entpolicy.ScopeKindUser, OnRoleChange: reauth}
	for _, tc := range []struct {
		name    string
		set     policy.Set
		changed []string
		want    bool
	}{
		{"no policies", policy.Set{}, []string{"x"}, false},
		{"a changed role says reauthenticate", policy.Set{Roles: []*ent.SessionPolicy{sensitive, plain}}, []string{"plain", "sensitive"}, true},
		{"only an unchanged role says reauthenticate", policy.Set{Roles: []*ent.SessionPolicy{sensitive, plain}}, []string{"plain"}, false},
		{"the user's policy says reauthenticate", policy.Set{User: userReauth, Roles: []*ent.SessionPolicy{plain}}, []string{"plain"}, true},
		{"global decides when nothing else does", policy.Set{Global: globalReauth}, []string{"x"}, true},
		{"a changed role's refresh overrides global", policy.Set{Global: globalReauth, Roles: []*ent.SessionPolicy{plain}}, []string{"plain"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.set.ReauthenticateOnChange(tc.changed); got != tc.want {
				t.Errorf("ReauthenticateOnChange(%v) = %v, want %v", tc.changed, got, tc.want)
			}
		})
	}
}

// TestResolveOnLimit covers where the limit's action comes from (ARCHITECTURE.md section 8): the
// role policies that set the smallest limit, deny-new on a tie, falling through to the global
// policy and the default when none of them sets an action.
func TestResolveOnLimit(t *testing.T) {
	const (
		denyNew    = gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW
		evictOlder = gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST
	)
	global := func(onLimit string) *ent.SessionPolicy {
		return &ent.SessionPolicy{ScopeKind: entpolicy.ScopeKindGlobal, OnLimit: onLimit}
	}
	user := func(p ent.SessionPolicy) *ent.SessionPolicy {
		p.ScopeKind, p.ScopeRef = entpolicy.ScopeKindUser, "u1"
		return &p
	}
	small := rolePolicy("small", ent.SessionPolicy{MaxSessions: i32(2)})
	smallEvict := rolePolicy("small_evict", ent.SessionPolicy{MaxSessions: i32(2), OnLimit: evict})
	smallDeny := rolePolicy("small_deny", ent.SessionPolicy{MaxSessions: i32(2), OnLimit: deny})
	bigDeny := rolePolicy("big_deny", ent.SessionPolicy{MaxSessions: i32(5), OnLimit: deny})
	bigEvict := rolePolicy("big_evict", ent.SessionPolicy{MaxSessions: i32(5), OnLimit: evict})
	onlyDeny := rolePolicy("only_deny", ent.SessionPolicy{OnLimit: deny})
	onlyEvict := rolePolicy("only_evict", ent.SessionPolicy{OnLimit: evict})

	// src names the scopes a source must list, in order: a role name, "global", "user" or "" for
	// the built-in default.
	for _, tc := range []struct {
		name string
		set  policy.Set
		want gatehousev1.LimitAction
		src  []string
	}{
		{"the smallest limit sets no action: the default, not the larger limit's",
			policy.Set{Roles: []*ent.SessionPolicy{small, bigDeny}}, evictOlder, []string{""}},
		{"the smallest limit sets no action: the global action",
			policy.Set{Roles: []*ent.SessionPolicy{small, bigDeny}, Global: global(evict)}, evictOlder, []string{"global"}},
		{"the smallest limit sets no action: a global deny-new",
			policy.Set{Roles: []*ent.SessionPolicy{small, bigEvict}, Global: global(deny)}, denyNew, []string{"global"}},
		{"the smallest limit's action beats a larger limit's deny-new",
			policy.Set{Roles: []*ent.SessionPolicy{bigDeny, smallEvict}}, evictOlder, []string{"small_evict"}},
		{"the smallest limit's action beats the global one",
			policy.Set{Roles: []*ent.SessionPolicy{smallEvict}, Global: global(deny)}, evictOlder, []string{"small_evict"}},
		{"a tie on the smallest limit: deny-new wins",
			policy.Set{Roles: []*ent.SessionPolicy{smallEvict, smallDeny, bigEvict}}, denyNew, []string{"small_deny"}},
		{"a tie on the smallest limit where only one sets an action",
			policy.Set{Roles: []*ent.SessionPolicy{small, smallEvict, bigDeny}}, evictOlder, []string{"small_evict"}},
		{"an action without a limit does not apply to another role's limit",
			policy.Set{Roles: []*ent.SessionPolicy{onlyDeny, small}}, evictOlder, []string{""}},
		{"no role sets a limit: deny-new among the actions",
			policy.Set{Roles: []*ent.SessionPolicy{onlyDeny, onlyEvict}, Global: global(evict)}, denyNew, []string{"only_deny"}},
		{"no role sets a limit: evict-oldest among the actions",
			policy.Set{Roles: []*ent.SessionPolicy{onlyEvict}, Global: global(deny)}, evictOlder, []string{"only_evict"}},
		{"the user's action wins",
			policy.Set{User: user(ent.SessionPolicy{OnLimit: evict}), Roles: []*ent.SessionPolicy{smallDeny}}, evictOlder, []string{"user"}},
		{"the user's limit without an action: the roles' smallest limit decides",
			policy.Set{User: user(ent.SessionPolicy{MaxSessions: i32(9)}), Roles: []*ent.SessionPolicy{smallDeny, bigEvict}}, denyNew, []string{"small_deny"}},
		{"the user's limit without an action, roles without one: the global action",
			policy.Set{User: user(ent.SessionPolicy{MaxSessions: i32(9)}), Roles: []*ent.SessionPolicy{small, bigDeny}, Global: global(evict)},
			evictOlder, []string{"global"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.set.Resolve()
			var src []string
			if r.OnLimitSource.GetBuiltInDefault() {
				src = append(src, "")
			}
			for _, sc := range r.OnLimitSource.GetScopes() {
				switch {
				case sc.GetGlobal():
					src = append(src, "global")
				case sc.GetUserId() != "":
					src = append(src, "user")
				default:
					src = append(src, sc.GetRole())
				}
			}
			if r.OnLimit != tc.want || !slices.Equal(src, tc.src) {
				t.Errorf("on_limit = %v from %q, want %v from %q", r.OnLimit, src, tc.want, tc.src)
			}
		})
	}
}
