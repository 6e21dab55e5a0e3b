package identity

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// recomputeBatch is how many users one set-based recomputation handles. A grant to a group of
// 10,000 members is 20 batches of a handful of statements each, never a round trip per member.
const recomputeBatch = 500

// RoleChange is the difference in one user's effective roles made by a transaction.
type RoleChange = policy.RoleChange

// recompute rematerialises the effective roles of users inside tx and emits one ROLES_CHANGED event
// for each user whose set of roles changed. The caller must hold the role-graph lock. It returns the
// change's impact: whose roles changed, and what the role-change hook did to their sessions.
func (s *Service) recompute(ctx context.Context, tx *store.Tx, users []string) (*gatehousev1.ChangeImpact, error) {
	return s.recomputeFrom(ctx, tx, users, nil)
}

// snapshot reads the role sets of users before a change that rewrites effective_roles by itself
// (a role deletion cascades to its rows).
func snapshot(ctx context.Context, tx *store.Tx, users []string) (map[string][]string, error) {
	out := map[string][]string{}
	for start := 0; start < len(users); start += recomputeBatch {
		batch := users[start:min(start+recomputeBatch, len(users))]
		sets, err := roleSets(ctx, tx, batch)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, sets)
	}
	return out, nil
}

// recomputeFrom is recompute with the users' role sets before the change given (nil: read them
// from effective_roles, which the change has not touched). It fails with PERMISSION_DENIED when the
// change gives or takes a built-in role and the caller may not do that (checkBuiltInChanges), or
// moves a user holding a built-in role the caller lacks into or out of a role's session policy
// (policy.MayMoveUnderPolicies), and
// with FAILED_PRECONDITION (LAST_ADMIN) when it leaves no enabled user holding gatehouse.admin.
func (s *Service) recomputeFrom(ctx context.Context, tx *store.Tx, users []string, before map[string][]string) (*gatehousev1.ChangeImpact, error) {
	var changes []RoleChange
	for start := 0; start < len(users); start += recomputeBatch {
		batch := users[start:min(start+recomputeBatch, len(users))]
		c, err := recomputeBatchOf(ctx, tx, batch, before)
		if err != nil {
			return nil, err
		}
		changes = append(changes, c...)
	}
	if err := checkBuiltInChanges(ctx, changes); err != nil {
		return nil, err
	}
	if err := policy.MayMoveUnderPolicies(ctx, tx, changes); err != nil {
		return nil, err
	}
	if err := requireAdminAfter(ctx, tx, changes); err != nil {
		return nil, err
	}
	for _, c := range changes {
		tx.Emit(&gatehousev1.Event{
			Type:   gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED,
			UserId: c.UserID,
			Payload: &gatehousev1.Event_RolesChanged{RolesChanged: &gatehousev1.RolesChangedPayload{
				Roles: c.Roles, Added: c.Added, Removed: c.Removed,
			}},
		})
	}
	var effect policy.SessionEffect
	if s.onRolesChanged != nil && len(changes) > 0 {
		var err error
		if effect, err = s.onRolesChanged(ctx, tx, changes); err != nil {
			return nil, err
		}
	}
	return policy.Impact(changes, effect), nil
}

// materialiseSQL computes, for the users in the IN list (bound twice), every (user, role, source)
// of their effective roles: direct grants, grants to their groups, and roles contained in any role
// of their closure.
const materialiseSQL = `WITH RECURSIVE
  base(user_id, role, kind, ref) AS (
    SELECT user_id, role, 'direct', '' FROM role_grants WHERE user_id IN (%[1]s)
    UNION ALL
    SELECT m.user_id, g.role, 'group', g.group_id
      FROM group_members m JOIN role_grants g ON g.group_id = m.group_id
     WHERE m.user_id IN (%[1]s)
  ),
  closure(user_id, role) AS (
    SELECT user_id, role FROM base
    UNION
    SELECT c.user_id, rc.contained_role FROM closure c JOIN role_containments rc ON rc.role = c.role
  )
INSERT INTO effective_roles (user_id, role, source_kind, source_ref)
SELECT user_id, role, kind, ref FROM base
UNION
SELECT c.user_id, rc.contained_role, 'role', rc.role FROM closure c JOIN role_containments rc ON rc.role = c.role`

func recomputeBatchOf(ctx context.Context, tx *store.Tx, users []string, before map[string][]string) ([]RoleChange, error) {
	in := store.Placeholders(len(users))
	if before == nil {
		var err error
		if before, err = roleSets(ctx, tx, users); err != nil {
			return nil, err
		}
	}
	if _, err := tx.Exec(ctx, "DELETE FROM effective_roles WHERE user_id IN ("+in+")", store.Args(users)...); err != nil {
		return nil, fmt.Errorf("clearing effective roles: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(materialiseSQL, in), append(store.Args(users), store.Args(users)...)...); err != nil {
		return nil, fmt.Errorf("materialising effective roles: %w", err)
	}
	after, err := roleSets(ctx, tx, users)
	if err != nil {
		return nil, err
	}
	var changes []RoleChange
	for _, u := range users {
		added, removed := diff(before[u], after[u])
		if len(added) == 0 && len(removed) == 0 {
			continue
		}
		changes = append(changes, RoleChange{UserID: u, Roles: orEmpty(after[u]), Added: added, Removed: removed})
	}
	return changes, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// roleSets reads the sorted role names of each of users.
func roleSets(ctx context.Context, tx *store.Tx, users []string) (map[string][]string, error) {
	sets, err := tx.Store().RoleNamesOf(ctx, tx, users)
	if err != nil {
		return nil, fmt.Errorf("reading effective roles: %w", err)
	}
	return sets, nil
}

// diff returns what after has that before lacks, and the reverse; both inputs are sorted.
func diff(before, after []string) (added, removed []string) {
	for _, r := range after {
		if _, ok := slices.BinarySearch(before, r); !ok {
			added = append(added, r)
		}
	}
	for _, r := range before {
		if _, ok := slices.BinarySearch(after, r); !ok {
			removed = append(removed, r)
		}
	}
	return added, removed
}

// usersWithRole returns the users holding role (for any reason).
func usersWithRole(ctx context.Context, tx *store.Tx, role string) ([]string, error) {
	return queryIDs(ctx, tx, "SELECT DISTINCT user_id FROM effective_roles WHERE role = ?", role)
}

// groupMembers returns the ids of a group's members.
func groupMembers(ctx context.Context, tx *store.Tx, groupID string) ([]string, error) {
	return queryIDs(ctx, tx, "SELECT user_id FROM group_members WHERE group_id = ?", groupID)
}

// queryIDs returns the ids a query of one column finds, sorted.
func queryIDs(ctx context.Context, tx *store.Tx, query string, a ...any) ([]string, error) {
	ids, err := tx.Strings(ctx, query, a...)
	sort.Strings(ids)
	return ids, err
}

// GetEffectiveRoles returns a user's effective roles with their sources, ordered by role name.
func (s *Service) GetEffectiveRoles(ctx context.Context, userID string) ([]*gatehousev1.EffectiveRole, error) {
	if _, err := s.getUser(ctx, s.store.Client, userID); err != nil {
		return nil, err
	}
	rows, err := s.store.DB.QueryContext(ctx, s.store.Rebind(
		"SELECT role, source_kind, source_ref FROM effective_roles WHERE user_id = ?"), userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	type source struct{ role, kind, ref string }
	var found []source
	for rows.Next() {
		var r source
		if err := rows.Scan(&r.role, &r.kind, &r.ref); err != nil {
			return nil, err
		}
		found = append(found, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// NOTE: sorted here, in byte order, never by the database's collation: role names are compared
	// in byte order everywhere else (auth.Principal.Has, the diff above), and an ICU collation
	// orders "app_admin" and "app.viewer" differently from SQLite.
	slices.SortFunc(found, func(a, b source) int {
		return cmp.Or(cmp.Compare(a.role, b.role), cmp.Compare(a.kind, b.kind), cmp.Compare(a.ref, b.ref))
	})
	var out []*gatehousev1.EffectiveRole
	for _, r := range found {
		if len(out) == 0 || out[len(out)-1].Role != r.role {
			out = append(out, &gatehousev1.EffectiveRole{Role: r.role})
		}
		var src *gatehousev1.RoleSource
		switch r.kind {
		case "direct":
			src = &gatehousev1.RoleSource{Source: &gatehousev1.RoleSource_Direct{Direct: true}}
		case "group":
			src = &gatehousev1.RoleSource{Source: &gatehousev1.RoleSource_GroupId{GroupId: r.ref}}
		default:
			src = &gatehousev1.RoleSource{Source: &gatehousev1.RoleSource_ContainedInRole{ContainedInRole: r.ref}}
		}
		out[len(out)-1].Sources = append(out[len(out)-1].Sources, src)
	}
	return out, nil
}
