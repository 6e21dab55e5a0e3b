package identity

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/groupmember"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/paging"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

func keyOf(name string) string { return convert.Key(name) }

// NewUser holds the fields of a user to create.
type NewUser struct {
	Username    string
	Email       string
	DisplayName string
	// Password is empty for users who only get sessions through single sign-on.
	Password string
	Disabled bool
}

// CreateUser creates a user. A username taken case-insensitively is ALREADY_EXISTS.
func (s *Service) CreateUser(ctx context.Context, in NewUser) (*gatehousev1.User, events.Position, error) {
	var hash *string
	if in.Password != "" {
		h, err := s.hasher.Hash(ctx, in.Password)
		if err != nil {
			return nil, events.Position{}, err
		}
		hash = &h
	}
	var out *gatehousev1.User
	pos, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		u, err := tx.User.Create().
			SetID(convert.NewID()).
			SetUsername(in.Username).
			SetUsernameKey(keyOf(in.Username)).
			SetEmail(in.Email).
			SetDisplayName(in.DisplayName).
			SetDisabled(in.Disabled).
			SetNillablePasswordHash(hash).
			Save(ctx)
		if isConstraint(err) {
			return usernameTaken(in.Username)
		}
		if err != nil {
			return err
		}
		out = convert.User(u)
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_USER_CREATED,
			UserId:  u.ID,
			Payload: &gatehousev1.Event_UserCreated{UserCreated: &gatehousev1.UserPayload{User: out}},
		})
		return nil
	})
	return out, pos, err
}

func usernameTaken(username string) error {
	return errs.AlreadyExists("USERNAME_TAKEN", "username %q is taken", username)
}

// GetUser returns one user.
func (s *Service) GetUser(ctx context.Context, id string) (*gatehousev1.User, error) {
	u, err := s.getUser(ctx, s.store.Client, id)
	if err != nil {
		return nil, err
	}
	return convert.User(u), nil
}

// LookupUser finds a user by username, case-insensitively.
func (s *Service) LookupUser(ctx context.Context, username string) (*gatehousev1.User, error) {
	u, err := s.store.UserByName(ctx, username)
	if err != nil {
		return nil, notFound(err, "USER_NOT_FOUND", "no user named %q", username)
	}
	return convert.User(u), nil
}

// UserFilter selects users to list.
type UserFilter struct {
	PageSize       int32
	PageToken      string
	UsernamePrefix string
	GroupID        string
	// Disabled, when non-nil, keeps only users whose disabled flag equals it.
	Disabled *bool
}

// ListUsers lists users ordered by username (case-insensitively).
func (s *Service) ListUsers(ctx context.Context, f UserFilter) ([]*gatehousev1.User, string, error) {
	after, err := paging.Parse(f.PageToken)
	if err != nil {
		return nil, "", err
	}
	q := s.store.Client.User.Query().Where(entuser.UsernameKeyGT(after))
	if f.UsernamePrefix != "" {
		q = q.Where(entuser.UsernameKeyHasPrefix(keyOf(f.UsernamePrefix)))
	}
	if f.GroupID != "" {
		q = q.Where(entuser.HasMembershipsWith(groupmember.GroupID(f.GroupID)))
	}
	if f.Disabled != nil {
		q = q.Where(entuser.Disabled(*f.Disabled))
	}
	return userPage(ctx, q, paging.Size(f.PageSize))
}

// userPage runs a user query ordered by username key and returns one page and the next token.
func userPage(ctx context.Context, q *ent.UserQuery, size int) ([]*gatehousev1.User, string, error) {
	users, err := q.Order(ent.Asc(entuser.FieldUsernameKey)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, "", err
	}
	users, next := paging.Trim(users, size, func(u *ent.User) string { return u.UsernameKey })
	out := make([]*gatehousev1.User, len(users))
	for i, u := range users {
		out[i] = convert.User(u)
	}
	return out, next, nil
}

// Updatable user fields, as named in update masks.
var userFields = []string{"username", "email", "display_name", "disabled"}

// UpdateUser changes the fields named in mask. A nil mask (no update_mask) means the fields that in
// populates, as AIP-134 asks: its non-empty strings, and disabled when it is true. So without a mask
// an empty string never clears a field and disabled can only be set to false with a mask naming it.
// An empty, non-nil mask changes nothing (a REST PATCH with an empty body). Disabling a user ends
// their sessions with USER_DISABLED. A caller may change only a user whose built-in roles it holds
// (PERMISSION_DENIED CALLER_LACKS_ROLE), judged on the roles the user holds when the change
// commits.
func (s *Service) UpdateUser(ctx context.Context, in *gatehousev1.User, mask []string) (*gatehousev1.User, events.Position, error) {
	mask = convert.MaskPaths(mask, "id", "create_time", "update_time", "has_password")
	if mask == nil {
		mask = convert.PopulatedPaths(in, userFields...)
	}
	for _, f := range mask {
		if !slices.Contains(userFields, f) {
			return nil, events.Position{}, errs.InvalidArgument("INVALID_UPDATE_MASK", "update_mask names a field that cannot be updated",
				errs.FieldViolation{Field: "update_mask", Description: "unknown or immutable field " + f + "; updatable: username, email, display_name, disabled"})
		}
	}
	if slices.Contains(mask, "username") && in.GetUsername() == "" {
		return nil, events.Position{}, errs.InvalidArgument("INVALID_ARGUMENT", "user.username must not be empty",
			errs.FieldViolation{Field: "user.username", Description: "must not be empty"})
	}
	disabling := slices.Contains(mask, "disabled") && in.GetDisabled()
	var out *gatehousev1.User
	pos, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		var u *ent.User
		var err error
		if disabling {
			// NOTE: disabling can take gatehouse.admin's last holder away, so it is serialised with
			// every other change that can (see requireAnAdmin).
			if err := tx.LockRoleGraph(ctx); err != nil {
				return err
			}
			u, err = session.LockUser(ctx, tx, in.GetId())
		} else {
			// NOTE: the user's roles are read below to decide whether the caller may change the
			// user at all (manageable); under READ COMMITTED a grant of a built-in role that
			// commits after that read would otherwise let the caller change a user it may no
			// longer manage. The shared role-graph lock waits for such a change or holds it off
			// until this one commits, and comes before the user's row in the one lock order.
			u, err = tx.LockUserSharingRoleGraph(ctx, in.GetId())
		}
		if err != nil {
			return notFound(err, "USER_NOT_FOUND", "user %s not found", in.GetId())
		}
		held, err := manageable(ctx, tx, u.ID)
		if err != nil {
			return err
		}
		upd := u.Update().SetUpdateTime(convert.Now())
		var changed []string
		for _, f := range mask {
			switch f {
			case "username":
				if in.Username != u.Username {
					upd.SetUsername(in.Username).SetUsernameKey(keyOf(in.Username))
					changed = append(changed, f)
				}
			case "email":
				if in.Email != u.Email {
					upd.SetEmail(in.Email)
					changed = append(changed, f)
				}
			case "display_name":
				if in.DisplayName != u.DisplayName {
					upd.SetDisplayName(in.DisplayName)
					changed = append(changed, f)
				}
			case "disabled":
				if in.Disabled != u.Disabled {
					upd.SetDisabled(in.Disabled)
					changed = append(changed, f)
				}
			}
		}
		if len(changed) == 0 {
			out = convert.User(u)
			return nil
		}
		nu, err := upd.Save(ctx)
		if isConstraint(err) {
			return usernameTaken(in.Username)
		}
		if err != nil {
			return err
		}
		out = convert.User(nu)
		tx.Emit(&gatehousev1.Event{
			Type:   gatehousev1.EventType_EVENT_TYPE_USER_UPDATED,
			UserId: nu.ID,
			Payload: &gatehousev1.Event_UserUpdated{UserUpdated: &gatehousev1.UserUpdatedPayload{
				User: out, ChangedFields: changed,
			}},
		})
		if nu.Disabled && !u.Disabled {
			tx.Emit(&gatehousev1.Event{
				Type:    gatehousev1.EventType_EVENT_TYPE_USER_DISABLED,
				UserId:  nu.ID,
				Payload: &gatehousev1.Event_UserDisabled{UserDisabled: &gatehousev1.UserPayload{User: out}},
			})
			if _, err := session.EndUserSessions(ctx, tx, nu.ID, "", gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED, ""); err != nil {
				return err
			}
			return requireAdminWithout(ctx, tx, held)
		}
		return nil
	})
	return out, pos, err
}

// DeleteUser ends the user's sessions (USER_DELETED) and deletes the user with their memberships
// and grants.
func (s *Service) DeleteUser(ctx context.Context, id string) (events.Position, error) {
	return s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		if err := tx.LockRoleGraph(ctx); err != nil {
			return err
		}
		// NOTE: the user's row is locked before its sessions (session.LockUser), the order every
		// other ending of sessions follows; locking the sessions first deadlocked against a
		// concurrent TerminateSession.
		u, err := session.LockUser(ctx, tx, id)
		if err != nil {
			return notFound(err, "USER_NOT_FOUND", "user %s not found", id)
		}
		held, err := manageable(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := session.EndUserSessions(ctx, tx, id, "", gatehousev1.TerminationReason_TERMINATION_REASON_USER_DELETED, ""); err != nil {
			return err
		}
		if err := policy.DeleteForScope(ctx, tx, entpolicy.ScopeKindUser, id); err != nil {
			return err
		}
		if err := tx.User.DeleteOne(u).Exec(ctx); err != nil {
			return err
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_USER_DELETED,
			UserId:  id,
			Payload: &gatehousev1.Event_UserDeleted{UserDeleted: &gatehousev1.UserPayload{User: convert.User(u)}},
		})
		return requireAdminWithout(ctx, tx, held)
	})
}

// SetPassword sets a user's password and ends the user's other sessions (PASSWORD_CHANGED): every
// session but the caller's. When the caller is the user, currentPassword must match; it is checked
// as a login's password is (PasswordVerifier): within the failed-login budgets, and recorded.
// Another caller may set the password only of a user whose built-in roles it holds
// (PERMISSION_DENIED CALLER_LACKS_ROLE), judged on the roles the user holds when the change
// commits.
func (s *Service) SetPassword(ctx context.Context, userID, newPassword, currentPassword string) (events.Position, error) {
	p := auth.PrincipalFrom(ctx)
	self := p != nil && p.UserID == userID
	u, err := s.getUser(ctx, s.store.Client, userID)
	if err != nil {
		return events.Position{}, err
	}
	if self {
		// NOTE: checked as a login is, against the same failed-login budgets and with a
		// LOGIN_FAILED event for a wrong one; checked here with the hasher alone, the current
		// password was a guessing oracle without limit or audit for anyone holding a session.
		ok, err := s.passwords.VerifyPassword(ctx, u, currentPassword)
		if err != nil {
			return events.Position{}, err
		}
		if !ok {
			return events.Position{}, errs.InvalidArgument("CURRENT_PASSWORD_MISMATCH", "current_password does not match",
				errs.FieldViolation{Field: "current_password", Description: "required, and must be the user's current password"})
		}
	}
	hash, err := s.hasher.Hash(ctx, newPassword)
	if err != nil {
		return events.Position{}, err
	}
	except := ""
	if p != nil {
		except = p.SessionID
	}
	return s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		if !self {
			// NOTE: as in UpdateUser, the role-graph lock is taken shared, with the user's row after
			// it, before the user's roles are read: a grant of gatehouse.admin that commits after
			// the read must not let an identity administrator set the password of a user who is
			// now an administrator.
			if _, err := tx.LockUserSharingRoleGraph(ctx, userID); err != nil {
				return notFound(err, "USER_NOT_FOUND", "user %s not found", userID)
			}
			if err := mayManageUser(ctx, tx, userID); err != nil {
				return err
			}
		}
		n, err := tx.User.Update().Where(entuser.ID(userID)).SetPasswordHash(hash).SetUpdateTime(convert.Now()).Save(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return errs.NotFound("USER_NOT_FOUND", "user %s not found", userID)
		}
		tx.Emit(&gatehousev1.Event{
			Type:    gatehousev1.EventType_EVENT_TYPE_PASSWORD_CHANGED,
			UserId:  userID,
			Payload: &gatehousev1.Event_PasswordChanged{PasswordChanged: &gatehousev1.PasswordChangedPayload{BySelf: self}},
		})
		_, err = session.EndUserSessions(ctx, tx, userID, except, gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED, "")
		return err
	})
}
