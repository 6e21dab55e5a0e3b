// Package policy is the domain of session policies: their storage, and their resolution for a user
// (ARCHITECTURE.md section 8), field by field, with the scope each field came from.
package policy

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/store"
)

// Built-in defaults, used where no policy sets a field.
const (
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultAbsoluteTimeout = 24 * time.Hour
	DefaultOnLimit         = gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST
	DefaultOnRoleChange    = gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH
)

// DefaultCountedTypes are the interactive session types.
var DefaultCountedTypes = []gatehousev1.SessionType{
	gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
	gatehousev1.SessionType_SESSION_TYPE_MOBILE_BROWSER,
	gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP,
}

// RoleChange is the difference in one user's effective roles made by a transaction; the
// role-change action is decided on it.
type RoleChange struct {
	UserID  string
	Roles   []string
	Added   []string
	Removed []string
}

// Limit is one concurrent-session limit that applies to a user, a constraint of its own: a new
// session of a type it counts must leave at most Max active sessions of its counted types.
type Limit struct {
	// Max is the limit.
	Max int32
	// CountedTypes are the types it counts: its policy's, or DefaultCountedTypes when the policy
	// names none.
	CountedTypes []gatehousev1.SessionType
	// OnLimit is its policy's action, or DefaultOnLimit when the policy sets none.
	OnLimit gatehousev1.LimitAction
	// Source is the scope of the policy that sets it.
	Source *gatehousev1.PolicyScope

	// ownTypes and ownAction say whether the policy sets the counted types and the action.
	ownTypes, ownAction bool
}

// Counts reports whether sessions of type t count towards l.
func (l *Limit) Counts(t gatehousev1.SessionType) bool { return slices.Contains(l.CountedTypes, t) }

// Resolved is the policy in force for one user.
type Resolved struct {
	// Limits are the concurrent-session limits, each its own constraint (ARCHITECTURE.md section
	// 8), in a fixed order: the user's own, or the roles' by role name, or the global one. Empty:
	// no limit.
	Limits []Limit

	// MaxSessions, CountedTypes and OnLimit describe the most restrictive of Limits, for older
	// clients (mostRestrictive); MaxSessions is nil when there is no limit, and the other two are
	// then the built-in defaults. Admission goes by Limits.
	MaxSessions     *int32
	CountedTypes    []gatehousev1.SessionType
	OnLimit         gatehousev1.LimitAction
	IdleTimeout     time.Duration
	AbsoluteTimeout time.Duration
	OnRoleChange    gatehousev1.RoleChangeAction

	MaxSessionsSource, CountedTypesSource, OnLimitSource         *gatehousev1.PolicySource
	IdleTimeoutSource, AbsoluteTimeoutSource, OnRoleChangeSource *gatehousev1.PolicySource
}

// Set is the policies that can apply to one user: theirs, those of their roles, and the global one.
type Set struct {
	User   *ent.SessionPolicy
	Roles  []*ent.SessionPolicy
	Global *ent.SessionPolicy
}

// Load reads the policies that can apply to a user holding roles.
func Load(ctx context.Context, c *ent.SessionPolicyClient, userID string, roles []string) (*Set, error) {
	sets, err := LoadAll(ctx, c, []string{userID}, map[string][]string{userID: roles})
	if err != nil {
		return nil, err
	}
	return sets[userID], nil
}

// LoadAll reads the policies that can apply to each of users, who hold the roles in roles (sorted;
// a user absent from roles holds none): in one query for up to store.MaxInList users and as many
// distinct roles, and in one more per store.MaxInList of either beyond that.
func LoadAll(ctx context.Context, c *ent.SessionPolicyClient, users []string, roles map[string][]string) (map[string]*Set, error) {
	var held []string
	for _, u := range users {
		held = append(held, roles[u]...)
	}
	slices.Sort(held)
	held = slices.Compact(held)
	var ps []*ent.SessionPolicy
	for i := 0; i == 0 || i < max(len(users), len(held)); i += store.MaxInList {
		batchUsers, batchRoles := window(users, i), window(held, i)
		where := []predicate.SessionPolicy{
			entpolicy.And(entpolicy.ScopeKindEQ(entpolicy.ScopeKindUser), entpolicy.ScopeRefIn(batchUsers...)),
			entpolicy.And(entpolicy.ScopeKindEQ(entpolicy.ScopeKindRole), entpolicy.ScopeRefIn(batchRoles...)),
		}
		if i == 0 {
			where = append(where, entpolicy.ScopeKindEQ(entpolicy.ScopeKindGlobal))
		}
		found, err := c.Query().Where(entpolicy.Or(where...)).All(ctx)
		if err != nil {
			return nil, err
		}
		ps = append(ps, found...)
	}
	var global *ent.SessionPolicy
	own := map[string]*ent.SessionPolicy{}
	byRole := map[string]*ent.SessionPolicy{}
	for _, p := range ps {
		switch p.ScopeKind {
		case entpolicy.ScopeKindGlobal:
			global = p
		case entpolicy.ScopeKindUser:
			own[p.ScopeRef] = p
		default:
			byRole[p.ScopeRef] = p
		}
	}
	out := make(map[string]*Set, len(users))
	for _, u := range users {
		set := &Set{User: own[u], Global: global}
		for _, r := range roles[u] {
			if p := byRole[r]; p != nil {
				set.Roles = append(set.Roles, p)
			}
		}
		out[u] = set
	}
	return out, nil
}

// window returns the at most store.MaxInList elements of s from index i on.
func window(s []string, i int) []string {
	if i >= len(s) {
		return nil
	}
	return s[i:min(i+store.MaxInList, len(s))]
}

// Scope returns the API scope of a stored policy.
func Scope(p *ent.SessionPolicy) *gatehousev1.PolicyScope {
	switch p.ScopeKind {
	case entpolicy.ScopeKindUser:
		return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: p.ScopeRef}}
	case entpolicy.ScopeKindRole:
		return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: p.ScopeRef}}
	default:
		return &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}}
	}
}

func from(ps ...*ent.SessionPolicy) *gatehousev1.PolicySource {
	src := &gatehousev1.PolicySource{}
	for _, p := range ps {
		src.Scopes = append(src.Scopes, Scope(p))
	}
	return src
}

var builtIn = &gatehousev1.PolicySource{BuiltInDefault: true}

// field resolves one field: the user's value if set; otherwise combine over the role policies that
// set it; otherwise the global value; otherwise def. has says whether a policy sets the field.
func field[T any](s *Set, has func(*ent.SessionPolicy) bool, get func(*ent.SessionPolicy) T,
	combine func(setters []*ent.SessionPolicy) (T, []*ent.SessionPolicy), def T) (T, *gatehousev1.PolicySource) {
	if s.User != nil && has(s.User) {
		return get(s.User), from(s.User)
	}
	var setters []*ent.SessionPolicy
	for _, p := range s.Roles {
		if has(p) {
			setters = append(setters, p)
		}
	}
	if len(setters) > 0 {
		v, by := combine(setters)
		return v, from(by...)
	}
	if s.Global != nil && has(s.Global) {
		return get(s.Global), from(s.Global)
	}
	return def, builtIn
}

// smallest combines by the smallest value; every policy with it is a source.
func smallest[T int32 | int64](get func(*ent.SessionPolicy) T) func([]*ent.SessionPolicy) (T, []*ent.SessionPolicy) {
	return func(ps []*ent.SessionPolicy) (T, []*ent.SessionPolicy) {
		best := get(ps[0])
		for _, p := range ps[1:] {
			best = min(best, get(p))
		}
		var by []*ent.SessionPolicy
		for _, p := range ps {
			if get(p) == best {
				by = append(by, p)
			}
		}
		return best, by
	}
}

// Resolve resolves s (ARCHITECTURE.md section 8): its limits, each a constraint of its own, and the
// other fields field by field.
func (s *Set) Resolve() *Resolved {
	r := &Resolved{Limits: s.limits()}
	r.mostRestrictive()

	idle, idleSrc := field(s, func(p *ent.SessionPolicy) bool { return p.IdleTimeoutNs != nil },
		func(p *ent.SessionPolicy) int64 { return *p.IdleTimeoutNs },
		smallest(func(p *ent.SessionPolicy) int64 { return *p.IdleTimeoutNs }), int64(DefaultIdleTimeout))
	r.IdleTimeout, r.IdleTimeoutSource = time.Duration(idle), idleSrc
	abs, absSrc := field(s, func(p *ent.SessionPolicy) bool { return p.AbsoluteTimeoutNs != nil },
		func(p *ent.SessionPolicy) int64 { return *p.AbsoluteTimeoutNs },
		smallest(func(p *ent.SessionPolicy) int64 { return *p.AbsoluteTimeoutNs }), int64(DefaultAbsoluteTimeout))
	r.AbsoluteTimeout, r.AbsoluteTimeoutSource = time.Duration(abs), absSrc

	r.OnRoleChange, r.OnRoleChangeSource = field(s, func(p *ent.SessionPolicy) bool { return p.OnRoleChange != "" },
		func(p *ent.SessionPolicy) gatehousev1.RoleChangeAction { return roleChangeAction(p.OnRoleChange) },
		func(ps []*ent.SessionPolicy) (gatehousev1.RoleChangeAction, []*ent.SessionPolicy) {
			var reauth []*ent.SessionPolicy
			for _, p := range ps {
				if roleChangeAction(p.OnRoleChange) == gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE {
					reauth = append(reauth, p)
				}
			}
			if len(reauth) > 0 {
				return gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE, reauth
			}
			return gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REFRESH, ps
		}, DefaultOnRoleChange)
	return r
}

// limits resolves the limits of s (ARCHITECTURE.md section 8): the user's own policy's limit if it
// sets one; otherwise one constraint per role policy that sets one, in the order of role names;
// otherwise the global policy's, if it sets one.
//
// NOTE: each limit takes its counted types and its action from its own policy only (interactive
// types and evict-oldest when the policy leaves them unset), never from another scope: a
// contractor's {1, mobile app} must not end a web session that staff's {10, web} allows, and an
// action set beside another limit, or without one, belongs to no limit in force.
func (s *Set) limits() []Limit {
	if s.User != nil && s.User.MaxSessions != nil {
		return []Limit{limitOf(s.User)}
	}
	var out []Limit
	for _, p := range s.Roles {
		if p.MaxSessions != nil {
			out = append(out, limitOf(p))
		}
	}
	if len(out) > 0 {
		slices.SortStableFunc(out, func(a, b Limit) int { return strings.Compare(a.Source.GetRole(), b.Source.GetRole()) })
		return out
	}
	if s.Global != nil && s.Global.MaxSessions != nil {
		return []Limit{limitOf(s.Global)}
	}
	return nil
}

// limitOf is the limit that p, which sets max_sessions, sets.
func limitOf(p *ent.SessionPolicy) Limit {
	l := Limit{Max: *p.MaxSessions, CountedTypes: slices.Clone(DefaultCountedTypes), OnLimit: DefaultOnLimit, Source: Scope(p)}
	if len(p.CountedTypes) > 0 {
		l.CountedTypes, l.ownTypes = sessionTypes(p.CountedTypes), true
		slices.Sort(l.CountedTypes)
	}
	if p.OnLimit != "" {
		l.OnLimit, l.ownAction = limitAction(p.OnLimit), true
	}
	return l
}

// mostRestrictive fills the older single-limit fields from r.Limits: the smallest limit (its
// source: every constraint with that limit), and the counted types and action of the constraint
// that sets it, deny-new first on a tie, then the first in r.Limits' order. The counted types and
// the action name their constraint's policy as their source when it sets them and the built-in
// default when it leaves them unset. With no limit they are the built-in defaults.
func (r *Resolved) mostRestrictive() {
	r.MaxSessionsSource, r.CountedTypesSource, r.OnLimitSource = builtIn, builtIn, builtIn
	r.CountedTypes, r.OnLimit = slices.Clone(DefaultCountedTypes), DefaultOnLimit
	if len(r.Limits) == 0 {
		return
	}
	const denyNew = gatehousev1.LimitAction_LIMIT_ACTION_DENY_NEW
	best := 0
	for i, l := range r.Limits {
		b := r.Limits[best]
		if l.Max < b.Max || (l.Max == b.Max && l.OnLimit == denyNew && b.OnLimit != denyNew) {
			best = i
		}
	}
	b := r.Limits[best]
	r.MaxSessions = &b.Max
	r.MaxSessionsSource = &gatehousev1.PolicySource{}
	for _, l := range r.Limits {
		if l.Max == b.Max {
			r.MaxSessionsSource.Scopes = append(r.MaxSessionsSource.Scopes, l.Source)
		}
	}
	r.CountedTypes, r.OnLimit = slices.Clone(b.CountedTypes), b.OnLimit
	if b.ownTypes {
		r.CountedTypesSource = &gatehousev1.PolicySource{Scopes: []*gatehousev1.PolicyScope{b.Source}}
	}
	if b.ownAction {
		r.OnLimitSource = &gatehousev1.PolicySource{Scopes: []*gatehousev1.PolicyScope{b.Source}}
	}
}

// ReauthenticateOnChange decides the role-change action for a change of the roles in changed
// (gained or lost), decided per role (ARCHITECTURE.md section 8): re-authenticate if the user's own
// policy, or the policy of any changed role, says so. When neither the user's policy nor any
// changed role's policy sets the action, the global policy decides.
func (s *Set) ReauthenticateOnChange(changed []string) bool {
	const reauth = gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE
	decided := false
	if s.User != nil && s.User.OnRoleChange != "" {
		if roleChangeAction(s.User.OnRoleChange) == reauth {
			return true
		}
		decided = true
	}
	for _, p := range s.Roles {
		if p.OnRoleChange != "" && slices.Contains(changed, p.ScopeRef) {
			if roleChangeAction(p.OnRoleChange) == reauth {
				return true
			}
			decided = true
		}
	}
	return !decided && s.Global != nil && roleChangeAction(s.Global.OnRoleChange) == reauth
}

func sessionTypes(names []string) []gatehousev1.SessionType {
	out := make([]gatehousev1.SessionType, 0, len(names))
	for _, n := range names {
		out = append(out, gatehousev1.SessionType(gatehousev1.SessionType_value[n]))
	}
	return out
}

func limitAction(s string) gatehousev1.LimitAction {
	return gatehousev1.LimitAction(gatehousev1.LimitAction_value[s])
}

func roleChangeAction(s string) gatehousev1.RoleChangeAction {
	return gatehousev1.RoleChangeAction(gatehousev1.RoleChangeAction_value[s])
}
