package session

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// hookBatch bounds the users one round of the hooks handles.
const hookBatch = 500

// NOTE: the hooks below run inside transactions that hold the role-graph lock (tx.LockRoleGraph),
// and every login takes that lock shared (store.Tx.LockUserSharingRoleGraph) before it reads the user's roles and
// policy. So a login either commits before the change, and the hook sees its session, or starts
// after it, and sees the new roles and policies: no session escapes a re-authentication or keeps
// outdated timeouts.

// RolesChanged applies the role-change policy inside the transaction that changed users' effective
// roles (ARCHITECTURE.md section 8): the sessions of users whose own policy, or the policy of a role
// they gained or lost, says re-authenticate end with ROLE_CHANGE; the others carry the new roles
// from now on (validation reads them within the same commit). When a changed role's policy sets
// timeouts, the users' live sessions get expiries under their new policy. It reports the sessions it
// ended (ROLE_CHANGE) and the live sessions it left carrying the new roles (refreshed), for the
// change's ChangeImpact.
//
// NOTE: the work is set-based: a grant to a group of 10,000 members costs a few queries per batch
// of hookBatch users, never a round trip per member.
func (s *Service) RolesChanged(ctx context.Context, tx *store.Tx, changes []policy.RoleChange) (policy.SessionEffect, error) {
	var effect policy.SessionEffect
	var changedRoles []string
	for _, c := range changes {
		for _, r := range append(slices.Clone(c.Added), c.Removed...) {
			if !slices.Contains(changedRoles, r) {
				changedRoles = append(changedRoles, r)
			}
		}
	}
	shared, err := tx.SessionPolicy.Query().Where(entpolicy.ScopeKindEQ(entpolicy.ScopeKindGlobal)).All(ctx)
	if err != nil {
		return effect, err
	}
	for batch := range slices.Chunk(changedRoles, store.MaxInList) {
		ps, err := tx.SessionPolicy.Query().Where(entpolicy.ScopeKindEQ(entpolicy.ScopeKindRole), entpolicy.ScopeRefIn(batch...)).All(ctx)
		if err != nil {
			return effect, err
		}
		shared = append(shared, ps...)
	}
	base := policy.Set{}
	timeoutsChange := false
	for _, p := range shared {
		if p.ScopeKind == entpolicy.ScopeKindGlobal {
			base.Global = p
			continue
		}
		base.Roles = append(base.Roles, p)
		timeoutsChange = timeoutsChange || p.IdleTimeoutNs != nil || p.AbsoluteTimeoutNs != nil
	}
	for batch := range slices.Chunk(changes, hookBatch) {
		ids := make([]string, len(batch))
		for i, c := range batch {
			ids[i] = c.UserID
		}
		own, err := userPolicies(ctx, tx, ids)
		if err != nil {
			return effect, err
		}
		ended, err := endOutgrownImpersonations(ctx, tx, batch)
		if err != nil {
			return effect, err
		}
		if ended > 0 {
			effect.Add(policy.SessionEffect{Ended: ended, EndReason: gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE})
		}
		var reauth, carry, refresh []string
		for _, c := range batch {
			set := base
			set.User = own[c.UserID]
			if set.ReauthenticateOnChange(append(slices.Clone(c.Added), c.Removed...)) {
				reauth = append(reauth, c.UserID)
				continue
			}
			carry = append(carry, c.UserID)
			if timeoutsChange {
				refresh = append(refresh, c.UserID)
			}
		}
		if len(reauth) > 0 {
			// NOTE: the impersonations opened from the sessions that end, end with them (as
			// REVOKED_BY_USER): the change ends those too, and the impact counts them.
			ended, impersonations, err := endWhere(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE, "", 0, entsession.UserIDIn(reauth...))
			if err != nil {
				return effect, err
			}
			if n := len(ended) + impersonations; n > 0 {
				effect.Add(policy.SessionEffect{Ended: n, EndReason: gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE})
			}
		}
		// NOTE: every live session of a user who keeps it carries the new roles from now on, so
		// each counts as refreshed, whether or not its expiries change too.
		if len(carry) > 0 {
			n, err := tx.Session.Query().Where(entsession.UserIDIn(carry...), entsession.Active(true)).Count(ctx)
			if err != nil {
				return effect, err
			}
			effect.Refreshed += n
		}
		if _, err := s.refreshExpiry(ctx, tx, refresh); err != nil {
			return effect, err
		}
	}
	return effect, nil
}

// endOutgrownImpersonations ends, with ROLE_CHANGE, the impersonations that a role change may
// have taken past what their opening allowed: those of a user who gained a built-in role, and those
// opened by a user who lost one (gatehouse.impersonator among them). It returns how many it ended.
//
// NOTE: an impersonator may open a session as a user only while holding every built-in role the
// user holds (impersonating.mayOpen). The impersonation then carries the user's roles as they
// change, like any of the user's sessions; without this, a user promoted to gatehouse.admin would
// hand the admin role to an impersonator who never held it. The impersonator may open a new one
// if still allowed.
func endOutgrownImpersonations(ctx context.Context, tx *store.Tx, batch []policy.RoleChange) (int, error) {
	var where []predicate.Session
	for _, c := range batch {
		if slices.ContainsFunc(c.Added, auth.IsBuiltIn) {
			where = append(where, entsession.And(entsession.UserID(c.UserID), entsession.ImpersonatorUserIDNEQ("")))
		}
		if slices.ContainsFunc(c.Removed, auth.IsBuiltIn) {
			where = append(where, entsession.ImpersonatorUserID(c.UserID))
		}
	}
	if len(where) == 0 {
		return 0, nil
	}
	ended, _, err := endWhere(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE,
		"a role change took the impersonation past what its impersonator may do", 0, entsession.Or(where...))
	return len(ended), err
}

// PolicyChanged re-applies timeouts to the live sessions of every user a created, changed or
// deleted policy can apply to, inside the policy's transaction, so that the next validation and the
// sweeper see the new timeouts. (Limits apply from the next login and need nothing here.) It
// reports the live sessions whose expiries changed as refreshed; it ends none.
func (s *Service) PolicyChanged(ctx context.Context, tx *store.Tx, scope *gatehousev1.PolicyScope) (policy.SessionEffect, error) {
	var effect policy.SessionEffect
	var users []string
	var err error
	switch {
	case scope.GetUserId() != "":
		users = []string{scope.GetUserId()}
	case scope.GetRole() != "":
		users, err = tx.Strings(ctx, `SELECT DISTINCT s.user_id FROM sessions s
			JOIN effective_roles e ON e.user_id = s.user_id AND e.role = ? WHERE s.active`, scope.GetRole())
	default:
		users, err = tx.Strings(ctx, "SELECT DISTINCT user_id FROM sessions WHERE active")
	}
	if err != nil {
		return effect, err
	}
	for batch := range slices.Chunk(users, hookBatch) {
		n, err := s.refreshExpiry(ctx, tx, batch)
		if err != nil {
			return effect, err
		}
		effect.Refreshed += n
	}
	return effect, nil
}

// userPolicies reads the user-scoped policies of users, by user id.
func userPolicies(ctx context.Context, tx *store.Tx, users []string) (map[string]*ent.SessionPolicy, error) {
	out := make(map[string]*ent.SessionPolicy, len(users))
	for batch := range slices.Chunk(users, store.MaxInList) {
		ps, err := tx.SessionPolicy.Query().Where(entpolicy.ScopeKindEQ(entpolicy.ScopeKindUser), entpolicy.ScopeRefIn(batch...)).All(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			out[p.ScopeRef] = p
		}
	}
	return out, nil
}

// refreshExpiry recomputes the expiries of the live sessions of users (at most hookBatch of them)
// under their current policies, in a number of statements that grows with the sessions only by
// one per batch of store.Tx.SetSessionExpiries. It returns how many sessions got new expiries.
//
// NOTE: the new expiries are computed from each row's last activity, and a write-back committing
// between the read and the write (it takes no user or role-graph lock) would be overwritten with
// an idle expiry computed from the activity before it, shortening the session's idle window or
// even putting it in the past for the sweeper. So the sessions whose expiries change are locked
// (in id order, as every ending locks them), read again and recomputed before they are written:
// a write-back that came first is read; one that comes after skips the row (SKIP LOCKED), misses
// it, and the node reads it again. Only those rows are locked, the rows the write locks anyway: a
// change that moves no expiry (a policy of limits only) locks no session.
func (s *Service) refreshExpiry(ctx context.Context, tx *store.Tx, users []string) (int, error) {
	var live []*ent.Session
	for batch := range slices.Chunk(users, store.MaxInList) {
		found, err := tx.Session.Query().Where(entsession.UserIDIn(batch...), entsession.Active(true)).All(ctx)
		if err != nil {
			return 0, err
		}
		live = append(live, found...)
	}
	if len(live) == 0 {
		return 0, nil
	}
	withSessions := make([]string, len(live))
	for i, sess := range live {
		withSessions[i] = sess.UserID
	}
	slices.Sort(withSessions)
	withSessions = slices.Compact(withSessions)
	roles, err := tx.Store().RoleNamesOf(ctx, tx, withSessions)
	if err != nil {
		return 0, err
	}
	sets, err := policy.LoadAll(ctx, tx.SessionPolicy, withSessions, roles)
	if err != nil {
		return 0, err
	}
	resolved := make(map[string]*policy.Resolved, len(sets))
	for u, set := range sets {
		resolved[u] = set.Resolve()
	}
	moved := func(sess *ent.Session) (store.SessionExpiry, bool) {
		idle, absolute := refreshedExpiry(resolved[sess.UserID], sess)
		return store.SessionExpiry{ID: sess.ID, Idle: idle, Absolute: absolute},
			!idle.Equal(sess.IdleExpireTime) || !absolute.Equal(sess.AbsoluteExpireTime)
	}
	var ids []string
	for _, sess := range live {
		if _, ok := moved(sess); ok {
			ids = append(ids, sess.ID)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	slices.Sort(ids)
	if s.refreshRead != nil {
		s.refreshRead()
	}
	var changed []store.SessionExpiry
	for batch := range slices.Chunk(ids, store.MaxInList) {
		locked, err := tx.SessionsForUpdate().Where(entsession.IDIn(batch...), entsession.Active(true)).
			Order(ent.Asc(entsession.FieldID)).All(ctx)
		if err != nil {
			return 0, err
		}
		for _, sess := range locked {
			if e, ok := moved(sess); ok {
				changed = append(changed, e)
			}
		}
	}
	return len(changed), tx.SetSessionExpiries(ctx, changed)
}
