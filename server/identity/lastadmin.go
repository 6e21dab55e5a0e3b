package identity

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// The last-administrator guard. Nothing in the API can make a user gatehouse.admin except another
// gatehouse.admin, and a restart bootstraps only an empty database, so a change that leaves no
// enabled user holding gatehouse.admin would lock every operator out for good. Such changes are
// refused with FAILED_PRECONDITION, reason LAST_ADMIN: revoking the role, removing the last holder
// from a group that carries it, containment changes, deleting a role or group that carried it,
// and disabling or deleting the last holder.
//
// NOTE: the check runs inside the changing transaction, after the change, against what that
// transaction sees. Every change that can take the role away holds the role-graph lock
// (tx.LockRoleGraph: exclusive on PostgreSQL; SQLite write transactions are exclusive anyway), so
// two racing changes (two administrators revoking each other) are serialised: the second one sees
// the first one's result and is refused.

// adminHoldersSQL counts the enabled users holding gatehouse.admin (for any reason).
const adminHoldersSQL = `SELECT COUNT(DISTINCT e.user_id) FROM effective_roles e
  JOIN users u ON u.id = e.user_id
 WHERE e.role = ? AND NOT u.disabled`

func errLastAdmin() error {
	return errs.FailedPrecondition("LAST_ADMIN",
		"this change would leave no enabled user holding %s; grant it to another user first", auth.RoleAdmin)
}

// requireAnAdmin refuses the transaction unless an enabled user still holds gatehouse.admin. The
// caller holds the role-graph lock.
func requireAnAdmin(ctx context.Context, tx *store.Tx) error {
	var n int
	if err := scanOne(ctx, tx, &n, adminHoldersSQL, auth.RoleAdmin); err != nil {
		return err
	}
	if n == 0 {
		return errLastAdmin()
	}
	return nil
}

// requireAdminAfter runs requireAnAdmin when changes took gatehouse.admin from anyone.
func requireAdminAfter(ctx context.Context, tx *store.Tx, changes []RoleChange) error {
	for _, c := range changes {
		if slices.Contains(c.Removed, auth.RoleAdmin) {
			return requireAnAdmin(ctx, tx)
		}
	}
	return nil
}

// requireAdminWithout runs requireAnAdmin when userID, whom the transaction has just disabled or
// deleted, held gatehouse.admin before (held lists that user's roles as read before the change).
func requireAdminWithout(ctx context.Context, tx *store.Tx, held []string) error {
	if !slices.Contains(held, auth.RoleAdmin) {
		return nil
	}
	return requireAnAdmin(ctx, tx)
}
