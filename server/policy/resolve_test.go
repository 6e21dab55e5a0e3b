package policy_test

import (
	"fmt"
	"slices"
	"strings"
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
	if len(r.Limits) != 0 {
		t.Errorf("limits = %v, want none", r.Limits)
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
	// Each role's limit is its own constraint, in the order of role names; the global one does not
	// apply beside them.
	if got := limitsString(r.Limits); got != "contractor:2:EVICT_OLDEST:[WEB_BROWSER] intern:2:DENY_NEW:[MOBILE_APP] staff:5:EVICT_OLDEST:[WEB_BROWSER MOBILE_BROWSER MOBILE_APP]" {
		t.Errorf("limits = %s", got)
	}
	// The older fields: the smallest limit, from both tied policies; the counted types and action of
	// the tied constraint that denies.
	if *r.MaxSessions != 2 || len(r.MaxSessionsSource.Scopes) != 2 {
		t.Errorf("max = %d from %v, want 2 from contractor and intern", *r.MaxSessions, r.MaxSessionsSource)
	}
	if r.OnLimit != gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW || r.OnLimitSource.Scopes[0].GetRole() != "intern" {
		t.Errorf("on_limit = %v from %v, want deny-new from intern", r.OnLimit, r.OnLimitSource)
	}
	want := []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP}
	if !slices.Equal(r.CountedTypes, want) || r.CountedTypesSource.Scopes[0].GetRole() != "intern" {
		t.Errorf("counted = %v from %v, want %v from intern", r.CountedTypes, r.CountedTypesSource, want)
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

// limitsString writes limits as "source:max:action:[types]", space-separated, where source is a
// role name, "user" or "global".
func limitsString(ls []policy.Limit) string {
	var out []string
	for _, l := range ls {
		src := l.Source.GetRole()
		switch {
		case l.Source.GetGlobal():
			src = "global"
		case l.Source.GetUserId() != "":
			src = "user"
		}
		var types []string
		for _, t := range l.CountedTypes {
			types = append(types, strings.TrimPrefix(t.String(), "SESSION_TYPE_"))
		}
		out = append(out, fmt.Sprintf("%s:%d:%s:[%s]", src, l.Max, strings.TrimPrefix(l.OnLimit.String(), "LIMIT_ACTION_"), strings.Join(types, " ")))
	}
	return strings.Join(out, " ")
}

// sourcesString writes a source as the scopes it names: a role name, "global", "user" or "" for
// the built-in default.
func sourcesString(s *gatehousev1.PolicySource) []string {
	var src []string
	if s.GetBuiltInDefault() {
		src = append(src, "")
	}
	for _, sc := range s.GetScopes() {
		switch {
		case sc.GetGlobal():
			src = append(src, "global")
		case sc.GetUserId() != "":
			src = append(src, "user")
		default:
			src = append(src, sc.GetRole())
		}
	}
	return src
}

// TestResolveLimits covers which limits apply (ARCHITECTURE.md section 8): the user's own if it
// sets one, else one constraint per role policy that sets one, else the global one; each with its
// own counted types and action (interactive types and evict-oldest when its policy leaves them
// unset); and the older single-limit fields, which describe the most restrictive constraint.
func TestResolveLimits(t *testing.T) {
	global := func(p ent.SessionPolicy) *ent.SessionPolicy {
		p.ScopeKind = entpolicy.ScopeKindGlobal
		return &p
	}
	user := func(p ent.SessionPolicy) *ent.SessionPolicy {
		p.ScopeKind, p.ScopeRef = entpolicy.ScopeKindUser, "u1"
		return &p
	}
	contractor := rolePolicy("contractor", ent.SessionPolicy{MaxSessions: i32(1), CountedTypes: []string{"SESSION_TYPE_MOBILE_APP"}})
	staff := rolePolicy("staff", ent.SessionPolicy{MaxSessions: i32(10), CountedTypes: []string{"SESSION_TYPE_WEB_BROWSER"}})
	small := rolePolicy("small", ent.SessionPolicy{MaxSessions: i32(2)})
	smallEvict := rolePolicy("small_evict", ent.SessionPolicy{MaxSessions: i32(2), OnLimit: evict})
	smallDeny := rolePolicy("small_deny", ent.SessionPolicy{MaxSessions: i32(2), OnLimit: deny})
	bigDeny := rolePolicy("big_deny", ent.SessionPolicy{MaxSessions: i32(5), OnLimit: deny})
	onlyDeny := rolePolicy("only_deny", ent.SessionPolicy{OnLimit: deny, CountedTypes: []string{"SESSION_TYPE_NON_INTERACTIVE"}})
	const all = "WEB_BROWSER MOBILE_BROWSER MOBILE_APP"

	for _, tc := range []struct {
		name   string
		set    policy.Set
		limits string
		// The older fields: max (-1 for none) from maxFrom; on_limit from actFrom; counted types
		// (space-separated) from typesFrom.
		max       int32
		maxFrom   []string
		onLimit   gatehousev1.LimitAction
		actFrom   []string
		types     string
		typesFrom []string
	}{
		{name: "no limit anywhere", set: policy.Set{Roles: []*ent.SessionPolicy{onlyDeny}, Global: global(ent.SessionPolicy{OnLimit: deny})},
			limits: "", max: -1, maxFrom: []string{""}, onLimit: policy.DefaultOnLimit, actFrom: []string{""}, types: all, typesFrom: []string{""}},
		{name: "contractor and staff are two constraints", set: policy.Set{Roles: []*ent.SessionPolicy{staff, contractor}, Global: global(ent.SessionPolicy{MaxSessions: i32(1)})},
			limits: "contractor:1:EVICT_OLDEST:[MOBILE_APP] staff:10:EVICT_OLDEST:[WEB_BROWSER]",
			max:    1, maxFrom: []string{"contractor"}, onLimit: policy.DefaultOnLimit, actFrom: []string{""}, types: "MOBILE_APP", typesFrom: []string{"contractor"}},
		{name: "a role limit without an action evicts, whatever the global policy says",
			set:    policy.Set{Roles: []*ent.SessionPolicy{small, bigDeny}, Global: global(ent.SessionPolicy{OnLimit: deny})},
			limits: "big_deny:5:DENY_NEW:[" + all + "] small:2:EVICT_OLDEST:[" + all + "]",
			max:    2, maxFrom: []string{"small"}, onLimit: policy.DefaultOnLimit, actFrom: []string{""}, types: all, typesFrom: []string{""}},
		{name: "a tie on the smallest limit: the older fields take the deny-new constraint",
			set:    policy.Set{Roles: []*ent.SessionPolicy{smallEvict, smallDeny}},
			limits: "small_deny:2:DENY_NEW:[" + all + "] small_evict:2:EVICT_OLDEST:[" + all + "]",
			max:    2, maxFrom: []string{"small_deny", "small_evict"}, onLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW, actFrom: []string{"small_deny"},
			types: all, typesFrom: []string{""}},
		{name: "an action without a limit is no constraint",
			set:    policy.Set{Roles: []*ent.SessionPolicy{onlyDeny, small}},
			limits: "small:2:EVICT_OLDEST:[" + all + "]",
			max:    2, maxFrom: []string{"small"}, onLimit: policy.DefaultOnLimit, actFrom: []string{""}, types: all, typesFrom: []string{""}},
		{name: "the global limit applies when no role sets one",
			set:    policy.Set{Roles: []*ent.SessionPolicy{onlyDeny}, Global: global(ent.SessionPolicy{MaxSessions: i32(3), OnLimit: deny})},
			limits: "global:3:DENY_NEW:[" + all + "]",
			max:    3, maxFrom: []string{"global"}, onLimit: gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW, actFrom: []string{"global"}, types: all, typesFrom: []string{""}},
		{name: "the user's limit is the one limit, even when laxer",
			set: policy.Set{User: user(ent.SessionPolicy{MaxSessions: i32(9), CountedTypes: []string{"SESSION_TYPE_MOBILE_APP", "SESSION_TYPE_WEB_BROWSER"}}),
				Roles: []*ent.SessionPolicy{smallDeny, contractor}, Global: global(ent.SessionPolicy{MaxSessions: i32(1)})},
			limits: "user:9:EVICT_OLDEST:[WEB_BROWSER MOBILE_APP]",
			max:    9, maxFrom: []string{"user"}, onLimit: policy.DefaultOnLimit, actFrom: []string{""}, types: "WEB_BROWSER MOBILE_APP", typesFrom: []string{"user"}},
		{name: "the user's action without a limit is no constraint",
			set:    policy.Set{User: user(ent.SessionPolicy{OnLimit: deny}), Roles: []*ent.SessionPolicy{small}},
			limits: "small:2:EVICT_OLDEST:[" + all + "]",
			max:    2, maxFrom: []string{"small"}, onLimit: policy.DefaultOnLimit, actFrom: []string{""}, types: all, typesFrom: []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.set.Resolve()
			if got := limitsString(r.Limits); got != tc.limits {
				t.Errorf("limits = %q, want %q", got, tc.limits)
			}
			gotMax := int32(-1)
			if r.MaxSessions != nil {
				gotMax = *r.MaxSessions
			}
			if got := sourcesString(r.MaxSessionsSource); gotMax != tc.max || !slices.Equal(got, tc.maxFrom) {
				t.Errorf("max_sessions = %d from %q, want %d from %q", gotMax, got, tc.max, tc.maxFrom)
			}
			if got := sourcesString(r.OnLimitSource); r.OnLimit != tc.onLimit || !slices.Equal(got, tc.actFrom) {
				t.Errorf("on_limit = %v from %q, want %v from %q", r.OnLimit, got, tc.onLimit, tc.actFrom)
			}
			var types []string
			for _, ty := range r.CountedTypes {
				types = append(types, strings.TrimPrefix(ty.String(), "SESSION_TYPE_"))
			}
			if got := sourcesString(r.CountedTypesSource); strings.Join(types, " ") != tc.types || !slices.Equal(got, tc.typesFrom) {
				t.Errorf("counted_types = %v from %q, want %s from %q", types, got, tc.types, tc.typesFrom)
			}
		})
	}
}
