package session

import (
	"context"
	"slices"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// hookBatch bounds the users one query of the hooks reads.
const hookBatch = 500

// RolesChanged applies the role-change policy inside the transaction that changed users' effective
// roles (ARCHITECTURE.md section 8): the sessions of users whose own policy, or the policy of a role
// they gained or lost, says re-authenticate end with ROLE_CHANGE; the others carry the new roles
// from now on (validation reads them within the same commit). When a changed role's policy sets
// timeouts, the users' live sessions get expiries under their new policy.
func (s *Service) RolesChanged(ctx context.Context, tx *store.Tx, changes []policy.RoleChange) error {
	var changedRoles []string
	for _, c := range changes {
		for _, r := range append(slices.Clone(c.Added), c.Removed...) {
			if !slices.Contains(changedRoles, r) {
				changedRoles = append(changedRoles, r)
			}
		}
	}
	// NOTE: one query for the policies of every changed role and the global one, and one per
	// batch of users for their own policies: a grant to a group of 10,000 costs a few dozen
	// queries here, not one per member.
	shared, err := tx.SessionPolicy.Query().Where(entpolicy.Or(
		entpolicy.ScopeKindEQ(entpolicy.ScopeKindGlobal),
		entpolicy.And(entpolicy.ScopeKindEQ(entpolicy.ScopeKindRole), entpolicy.ScopeRefIn(changedRoles...)),
	)).All(ctx)
	if err != nil {
		return err
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
	for start := 0; start < len(changes); start += hookBatch {
		batch := changes[start:min(start+hookBatch, len(changes))]
		ids := make([]string, len(batch))
		for i, c := range batch {
			ids[i] = c.UserID
		}
		own, err := tx.SessionPolicy.Query().Where(entpolicy.ScopeKindEQ(entpolicy.ScopeKindUser), entpolicy.ScopeRefIn(ids...)).All(ctx)
		if err != nil {
			return err
		}
		for _, c := range batch {
			set := base
			for _, p := range own {
				if p.ScopeRef == c.UserID {
					set.User = p
				}
			}
			if set.ReauthenticateOnChange(append(slices.Clone(c.Added), c.Removed...)) {
				if _, err := EndUserSessions(ctx, tx, c.UserID, "", gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE, ""); err != nil {
					return err
				}
			} else if timeoutsChange {
				if err := s.refreshExpiry(ctx, tx, c.UserID); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// PolicyChanged re-applies timeouts to the live sessions of every user a created, changed or
// deleted policy can apply to, inside the policy's transaction, so that the next validation and the
// sweeper see the new timeouts. (Limits apply from the next login and need nothing here.)
func (s *Service) PolicyChanged(ctx context.Context, tx *store.Tx, scope *gatehousev1.PolicyScope) error {
	var users []string
	var err error
	switch {
	case scope.GetUserId() != "":
		users = []string{scope.GetUserId()}
	case scope.GetRole() != "":
		users, err = queryStrings(ctx, tx, `SELECT DISTINCT s.user_id FROM sessions s
			JOIN effective_roles e ON e.user_id = s.user_id AND e.role = ? WHERE s.active`, scope.GetRole())
	default:
		users, err = queryStrings(ctx, tx, "SELECT DISTINCT user_id FROM sessions WHERE active")
	}
	if err != nil {
		return err
	}
	for _, u := range users {
		if err := s.refreshExpiry(ctx, tx, u); err != nil {
			return err
		}
	}
	return nil
}

// refreshExpiry recomputes the expiries of a user's live sessions under their current policy.
func (s *Service) refreshExpiry(ctx context.Context, tx *store.Tx, userID string) error {
	live, err := tx.Session.Query().Where(entsession.UserID(userID), entsession.Active(true)).All(ctx)
	if err != nil || len(live) == 0 {
		return err
	}
	r, err := policy.ResolveFor(ctx, s.store, tx, tx.SessionPolicy, userID)
	if err != nil {
		return err
	}
	for _, sess := range live {
		idle, absolute := expiry(r, sess.CreateTime, sess.LastActiveTime)
		if idle.Equal(sess.IdleExpireTime) && absolute.Equal(sess.AbsoluteExpireTime) {
			continue
		}
		if err := sess.Update().SetIdleExpireTime(idle).SetAbsoluteExpireTime(absolute).Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func queryStrings(ctx context.Context, tx *store.Tx, query string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
