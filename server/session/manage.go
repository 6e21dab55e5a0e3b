package session

import (
	"context"
	"slices"

	"github.com/gatehouse/gatehouse/ent"
	entgroup "github.com/gatehouse/gatehouse/ent/group"
	"github.com/gatehouse/gatehouse/ent/groupmember"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/paging"
	"github.com/gatehouse/gatehouse/server/store"
)

func sessionNotFound(id string) error {
	return errs.NotFound("SESSION_NOT_FOUND", "session %s not found", id)
}

// mayRead reports whether the caller may read sessions of userID.
func mayRead(p *auth.Principal, userID string) bool {
	return p.UserID == userID || p.HasAny(auth.RoleSessionAdmin, auth.RoleAuditor)
}

// Get returns one session: to its user, session admins and auditors. To any other caller a session
// that exists is SESSION_NOT_FOUND, exactly as one that does not.
//
// NOTE: session ids are not secrets, but which ids exist (and so how many sessions there are, and
// when they were made: ids are UUIDv7) is nothing a caller who may not read them should learn by
// probing; a PERMISSION_DENIED for existing ids would tell.
func (s *Service) Get(ctx context.Context, id string) (*gatehousev1.Session, error) {
	sess, err := s.store.Client.Session.Get(ctx, id)
	if err != nil && !ent.IsNotFound(err) {
		return nil, err
	}
	if sess == nil || !mayRead(auth.PrincipalFrom(ctx), sess.UserID) {
		return nil, sessionNotFound(id)
	}
	return convert.Session(sess), nil
}

// ListFilter selects sessions to list.
type ListFilter struct {
	// UserID is the user whose sessions to list; empty means the caller's own user.
	UserID          string
	Types           []gatehousev1.SessionType
	IncludeInactive bool
	PageSize        int32
	PageToken       string
}

// List lists a user's sessions, newest first (ids are UUIDv7, so id order is creation order).
func (s *Service) List(ctx context.Context, f ListFilter) ([]*gatehousev1.Session, string, error) {
	p := auth.PrincipalFrom(ctx)
	userID := f.UserID
	if userID == "" {
		userID = p.UserID
	}
	if !mayRead(p, userID) {
		return nil, "", errs.PermissionDenied("PERMISSION_DENIED", "only session admins and auditors may list another user's sessions")
	}
	after, err := paging.Parse(f.PageToken)
	if err != nil {
		return nil, "", err
	}
	q := s.store.Client.Session.Query().Where(entsession.UserID(userID))
	if after != "" {
		q = q.Where(entsession.IDLT(after))
	}
	if !f.IncludeInactive {
		q = q.Where(entsession.Active(true))
	}
	if len(f.Types) > 0 {
		var types []entsession.Type
		for _, t := range f.Types {
			if st, ok := convert.SessionTypeToStore(t); ok {
				types = append(types, st)
			}
		}
		q = q.Where(entsession.TypeIn(types...))
	}
	size := paging.Size(f.PageSize)
	found, err := q.Order(ent.Desc(entsession.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, "", err
	}
	found, next := paging.Trim(found, size, func(s *ent.Session) string { return s.ID })
	out := make([]*gatehousev1.Session, len(found))
	for i, sess := range found {
		out[i] = convert.Session(sess)
	}
	return out, next, nil
}

// Terminate ends one session. Its own user ends it with REVOKED_BY_USER (LOGOUT when it is the
// caller's own session); a session admin with REVOKED_BY_ADMIN. Ending an ended session changes
// nothing and returns it. A caller who may not read the session (see Get) is told SESSION_NOT_FOUND,
// as for a session that does not exist; one who may read it but not end it (an auditor),
// PERMISSION_DENIED.
func (s *Service) Terminate(ctx context.Context, id, note string) (*gatehousev1.Session, events.Position, error) {
	p := auth.PrincipalFrom(ctx)
	var out *gatehousev1.Session
	pos, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		sess, err := tx.Session.Get(ctx, id)
		if err != nil && !ent.IsNotFound(err) {
			return err
		}
		if sess == nil || !mayRead(p, sess.UserID) {
			return sessionNotFound(id)
		}
		var reason gatehousev1.TerminationReason
		switch {
		case sess.ID == p.SessionID:
			reason = gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT
		case sess.UserID == p.UserID:
			reason = gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER
		case p.Has(auth.RoleSessionAdmin):
			reason = gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN
		default:
			return errs.PermissionDenied("PERMISSION_DENIED", "only the session's user and session admins may end it")
		}
		if _, err := LockUser(ctx, tx, sess.UserID); err != nil && !ent.IsNotFound(err) {
			return err
		}
		ended, err := EndSession(ctx, tx, sess, reason, note)
		if err != nil {
			return err
		}
		out = convert.Session(ended)
		return nil
	})
	return out, pos, err
}

// TerminateUser ends every active session of a user except exceptID: REVOKED_BY_USER when the caller
// is that user ("sign out everywhere else"), REVOKED_BY_ADMIN otherwise.
func (s *Service) TerminateUser(ctx context.Context, userID, exceptID, note string) ([]string, events.Position, error) {
	p := auth.PrincipalFrom(ctx)
	reason := gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN
	if p.UserID == userID {
		reason = gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER
	}
	var ended []string
	pos, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, err := LockUser(ctx, tx, userID); ent.IsNotFound(err) {
			return errs.NotFound("USER_NOT_FOUND", "user %s not found", userID)
		} else if err != nil {
			return err
		}
		var err error
		ended, err = EndUserSessions(ctx, tx, userID, exceptID, reason, note)
		return err
	})
	if ended == nil {
		ended = []string{}
	}
	return ended, pos, err
}

// CheckRequest is what Check asks: whether the subject (Token, or UserID) holds Role or belongs
// to GroupID. FromDatabase reads the subject's session and roles from the database rather than
// the node's view.
type CheckRequest struct {
	Token, UserID, Role, GroupID string
	FromDatabase                 bool
}

// Checked is the answer of Check.
type Checked struct {
	// Allowed is true when the subject meets the requirement.
	Allowed bool
	// ImpersonatorUserID and ImpersonatorSessionID are set when the subject is a token whose session
	// is an impersonation.
	ImpersonatorUserID, ImpersonatorSessionID string
}

// Check reports whether a subject holds role or belongs to groupID (one of the two is set). The
// subject is a session token (which must validate) or a user id. A role is held as Gatehouse's own
// authorisation holds it (auth.Principal.Has): among the subject's effective roles, or implied by
// gatehouse.admin, which holds every role. An impersonation session's subject is the impersonated
// user (with that user's roles); the answer names the impersonator.
func (s *Service) Check(ctx context.Context, in CheckRequest) (Checked, error) {
	token, userID, role, groupID := in.Token, in.UserID, in.Role, in.GroupID
	var out Checked
	var roles []string
	if token != "" {
		row, u, userRoles, err := s.validate(ctx, token, in.FromDatabase)
		if err != nil {
			return out, err
		}
		userID, roles = u.Id, userRoles
		out.ImpersonatorUserID, out.ImpersonatorSessionID = row.ImpersonatorUserID, row.ImpersonatorSessionID
	} else {
		ok, err := s.store.Client.User.Query().Where(entuser.ID(userID)).Exist(ctx)
		if err != nil || !ok {
			return out, firstErr(err, errs.NotFound("USER_NOT_FOUND", "user %s not found", userID))
		}
		if roles, err = s.store.RoleNames(ctx, s.store.DB, userID); err != nil {
			return out, err
		}
	}
	if role != "" {
		// NOTE: the answer is the authorisation code's own rule, not a second copy of it, so that
		// Check never says a subject lacks a role that Gatehouse lets them act with. Has searches
		// a sorted list; the roles are sorted here in Go's order, whatever the database's
		// collation did.
		held := slices.Clone(roles)
		slices.Sort(held)
		out.Allowed = (&auth.Principal{UserID: userID, Roles: held}).Has(role)
		return out, nil
	}
	ok, err := s.store.Client.Group.Query().Where(entgroup.ID(groupID)).Exist(ctx)
	if err != nil || !ok {
		return out, firstErr(err, errs.NotFound("GROUP_NOT_FOUND", "group %s not found", groupID))
	}
	out.Allowed, err = s.store.Client.GroupMember.Query().Where(groupmember.GroupID(groupID), groupmember.UserID(userID)).Exist(ctx)
	return out, err
}

func firstErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}
