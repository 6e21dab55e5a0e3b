package session

import (
	"context"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// ImpersonationTimeout is the longest an impersonation session lasts: its absolute timeout is the
// shorter of this and the absolute timeout the target's session policy resolves to, and it never
// outlives the impersonator's own session's absolute expiry.
const ImpersonationTimeout = time.Hour

// impersonatorEndedNote is the note of an impersonation session that ended because the
// impersonator's own session ended (its reason is REVOKED_BY_USER); the impersonator session's own
// reason follows in parentheses.
const impersonatorEndedNote = "the impersonator's session ended"

// Impersonation is a request to open a session as another user.
type Impersonation struct {
	// Username is the user to impersonate, matched as logins match it.
	Username string
	// Reason is why, kept with the session and in its events; required.
	Reason string
	Type   gatehousev1.SessionType
	Client *gatehousev1.ClientInfo
}

// impersonating is what create needs to open an impersonation session.
type impersonating struct {
	// by is the impersonator: the caller, authenticated by its own session.
	by     *auth.Principal
	reason string
}

// CreateImpersonation opens a session as another user for the caller, who holds
// gatehouse.impersonator (the authorisation rule sees to that). The session carries the target's
// roles and the impersonator's user and session ids and reason; it does not count towards the
// target's concurrent-session limits; its absolute timeout is at most ImpersonationTimeout; it ends
// when the impersonator's session ends (endWhere).
//
// Errors: UNAUTHENTICATED without a caller; PERMISSION_DENIED IMPERSONATION_CHAIN when the caller's
// own session is an impersonation; INVALID_ARGUMENT for an empty reason or the caller itself
// (IMPERSONATING_SELF); NOT_FOUND USER_NOT_FOUND for an unknown user; FAILED_PRECONDITION
// USER_DISABLED for a disabled one; PERMISSION_DENIED CALLER_LACKS_ROLE for a user holding a
// built-in role the caller lacks; PERMISSION_DENIED when the caller lost gatehouse.impersonator
// since its token was authenticated (the caller's roles are read again inside the transaction, see
// lockImpersonator); FAILED_PRECONDITION IMPERSONATOR_SESSION_ENDED when the caller's session ends
// meanwhile.
//
// NOTE: unlike a login, an unknown or disabled user is not hidden behind INVALID_CREDENTIALS: the
// caller is an authenticated, privileged user who proves nothing about the target and guesses no
// password, and an exact answer serves the audit trail better.
func (s *Service) CreateImpersonation(ctx context.Context, in Impersonation) (*Created, error) {
	by := auth.PrincipalFrom(ctx)
	if by == nil {
		return nil, errs.Unauthenticated("UNAUTHENTICATED", "impersonation needs the impersonator's own session token")
	}
	if by.Impersonated() {
		// NOTE: a stolen impersonation token must not open further sessions (as the target, or
		// as anyone the target could impersonate): impersonations never chain.
		return nil, errs.PermissionDenied("IMPERSONATION_CHAIN", "an impersonation session may not impersonate")
	}
	if in.Reason == "" {
		return nil, errs.InvalidArgument("INVALID_ARGUMENT", "an impersonation needs a reason",
			errs.FieldViolation{Field: "impersonate.reason", Description: "must not be empty"})
	}
	u, err := s.store.UserByName(ctx, in.Username)
	if ent.IsNotFound(err) {
		return nil, errUserNotFound(in.Username)
	}
	if err != nil {
		return nil, err
	}
	if u.ID == by.UserID {
		return nil, errs.InvalidArgument("IMPERSONATING_SELF", "a user may not impersonate themselves",
			errs.FieldViolation{Field: "impersonate.username", Description: "must name another user than the caller"})
	}
	return s.create(ctx, u, nil, in.Type, in.Client, nil, &impersonating{by: by, reason: in.Reason})
}

func errUserNotFound(username string) error {
	return errs.NotFound("USER_NOT_FOUND", "no user is named %q", username)
}

// mayOpen checks, inside the transaction, the target user that create locked (err is the lock's
// error): it must exist and be enabled.
func (imp *impersonating) mayOpen(locked *ent.User, err error) error {
	if ent.IsNotFound(err) {
		return errs.NotFound("USER_NOT_FOUND", "the user no longer exists")
	}
	if err != nil {
		return err
	}
	if locked.Disabled {
		return errs.FailedPrecondition("USER_DISABLED", "a disabled user cannot be impersonated").
			WithMetadata("user_id", locked.ID)
	}
	return nil
}

// lockImpersonator applies the guards that depend on roles, the impersonator's and the target's
// (roles), then locks the impersonator's own session and returns it; it must be active and
// unexpired at now. tx must hold the role-graph lock shared: the impersonator's roles are read
// again under it (callerNow), and an impersonator that no longer holds gatehouse.impersonator is
// PERMISSION_DENIED, as the authorisation rule denies one that never held it.
//
// NOTE: the lock orders this transaction with any that ends the impersonator's session: one that
// commits first is seen here (the impersonation is refused), and one that commits after sees the
// new impersonation and ends it too (endWhere). The shared role-graph lock does the same for a
// change of the impersonator's roles: one that committed first is seen by callerNow, and one that
// commits after sees the impersonation (endOutgrownImpersonations).
func (imp *impersonating) lockImpersonator(ctx context.Context, tx *store.Tx, roles []string, now time.Time) (*ent.Session, error) {
	caller, err := callerNow(ctx, tx, imp.by, auth.RoleImpersonator)
	if err != nil {
		return nil, err
	}
	// NOTE: the same guard as a session issuer's (mayIssueFor): an impersonator that could open
	// a session as a holder of gatehouse.admin would be gatehouse.admin in disguise.
	if err := caller.MayActOn(roles); err != nil {
		return nil, err
	}
	by, err := tx.SessionsForUpdate().Where(entsession.ID(imp.by.SessionID)).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, err
	}
	if by == nil || !by.Active || !now.Before(by.IdleExpireTime) || !now.Before(by.AbsoluteExpireTime) {
		return nil, errs.FailedPrecondition("IMPERSONATOR_SESSION_ENDED", "the impersonator's own session has ended")
	}
	return by, nil
}

// expiry shortens the idle and absolute expiry that the target's policy gives a session created
// at now: at most ImpersonationTimeout, and never past the impersonator's session's absolute expiry.
func (imp *impersonating) expiry(by *ent.Session, now, idle, absolute time.Time) (time.Time, time.Time) {
	absolute = minTime(absolute, now.Add(ImpersonationTimeout), by.AbsoluteExpireTime)
	return minTime(idle, absolute), absolute
}

// refreshedExpiry returns the idle and absolute expiry of a live session under r, its user's
// current policy (for a policy or role change): expiry's, except that an impersonation's absolute
// expiry never moves later than it is (ImpersonationTimeout and the impersonator's session bound it
// when it opens).
func refreshedExpiry(r *policy.Resolved, sess *ent.Session) (idle, absolute time.Time) {
	idle, absolute = expiry(r, sess.CreateTime, sess.LastActiveTime)
	if sess.ImpersonatorSessionID != "" {
		absolute = minTime(absolute, sess.AbsoluteExpireTime)
		idle = minTime(idle, absolute)
	}
	return idle, absolute
}

func minTime(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if u.Before(t) {
			t = u
		}
	}
	return t
}

// notImpersonation matches the sessions that are not impersonations: only they count towards a
// user's concurrent-session limits.
func notImpersonation() predicate.Session { return entsession.ImpersonatorSessionID("") }

// endImpersonations ends the active impersonation sessions opened from the sessions ended (at most
// store.MaxInList ids, which ended with reason) with REVOKED_BY_USER and impersonatorEndedNote,
// inside tx.
func endImpersonations(ctx context.Context, tx *store.Tx, ended []string, reason gatehousev1.TerminationReason) (int, error) {
	note := impersonatorEndedNote + " (" + reason.String() + ")"
	ids, _, err := endWhere(ctx, tx, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER, note, 0,
		entsession.ImpersonatorSessionIDIn(ended...))
	return len(ids), err
}

// withinCap refuses an impersonation that would take the user past the store's per-user cap on
// active sessions (store.Store.MaxSessionsPerUser).
//
// NOTE: a login past the cap evicts the user's oldest session (applyCap); an impersonation must
// not end the user's own sessions, so it is refused instead, which also keeps an impersonator
// from piling up sessions of one user.
func withinCap(ctx context.Context, tx *store.Tx, userID string) error {
	limit := tx.Store().MaxSessionsPerUser()
	if limit <= 0 {
		return nil
	}
	n, err := activeSessions(ctx, tx, userID)
	if err != nil {
		return err
	}
	if n >= limit {
		return errs.ResourceExhausted("SESSION_CAP", "the user already holds %d active sessions, the most one user may hold", n).
			WithMetadata("max_sessions_per_user", strconv.Itoa(limit))
	}
	return nil
}
