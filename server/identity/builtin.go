package identity

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// The guards on built-in roles. gatehouse.identity_admin manages users, groups and roles, but it is
// not gatehouse.admin: without these guards it could grant itself gatehouse.admin, join a group that
// holds it, or set the administrator's password and log in as them. A call without a principal
// (the bootstrap on first start) passes every guard.

func errBuiltInRoleChange() error {
	return errs.PermissionDenied("BUILT_IN_ROLE_CHANGE", "only gatehouse.admin may change who holds gatehouse.* roles or what contains them")
}

// requireAdminForBuiltIn refuses a grant, revocation or containment naming a built-in role unless
// the caller holds gatehouse.admin, whether or not it changes anyone's roles today (a grant to an
// empty group would hand the role to whoever joins it later).
func requireAdminForBuiltIn(ctx context.Context, roles ...string) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil || p.Has(auth.RoleAdmin) || !slices.ContainsFunc(roles, auth.IsBuiltIn) {
		return nil
	}
	return errBuiltInRoleChange()
}

// checkBuiltInChanges refuses a transaction that gives anyone a built-in role or takes one away,
// unless the caller holds gatehouse.admin.
//
// NOTE: it looks at what the transaction did to effective roles, not at the request, so that every
// path is covered alike: grants and revokes, to users or to groups, membership, containment through
// custom roles, and group and role deletion.
func checkBuiltInChanges(ctx context.Context, changes []RoleChange) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil || p.Has(auth.RoleAdmin) {
		return nil
	}
	for _, c := range changes {
		if slices.ContainsFunc(c.Added, auth.IsBuiltIn) || slices.ContainsFunc(c.Removed, auth.IsBuiltIn) {
			return errBuiltInRoleChange()
		}
	}
	return nil
}

// mayManageUser refuses a change to a user (an update, a deletion, a new password) by a caller who
// lacks a built-in role that user holds.
func mayManageUser(ctx context.Context, tx *store.Tx, userID string) error {
	_, err := manageable(ctx, tx, userID)
	return err
}

// manageable is mayManageUser that also returns the user's effective roles.
func manageable(ctx context.Context, tx *store.Tx, userID string) ([]string, error) {
	roles, err := tx.Store().RoleNames(ctx, tx, userID)
	if err != nil {
		return nil, err
	}
	return roles, auth.PrincipalFrom(ctx).MayActOn(roles)
}
