package identity

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/ent"
	entgroup "github.com/gatehouse/gatehouse/ent/group"
	entrole "github.com/gatehouse/gatehouse/ent/role"
	"github.com/gatehouse/gatehouse/ent/rolecontainment"
	"github.com/gatehouse/gatehouse/ent/rolegrant"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/paging"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

func roleNotFound(name string) error {
	return errs.NotFound("ROLE_NOT_FOUND", "role %q not found", name)
}

// CreateRole creates a role that contains the named existing roles.
//
// NOTE: the reserved gatehouse. prefix is not checked here: the protovalidate rule on
// CreateRoleRequest.name (role_name_reserved) rejects it on every front before the handler runs,
// and the built-in roles are created by the store's migration, not through CreateRole.
func (s *Service) CreateRole(ctx context.Context, name, description string, contains []string) (*gatehousev1.Role, events.Position, error) {
	if slices.Contains(contains, name) {
		return nil, events.Position{}, errs.FailedPrecondition("ROLE_CYCLE", "role %q cannot contain itself", name)
	}
	if err := requireAdminForBuiltIn(ctx, contains...); err != nil {
		return nil, events.Position{}, err
	}
	var out *gatehousev1.Role
	pos, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		r, err := tx.Role.Create().SetID(name).SetDescription(description).Save(ctx)
		if isConstraint(err) {
			return errs.AlreadyExists("ROLE_EXISTS", "role %q exists", name)
		}
		if err != nil {
			return err
		}
		for _, c := range contains {
			ok, err := tx.Role.Query().Where(entrole.ID(c)).Exist(ctx)
			if err != nil {
				return err
			}
			if !ok {
				return errs.NotFound("ROLE_NOT_FOUND", "contained role %q not found", c)
			}
			if err := tx.RoleContainment.Create().SetRole(name).SetContainedRole(c).Exec(ctx); err != nil {
				return err
			}
		}
		out = convert.Role(r, contains)
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_ROLE_CREATED,
			Payload: &gatehousev1.Event_RoleCreated{RoleCreated: &gatehousev1.RolePayload{Role: out}},
		})
		// NOTE: nobody holds a new role yet, so no effective roles change.
		return nil
	})
	return out, pos, err
}

// contained returns the roles each of names directly contains.
func contained(ctx context.Context, c *ent.RoleContainmentClient, names ...string) (map[string][]string, error) {
	links, err := c.Query().Where(rolecontainment.RoleIn(names...)).All(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, l := range links {
		out[l.Role] = append(out[l.Role], l.ContainedRole)
	}
	// NOTE: sorted in Go, in byte order, so that SQLite and PostgreSQL (whatever its collation)
	// list them alike.
	for _, c := range out {
		slices.Sort(c)
	}
	return out, nil
}

// GetRole returns one role.
func (s *Service) GetRole(ctx context.Context, name string) (*gatehousev1.Role, error) {
	r, err := s.store.Client.Role.Get(ctx, name)
	if ent.IsNotFound(err) {
		return nil, roleNotFound(name)
	}
	if err != nil {
		return nil, err
	}
	c, err := contained(ctx, s.store.Client.RoleContainment, name)
	if err != nil {
		return nil, err
	}
	return convert.Role(r, c[name]), nil
}

// ListRoles lists roles ordered by name.
func (s *Service) ListRoles(ctx context.Context, pageSize int32, pageToken string) ([]*gatehousev1.Role, string, error) {
	after, err := paging.Parse(pageToken)
	if err != nil {
		return nil, "", err
	}
	size := paging.Size(pageSize)
	roles, err := s.store.Client.Role.Query().Where(entrole.IDGT(after)).Order(ent.Asc(entrole.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, "", err
	}
	roles, next := paging.Trim(roles, size, func(r *ent.Role) string { return r.ID })
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = r.ID
	}
	c, err := contained(ctx, s.store.Client.RoleContainment, names...)
	if err != nil {
		return nil, "", err
	}
	out := make([]*gatehousev1.Role, len(roles))
	for i, r := range roles {
		out[i] = convert.Role(r, c[r.ID])
	}
	return out, next, nil
}

// DeleteRole deletes a role with its grants and containment links; holders lose it and every role
// they held only through it. Built-in roles are FAILED_PRECONDITION.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) DeleteRole(ctx context.Context, name string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		r, err := tx.Role.Get(ctx, name)
		if ent.IsNotFound(err) {
			return nil, roleNotFound(name)
		}
		if err != nil {
			return nil, err
		}
		if r.BuiltIn {
			return nil, errs.FailedPrecondition("BUILT_IN_ROLE", "role %q is built in and cannot be deleted", name)
		}
		holders, err := usersWithRole(ctx, tx, name)
		if err != nil {
			return nil, err
		}
		c, err := contained(ctx, tx.RoleContainment, name)
		if err != nil {
			return nil, err
		}
		// NOTE: deleting the role cascades to its materialised rows, so the holders' role sets are
		// read first: they must still show the deleted role for ROLES_CHANGED to report it removed.
		before, err := snapshot(ctx, tx, holders)
		if err != nil {
			return nil, err
		}
		if err := tx.Role.DeleteOne(r).Exec(ctx); err != nil {
			return nil, err
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_ROLE_DELETED,
			Payload: &gatehousev1.Event_RoleDeleted{RoleDeleted: &gatehousev1.RolePayload{Role: convert.Role(r, c[name])}},
		})
		// NOTE: the role's policy goes only after the holders' sessions have been dealt with:
		// losing the role is a role change, and its policy (re-authenticate, timeouts) decides what
		// happens to their sessions, exactly as a revoke would.
		impact, err := s.recomputeFrom(ctx, tx, holders, before)
		if err != nil {
			return nil, err
		}
		return impact, policy.DeleteForScope(ctx, tx, entpolicy.ScopeKindRole, name)
	})
}

// bothRolesExist checks that two roles exist.
func bothRolesExist(ctx context.Context, tx *store.Tx, a, b string) error {
	for _, n := range []string{a, b} {
		ok, err := tx.Role.Query().Where(entrole.ID(n)).Exist(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return roleNotFound(n)
		}
	}
	return nil
}

// reachesSQL finds whether the second role is reachable from the first through containment.
const reachesSQL = `WITH RECURSIVE r(role) AS (
    SELECT CAST(? AS VARCHAR)
    UNION
    SELECT rc.contained_role FROM role_containments rc JOIN r ON rc.role = r.role
  )
SELECT COUNT(*) FROM r WHERE role = ?`

// AddContainedRole makes role contain containedRole. A link that would make a cycle is
// FAILED_PRECONDITION; an existing link changes nothing.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) AddContainedRole(ctx context.Context, role, containedRole string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		if err := bothRolesExist(ctx, tx, role, containedRole); err != nil {
			return nil, err
		}
		if err := requireAdminForBuiltIn(ctx, role, containedRole); err != nil {
			return nil, err
		}
		exists, err := tx.RoleContainment.Query().Where(rolecontainment.Role(role), rolecontainment.ContainedRole(containedRole)).Exist(ctx)
		if err != nil || exists {
			return nil, err
		}
		var n int
		if err := scanOne(ctx, tx, &n, reachesSQL, containedRole, role); err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, errs.FailedPrecondition("ROLE_CYCLE", "role %q already contains %q (directly or transitively): containment cannot be circular", containedRole, role)
		}
		if err := tx.RoleContainment.Create().SetRole(role).SetContainedRole(containedRole).Exec(ctx); err != nil {
			return nil, err
		}
		tx.Emit(containmentEvent(role, containedRole, true))
		holders, err := usersWithRole(ctx, tx, role)
		if err != nil {
			return nil, err
		}
		return s.recompute(ctx, tx, holders)
	})
}

// RemoveContainedRole stops role containing containedRole. A missing link is NOT_FOUND.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) RemoveContainedRole(ctx context.Context, role, containedRole string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		if err := bothRolesExist(ctx, tx, role, containedRole); err != nil {
			return nil, err
		}
		if err := requireAdminForBuiltIn(ctx, role, containedRole); err != nil {
			return nil, err
		}
		n, err := tx.RoleContainment.Delete().Where(rolecontainment.Role(role), rolecontainment.ContainedRole(containedRole)).Exec(ctx)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, errs.NotFound("CONTAINMENT_NOT_FOUND", "role %q does not contain %q", role, containedRole)
		}
		tx.Emit(containmentEvent(role, containedRole, false))
		holders, err := usersWithRole(ctx, tx, role)
		if err != nil {
			return nil, err
		}
		return s.recompute(ctx, tx, holders)
	})
}

func containmentEvent(role, containedRole string, added bool) *gatehousev1.Event {
	return &gatehousev1.Event{
		Type: gatehousev1.EventType_EVENT_TYPE_ROLE_CONTAINMENT_CHANGED,
		Payload: &gatehousev1.Event_RoleContainmentChanged{RoleContainmentChanged: &gatehousev1.RoleContainmentPayload{
			Role: role, ContainedRole: containedRole, Added: added,
		}},
	}
}

func scanOne(ctx context.Context, tx *store.Tx, dst any, query string, a ...any) error {
	rows, err := tx.Query(ctx, query, a...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(dst); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Principal names the user or the group of a grant; exactly one is set.
type Principal struct {
	UserID  string
	GroupID string
}

// GrantRole grants role to a user or a group; an existing grant changes nothing.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) GrantRole(ctx context.Context, role string, to Principal, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.changeGrant(ctx, role, to, true, mode)
}

// RevokeRole revokes role from a user or a group. A grant that does not exist is NOT_FOUND.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) RevokeRole(ctx context.Context, role string, from Principal, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.changeGrant(ctx, role, from, false, mode)
}

func (s *Service) changeGrant(ctx context.Context, role string, p Principal, grant bool, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		if ok, err := tx.Role.Query().Where(entrole.ID(role)).Exist(ctx); err != nil || !ok {
			return nil, firstErr(err, roleNotFound(role))
		}
		if err := requireAdminForBuiltIn(ctx, role); err != nil {
			return nil, err
		}
		var (
			where    = rolegrant.Role(role)
			affected []string
			payload  = &gatehousev1.RoleGrantPayload{Role: role}
			userID   string
		)
		if p.UserID != "" {
			if ok, err := tx.User.Query().Where(entuser.ID(p.UserID)).Exist(ctx); err != nil || !ok {
				return nil, firstErr(err, errs.NotFound("USER_NOT_FOUND", "user %s not found", p.UserID))
			}
			where = rolegrant.And(where, rolegrant.UserID(p.UserID))
			payload.Principal = &gatehousev1.RoleGrantPayload_UserId{UserId: p.UserID}
			affected, userID = []string{p.UserID}, p.UserID
		} else {
			if ok, err := tx.Group.Query().Where(entgroup.ID(p.GroupID)).Exist(ctx); err != nil || !ok {
				return nil, firstErr(err, errs.NotFound("GROUP_NOT_FOUND", "group %s not found", p.GroupID))
			}
			where = rolegrant.And(where, rolegrant.GroupID(p.GroupID))
			payload.Principal = &gatehousev1.RoleGrantPayload_GroupId{GroupId: p.GroupID}
		}
		ev := &gatehousev1.Event{UserId: userID}
		if grant {
			exists, err := tx.RoleGrant.Query().Where(where).Exist(ctx)
			if err != nil || exists {
				return nil, err
			}
			c := tx.RoleGrant.Create().SetRole(role)
			if p.UserID != "" {
				c.SetUserID(p.UserID)
			} else {
				c.SetGroupID(p.GroupID)
			}
			if err := c.Exec(ctx); err != nil {
				return nil, err
			}
			ev.Type, ev.Payload = gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED, &gatehousev1.Event_RoleGranted{RoleGranted: payload}
		} else {
			n, err := tx.RoleGrant.Delete().Where(where).Exec(ctx)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, errs.NotFound("GRANT_NOT_FOUND", "role %q is not granted to that principal", role)
			}
			ev.Type, ev.Payload = gatehousev1.EventType_EVENT_TYPE_ROLE_REVOKED, &gatehousev1.Event_RoleRevoked{RoleRevoked: payload}
		}
		tx.Emit(ev)
		if p.GroupID != "" {
			members, err := groupMembers(ctx, tx, p.GroupID)
			if err != nil {
				return nil, err
			}
			affected = members
		}
		return s.recompute(ctx, tx, affected)
	})
}
