package policy

import (
	"context"
	"slices"

	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// The built-in-role guard of policies. A session policy acts on every user it applies to: a
// one-second absolute timeout, or a limit of one with deny-new, locks them out as surely as a new
// password would. So creating, changing or deleting a policy needs the same standing as acting on
// each user it applies to: a caller lacking a built-in role that one of them holds is refused
// (PERMISSION_DENIED, reason CALLER_LACKS_ROLE). That covers a user-scoped policy for gatehouse.admin,
// a policy on a gatehouse.* role (which needs that role even while nobody holds it), a policy on a
// custom role that an administrator holds, and the global policy, which applies to everyone and so
// needs gatehouse.admin whenever anybody holds it.

// builtInOfScopeSQL lists the built-in roles held by the users a scope applies to, by scope kind.
var builtInOfScopeSQL = map[entpolicy.ScopeKind]string{
	entpolicy.ScopeKindUser: `SELECT DISTINCT role FROM effective_roles WHERE user_id = ? AND role LIKE 'gatehouse.%'`,
	entpolicy.ScopeKindRole: `SELECT DISTINCT o.role FROM effective_roles h
  JOIN effective_roles o ON o.user_id = h.user_id
 WHERE h.role = ? AND o.role LIKE 'gatehouse.%'`,
	entpolicy.ScopeKindGlobal: `SELECT DISTINCT role FROM effective_roles WHERE role LIKE 'gatehouse.%'`,
}

// mayGovern refuses a change to the policy of a scope when the caller lacks a built-in role held by
// a user the scope applies to (or the scope's own role, when it is built in). The caller holds the
// role-graph lock, so the set of users the scope applies to cannot change before tx commits.
func mayGovern(ctx context.Context, tx *store.Tx, kind entpolicy.ScopeKind, ref string) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil {
		return nil
	}
	var args []any
	if kind != entpolicy.ScopeKindGlobal {
		args = append(args, ref)
	}
	held, err := tx.Strings(ctx, builtInOfScopeSQL[kind], args...)
	if err != nil {
		return err
	}
	if kind == entpolicy.ScopeKindRole && auth.IsBuiltIn(ref) {
		held = append(held, ref)
	}
	slices.Sort(held)
	if r := p.MissingBuiltIn(held); r != "" {
		return errs.PermissionDenied("CALLER_LACKS_ROLE",
			"this policy applies to users holding %s, which the caller does not hold", r).WithMetadata("role", r)
	}
	return nil
}

// MayMoveUnderPolicies refuses a change of effective roles (a grant or revocation, a membership,
// a containment, a deletion) that makes the session policy of a role apply to a user, or stop
// applying to one, when that user holds a built-in role the caller lacks (PERMISSION_DENIED,
// CALLER_LACKS_ROLE). The caller holds the role-graph lock.
//
// NOTE: this is the guard above, seen from the other side: a policy's scope is fixed, but a role
// change moves users into and out of it. Without it, a lesser administrator who may set policies
// on custom roles (or finds one set) could put a one-second timeout on a role nobody holds and
// then grant it to gatehouse.admin, ending the administrator's sessions and every login after.
// Losing a role's policy counts too: it may leave a stricter global limit in force, and a
// re-authenticate policy ends the user's sessions either way.
func MayMoveUnderPolicies(ctx context.Context, tx *store.Tx, changes []RoleChange) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil || p.Has(auth.RoleAdmin) {
		return nil
	}
	var exposed []RoleChange
	var moved []string
	for _, c := range changes {
		if p.MissingBuiltIn(c.Roles) != "" {
			exposed = append(exposed, c)
			moved = append(moved, c.Added...)
			moved = append(moved, c.Removed...)
		}
	}
	slices.Sort(moved)
	moved = slices.Compact(moved)
	governed := map[string]bool{}
	for chunk := range slices.Chunk(moved, store.MaxInList) {
		refs, err := tx.SessionPolicy.Query().
			Where(entpolicy.ScopeKindEQ(entpolicy.ScopeKindRole), entpolicy.ScopeRefIn(chunk...)).
			Select(entpolicy.FieldScopeRef).Strings(ctx)
		if err != nil {
			return err
		}
		for _, r := range refs {
			governed[r] = true
		}
	}
	for _, c := range exposed {
		for _, r := range slices.Concat(c.Added, c.Removed) {
			if governed[r] {
				missing := p.MissingBuiltIn(c.Roles)
				return errs.PermissionDenied("CALLER_LACKS_ROLE",
					"the session policy of role %q would apply to, or stop applying to, a user holding %s, which the caller does not hold", r, missing).
					WithMetadata("role", missing)
			}
		}
	}
	return nil
}
