package identity

import (
	"context"

	"github.com/gatehouse/gatehouse/ent"
	entgroup "github.com/gatehouse/gatehouse/ent/group"
	"github.com/gatehouse/gatehouse/ent/groupmember"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/paging"
	"github.com/gatehouse/gatehouse/server/store"
)

// CreateGroup creates a group. A name taken case-insensitively is ALREADY_EXISTS.
func (s *Service) CreateGroup(ctx context.Context, name, description string) (*gatehousev1.Group, events.Position, error) {
	var out *gatehousev1.Group
	pos, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		g, err := tx.Group.Create().SetID(convert.NewID()).SetName(name).SetNameKey(keyOf(name)).SetDescription(description).Save(ctx)
		if isConstraint(err) {
			return errs.AlreadyExists("GROUP_NAME_TAKEN", "group name %q is taken", name)
		}
		if err != nil {
			return err
		}
		out = convert.Group(g)
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_GROUP_CREATED,
			Payload: &gatehousev1.Event_GroupCreated{GroupCreated: &gatehousev1.GroupPayload{Group: out}},
		})
		return nil
	})
	return out, pos, err
}

func groupNotFound(err error, id string) error {
	return notFound(err, "GROUP_NOT_FOUND", "group %s not found", id)
}

// GetGroup returns one group.
func (s *Service) GetGroup(ctx context.Context, id string) (*gatehousev1.Group, error) {
	g, err := s.store.Client.Group.Get(ctx, id)
	if err != nil {
		return nil, groupNotFound(err, id)
	}
	return convert.Group(g), nil
}

// ListGroups lists groups ordered by name (case-insensitively).
func (s *Service) ListGroups(ctx context.Context, pageSize int32, pageToken, namePrefix string) ([]*gatehousev1.Group, string, error) {
	after, err := paging.Parse(pageToken)
	if err != nil {
		return nil, "", err
	}
	q := s.store.Client.Group.Query().Where(entgroup.NameKeyGT(after))
	if namePrefix != "" {
		q = q.Where(entgroup.NameKeyHasPrefix(keyOf(namePrefix)))
	}
	size := paging.Size(pageSize)
	groups, err := q.Order(ent.Asc(entgroup.FieldNameKey)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, "", err
	}
	groups, next := paging.Trim(groups, size, func(g *ent.Group) string { return g.NameKey })
	out := make([]*gatehousev1.Group, len(groups))
	for i, g := range groups {
		out[i] = convert.Group(g)
	}
	return out, next, nil
}

// DeleteGroup deletes a group; its members lose the roles it carried.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) DeleteGroup(ctx context.Context, id string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		g, err := tx.Group.Get(ctx, id)
		if err != nil {
			return nil, groupNotFound(err, id)
		}
		members, err := groupMembers(ctx, tx, id)
		if err != nil {
			return nil, err
		}
		if err := tx.Group.DeleteOne(g).Exec(ctx); err != nil {
			return nil, err
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_GROUP_DELETED,
			Payload: &gatehousev1.Event_GroupDeleted{GroupDeleted: &gatehousev1.GroupPayload{Group: convert.Group(g)}},
		})
		return s.recompute(ctx, tx, members)
	})
}

// AddGroupMember adds a user to a group; adding a member again changes nothing.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) AddGroupMember(ctx context.Context, groupID, userID string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		if err := groupAndUserExist(ctx, tx, groupID, userID); err != nil {
			return nil, err
		}
		exists, err := tx.GroupMember.Query().Where(groupmember.GroupID(groupID), groupmember.UserID(userID)).Exist(ctx)
		if err != nil || exists {
			return nil, err
		}
		if err := tx.GroupMember.Create().SetGroupID(groupID).SetUserID(userID).Exec(ctx); err != nil {
			return nil, err
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_GROUP_MEMBER_ADDED,
			UserId:  userID,
			Payload: &gatehousev1.Event_MemberAdded{MemberAdded: &gatehousev1.MembershipPayload{GroupId: groupID, UserId: userID}},
		})
		return s.recompute(ctx, tx, []string{userID})
	})
}

// RemoveGroupMember removes a user from a group. A user who is not a member is NOT_FOUND.
// It returns the change's impact; store.Preview runs it and rolls it back (see mutate).
func (s *Service) RemoveGroupMember(ctx context.Context, groupID, userID string, mode store.Mode) (*gatehousev1.ChangeImpact, events.Position, error) {
	return s.mutate(ctx, mode, func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error) {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return nil, err
		}
		if err := groupAndUserExist(ctx, tx, groupID, userID); err != nil {
			return nil, err
		}
		n, err := tx.GroupMember.Delete().Where(groupmember.GroupID(groupID), groupmember.UserID(userID)).Exec(ctx)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, errs.NotFound("MEMBERSHIP_NOT_FOUND", "user %s is not a member of group %s", userID, groupID)
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_GROUP_MEMBER_REMOVED,
			UserId:  userID,
			Payload: &gatehousev1.Event_MemberRemoved{MemberRemoved: &gatehousev1.MembershipPayload{GroupId: groupID, UserId: userID}},
		})
		return s.recompute(ctx, tx, []string{userID})
	})
}

func groupAndUserExist(ctx context.Context, tx *store.Tx, groupID, userID string) error {
	if ok, err := tx.Group.Query().Where(entgroup.ID(groupID)).Exist(ctx); err != nil || !ok {
		return firstErr(err, errs.NotFound("GROUP_NOT_FOUND", "group %s not found", groupID))
	}
	if ok, err := tx.User.Query().Where(entuser.ID(userID)).Exist(ctx); err != nil || !ok {
		return firstErr(err, errs.NotFound("USER_NOT_FOUND", "user %s not found", userID))
	}
	return nil
}

func firstErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// ListGroupMembers lists a group's members ordered by username.
func (s *Service) ListGroupMembers(ctx context.Context, groupID string, pageSize int32, pageToken string) ([]*gatehousev1.User, string, error) {
	if _, err := s.GetGroup(ctx, groupID); err != nil {
		return nil, "", err
	}
	return s.ListUsers(ctx, UserFilter{PageSize: pageSize, PageToken: pageToken, GroupID: groupID})
}

// ListUserGroups lists the groups a user belongs to, ordered by name.
func (s *Service) ListUserGroups(ctx context.Context, userID string) ([]*gatehousev1.Group, error) {
	if _, err := s.getUser(ctx, s.store.Client, userID); err != nil {
		return nil, err
	}
	groups, err := s.store.Client.Group.Query().
		Where(entgroup.HasMembersWith(groupmember.UserID(userID))).
		Order(ent.Asc(entgroup.FieldNameKey)).All(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*gatehousev1.Group, len(groups))
	for i, g := range groups {
		out[i] = convert.Group(g)
	}
	return out, nil
}
