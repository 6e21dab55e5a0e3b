// Package session is the domain of sessions: login, validation, termination. It also applies the
// consequences of identity changes to live sessions.
package session

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

const (
	// activityInterval coalesces last-activity write-backs: a session's last activity is written
	// at most once per interval, not on every validation.
	activityInterval = time.Minute
)

// Options tunes the session domain.
type Options struct {
	// FailedLoginsPerUser and FailedLoginsPerAddress bound failed logins per username and per
	// client address (an IPv6 address counts as its /64); a zero Burst disables the limit. The
	// budgets are kept in memory, per node.
	FailedLoginsPerUser, FailedLoginsPerAddress RateLimit
	// QueueTimeout bounds how long a password check waits for the checks in flight of its username
	// or address that could spend the rest of its budget (then UNAVAILABLE,
	// auth.ReasonQueueTimeout). Zero means auth.DefaultMaxWait.
	QueueTimeout time.Duration
	// ViewSize bounds the sessions, and the users, the node's view holds (DefaultViewSize when
	// zero).
	ViewSize int
	// HeartbeatInterval is the period of WatchSession's heartbeats (15s when zero).
	HeartbeatInterval time.Duration
}

// Service implements the session domain.
type Service struct {
	store  *store.Store
	hasher *auth.Hasher
	log    *slog.Logger
	now    func() time.Time
	users  *limiter
	addrs  *limiter
	// known are the addresses users logged in from (knownClients).
	known *knownClients
	// queueTimeout is Options.QueueTimeout.
	queueTimeout time.Duration
	// sweepRounds counts the sweeper's rounds, failed ones included.
	sweepRounds atomic.Uint64
	// live, view and writeBack are the live layer (UseLive); nil live means every read goes to
	// the database.
	live      *events.Live
	view      *view
	writeBack *writeBack
	// heartbeat is the period of WatchSession's heartbeats.
	heartbeat time.Duration
	// usersBatch, sessionsBatch and impersonationsBatch are the streams' shared reads (see
	// batcher).
	usersBatch          *batcher[userRoles]
	sessionsBatch       *batcher[*ent.Session]
	impersonationsBatch *batcher[[]*ent.Session]

	// refreshRead is a test hook, nil otherwise: called by refreshExpiry between its first read of
	// the sessions and its locking of those it changes.
	refreshRead func()
}

// New returns the session domain over st.
func New(st *store.Store, hasher *auth.Hasher, log *slog.Logger, opts Options) *Service {
	if opts.QueueTimeout <= 0 {
		opts.QueueTimeout = auth.DefaultMaxWait
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 15 * time.Second
	}
	s := &Service{
		store: st, hasher: hasher, log: log, now: convert.Now,
		users: newLimiter(opts.FailedLoginsPerUser), addrs: newLimiter(opts.FailedLoginsPerAddress), known: newKnownClients(),
		queueTimeout: opts.QueueTimeout, view: newView(opts.ViewSize), heartbeat: opts.HeartbeatInterval,
	}
	s.usersBatch = newBatcher(s.readUsers)
	s.sessionsBatch = newBatcher(s.readSessions)
	s.impersonationsBatch = newBatcher(s.readImpersonations)
	return s
}

// UseLive makes the service answer validations from the node's view, kept current by live's hub,
// and serve WatchSession. RunWriteBack must run for activity to reach the database.
func (s *Service) UseLive(live *events.Live) {
	s.live = live
	s.writeBack = newWriteBack(s.store, s.log, func() time.Duration { return time.Duration(s.view.watchers.lead.Load()) }, s.view.forget)
	live.Hub().OnCommit(s.view.apply)
}

var _ auth.Authenticator = (*Service)(nil)

// Login is a password login request.
type Login struct {
	Username string
	Password string
	Type     gatehousev1.SessionType
	Client   *gatehousev1.ClientInfo
}

// Created is the result of a login.
type Created struct {
	Session *gatehousev1.Session
	Token   string
	User    *gatehousev1.User
	Roles   []string
	Evicted []string
	Pos     events.Position
}

// CreateWithPassword logs a user in with a password. Unknown users, wrong passwords, disabled users
// and users without a password all get one INVALID_CREDENTIALS error after the same amount of work
// (one argon2id derivation), each recorded as a LOGIN_FAILED event. Failed logins are limited per
// username and per client address (LOGIN_RATE_LIMITED, also recorded); see checkPassword. A
// successful login re-hashes a password stored with other parameters than the hasher's.
func (s *Service) CreateWithPassword(ctx context.Context, in Login) (*Created, error) {
	u, err := s.store.UserByName(ctx, in.Username)
	if err != nil && !ent.IsNotFound(err) {
		return nil, err
	}
	err = s.checkPassword(ctx, passwordCheck{username: in.Username, user: u, client: in.Client}, in.Password)
	if errors.Is(err, errWrongPassword) {
		return nil, errInvalidCredentials()
	}
	if err != nil {
		return nil, err
	}
	out, err := s.create(ctx, u, u.PasswordHash, in.Type, in.Client, nil, nil)
	if err != nil {
		return nil, err
	}
	s.rehash(ctx, u, in.Password, in.Client)
	return out, nil
}

// create opens a session for an authenticated user: one whom issuer (a session issuer) vouches for,
// one whom imp's impersonator opens a session as, or, when both are nil, one who gave the password
// whose hash is verifiedHash.
func (s *Service) create(ctx context.Context, u *ent.User, verifiedHash *string, typ gatehousev1.SessionType, client *gatehousev1.ClientInfo, issuer *auth.Principal, imp *impersonating) (*Created, error) {
	trusted := issuer != nil
	st, ok := convert.SessionTypeToStore(typ)
	if !ok {
		return nil, errs.InvalidArgument("INVALID_ARGUMENT", "type must be a session type",
			errs.FieldViolation{Field: "type", Description: "must be a defined session type other than unspecified"})
	}
	token, hash, err := auth.NewToken()
	if err != nil {
		return nil, err
	}
	ci := s.clientInfo(ctx, client)
	out := &Created{Token: token}
	out.Pos, err = s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		// NOTE: the shared role-graph lock keeps the roles and policies read below from changing
		// until the session is stored; the user's row lock serialises logins of one user across
		// nodes, so that racing logins cannot both see room under the limit.
		locked, err := tx.LockUserSharingRoleGraph(ctx, u.ID)
		if imp != nil {
			err = imp.mayOpen(locked, err)
		} else if ent.IsNotFound(err) || (err == nil && locked.Disabled) {
			return errInvalidCredentials()
		}
		if err != nil {
			return err
		}
		// NOTE: a password changed since it was verified (a SetPassword that committed while this
		// login was hashing) no longer logs in: the change ends the user's sessions, and a session
		// opened with the old password must not slip in after it.
		if !trusted && imp == nil && (verifiedHash == nil || locked.PasswordHash == nil || *locked.PasswordHash != *verifiedHash) {
			return errInvalidCredentials()
		}
		roles, err := s.store.RoleNames(ctx, tx, u.ID)
		if err != nil {
			return err
		}
		if trusted {
			if err := mayIssueFor(ctx, tx, issuer, roles); err != nil {
				return err
			}
		}
		now := s.now()
		var by *ent.Session
		if imp != nil {
			if by, err = imp.lockImpersonator(ctx, tx, roles, now); err != nil {
				return err
			}
		}
		set, err := policy.Load(ctx, tx.SessionPolicy, u.ID, roles)
		if err != nil {
			return err
		}
		resolved := set.Resolve()
		if imp == nil {
			out.Evicted, err = s.admit(ctx, tx, u.ID, typ, resolved, now)
		} else {
			// NOTE: an impersonation does not count towards the user's limits (see
			// notImpersonation) and so evicts none of the user's sessions, nor is refused by them.
			if _, err = endExpired(ctx, tx, now, 0, entsession.UserID(u.ID)); err == nil {
				err = withinCap(ctx, tx, u.ID)
			}
		}
		if err != nil {
			return err
		}
		idle, absolute := expiry(resolved, now, now)
		if imp != nil {
			idle, absolute = imp.expiry(by, now, idle, absolute)
		}
		create := tx.Session.Create()
		if imp != nil {
			create.SetImpersonatorUserID(by.UserID).SetImpersonatorSessionID(by.ID).SetImpersonationReason(imp.reason)
		}
		sess, err := create.
			SetID(convert.NewID()).
			SetUserID(u.ID).
			SetTokenHash(hash).
			SetType(st).
			SetUserAgent(ci.UserAgent).
			SetIPAddress(ci.IpAddress).
			SetDeviceName(ci.DeviceName).
			SetTrusted(trusted).
			SetCreateTime(now).
			SetLastActiveTime(now).
			SetIdleExpireTime(idle).
			SetAbsoluteExpireTime(absolute).
			Save(ctx)
		if err != nil {
			return err
		}
		out.Session, out.Roles, out.User = convert.Session(sess), roles, convert.User(locked)
		// NOTE: the actor of an impersonation's SESSION_CREATED is the impersonator (the caller);
		// the impersonator fields name it too, as on every event of the impersonation session.
		tx.Emit(&gatehousev1.Event{
			Type:                  gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED,
			UserId:                u.ID,
			SessionId:             sess.ID,
			ImpersonatorUserId:    sess.ImpersonatorUserID,
			ImpersonatorSessionId: sess.ImpersonatorSessionID,
			Payload: &gatehousev1.Event_SessionCreated{SessionCreated: &gatehousev1.SessionCreatedPayload{
				Session: out.Session, Roles: roles, Trusted: trusted,
			}},
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateTrusted opens a session for a user that the calling session issuer authenticated elsewhere
// (SAML, OIDC, LDAP). Unknown and disabled users get the same INVALID_CREDENTIALS as a failed
// password; a user holding a built-in role the issuer does not hold is PERMISSION_DENIED
// CALLER_LACKS_ROLE. The issuer's roles are read again inside the login's transaction
// (mayIssueFor): an issuer that lost gatehouse.session_issuer since its token was authenticated is
// PERMISSION_DENIED, as the authorisation rule denies one that never held it.
func (s *Service) CreateTrusted(ctx context.Context, username string, typ gatehousev1.SessionType, client *gatehousev1.ClientInfo) (*Created, error) {
	u, err := s.store.UserByName(ctx, username)
	if err != nil && !ent.IsNotFound(err) {
		return nil, err
	}
	if u == nil || u.Disabled {
		if err := s.recordFailure(ctx, passwordCheck{username: username, user: u, client: client}, false); err != nil {
			return nil, err
		}
		return nil, errInvalidCredentials()
	}
	// NOTE: the authorisation rule admits only session issuers to trusted logins.
	return s.create(ctx, u, nil, typ, client, auth.PrincipalFrom(ctx), nil)
}

// mayIssueFor refuses, inside tx and under the shared role-graph lock, a trusted login by an issuer
// that no longer holds gatehouse.session_issuer (PERMISSION_DENIED, as the authorisation rule
// denies it), or for a user holding a built-in role that the issuer does not hold itself; the
// issuer's roles are those the database holds now (callerNow).
//
// NOTE: otherwise gatehouse.session_issuer would be gatehouse.admin in disguise: an issuer could
// open a session for the administrator and act with its roles. Issuers vouch for who a user is,
// not for more power than their own.
func mayIssueFor(ctx context.Context, tx *store.Tx, issuer *auth.Principal, roles []string) error {
	issuer, err := callerNow(ctx, tx, issuer, auth.RoleSessionIssuer)
	if err != nil {
		return err
	}
	if r := issuer.MissingBuiltIn(roles); r != "" {
		return errs.PermissionDenied("CALLER_LACKS_ROLE",
			"a session issuer may not open a session for a user holding %s, which the issuer does not hold", r).
			WithMetadata("role", r)
	}
	return nil
}

// callerNow returns the caller p with the effective roles the database holds for it now, read
// through tx, in place of those read when its token was authenticated. A caller that no longer
// holds role gets the authorisation rule's PERMISSION_DENIED (auth.Denied), as one that never held
// it does. tx must hold the role-graph lock, shared at least (store.Tx.LockUserSharingRoleGraph).
//
// NOTE: the caller's roles were read before tx began. A revoke that committed since then ran its
// role-change hooks (endOutgrownImpersonations) before this session existed, so a session opened
// on the old roles would outlive the revoke unseen. Read under the shared lock, the roles are
// those of every change that committed before it, and none can change them until tx ends.
func callerNow(ctx context.Context, tx *store.Tx, p *auth.Principal, role string) (*auth.Principal, error) {
	roles, err := tx.Store().RoleNames(ctx, tx, p.UserID)
	if err != nil {
		return nil, err
	}
	now := *p
	now.Roles = roles
	if !now.Has(role) {
		return nil, auth.Denied()
	}
	return &now, nil
}

// Validated is a session that a token authenticates.
type Validated struct {
	Session *gatehousev1.Session
	User    *gatehousev1.User
	Roles   []string
}

// Validate checks a token: UNAUTHENTICATED with reason SESSION_NOT_FOUND, SESSION_TERMINATED (with
// the termination reason in the metadata) or SESSION_EXPIRED when it does not authenticate.
//
// With the live layer (UseLive) it answers from the node's view once a tailer round that began
// after the call has finished (see view), and reads the database only on a miss, on what looks
// like an expiry (another node's activity may have moved it), or when fromDB asks for it. Without
// it, and with fromDB, it reads the database.
func (s *Service) Validate(ctx context.Context, token string, fromDB bool) (*Validated, error) {
	row, u, roles, err := s.validate(ctx, token, fromDB)
	if err != nil {
		return nil, err
	}
	return &Validated{Session: convert.Session(&row), User: u, Roles: roles}, nil
}

// validate is Validate without the conversion of the session to its message, which the
// authentication of every call (Authenticate) and Check do not need.
func (s *Service) validate(ctx context.Context, token string, fromDB bool) (ent.Session, *gatehousev1.User, []string, error) {
	if !auth.LooksLikeToken(token) {
		return ent.Session{}, nil, nil, errSessionNotFound()
	}
	hash := string(auth.HashToken(token))
	useView := s.live != nil && !fromDB
	now := s.now()
	var row ent.Session
	cached := false
	if useView {
		if err := s.live.Sync(ctx); err != nil {
			return ent.Session{}, nil, nil, err
		}
		row, cached = s.view.session(hash)
		// NOTE: the view's idle expiry is a lower bound: only activity moves it later, and that
		// activity may have been on another node. A session that looks idle is read again.
		cached = cached && row.Active && now.Before(row.IdleExpireTime) && now.Before(row.AbsoluteExpireTime)
	}
	if !cached {
		tick := s.view.begin()
		sess, err := s.store.Client.Session.Query().Where(entsession.TokenHash([]byte(hash))).Only(ctx)
		if ent.IsNotFound(err) {
			return ent.Session{}, nil, nil, errSessionNotFound()
		}
		if err != nil {
			return ent.Session{}, nil, nil, err
		}
		row = *sess
		if useView {
			s.view.fillSession(tick, hash, sess)
		}
	}
	if !row.Active {
		return ent.Session{}, nil, nil, errs.Unauthenticated("SESSION_TERMINATED", "the session has ended").
			WithMetadata("termination_reason", row.TerminationReason)
	}
	if !now.Before(row.IdleExpireTime) || !now.Before(row.AbsoluteExpireTime) {
		return ent.Session{}, nil, nil, errs.Unauthenticated("SESSION_EXPIRED", "the session has expired")
	}
	if !auth.IsPassive(ctx) {
		if err := s.touch(ctx, hash, &row, now); err != nil {
			return ent.Session{}, nil, nil, err
		}
	}
	u, roles, err := s.userAndRoles(ctx, row.UserID, useView)
	if ent.IsNotFound(err) {
		// NOTE: deleting a user ends their sessions in the same transaction, so an active session
		// without a user can only be read in a race with that deletion.
		return ent.Session{}, nil, nil, errs.Unauthenticated("SESSION_TERMINATED", "the session has ended").
			WithMetadata("termination_reason", gatehousev1.TerminationReason_TERMINATION_REASON_USER_DELETED.String())
	}
	if err != nil {
		return ent.Session{}, nil, nil, err
	}
	return row, u, roles, nil
}

// touch records activity on a session: its last activity and, sliding, its idle expiry.
//
// NOTE: the stored idle window (idle expiry minus last activity) is the policy's idle timeout,
// kept current by policy and role changes; last activity is written back at most once per
// activityInterval, and at least four times per idle window so that short timeouts still slide.
// With the live layer the write goes to the node's write-back (off the request path) and the
// view's copy moves at once.
func (s *Service) touch(ctx context.Context, hash string, row *ent.Session, now time.Time) error {
	window := row.IdleExpireTime.Sub(row.LastActiveTime)
	since := now.Sub(row.LastActiveTime)
	if since < min(activityInterval, window/4) || !row.IdleExpireTime.Before(row.AbsoluteExpireTime) {
		return nil
	}
	idle := now.Add(window)
	if idle.After(row.AbsoluteExpireTime) {
		idle = row.AbsoluteExpireTime
	}
	if s.writeBack != nil {
		// NOTE: the queued activity keeps the view's copies of the ids when it has them, not the
		// strings of a row just read, each an allocation of its own.
		id, user, ok := s.view.touch(hash, now, idle)
		if !ok {
			id, user = row.ID, row.UserID
		}
		s.writeBack.add(newActivity(id, user, row.LastActiveTime, row.IdleExpireTime, now, idle))
	} else {
		// NOTE: only over the state read, as the write-back writes: a policy change's refresh
		// that committed since wins, and the next validation reads it.
		n, err := s.store.Client.Session.Update().
			Where(entsession.ID(row.ID), entsession.Active(true),
				entsession.LastActiveTime(row.LastActiveTime), entsession.IdleExpireTime(row.IdleExpireTime)).
			SetLastActiveTime(now).SetIdleExpireTime(idle).Save(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
	row.LastActiveTime, row.IdleExpireTime = now, idle
	return nil
}

// userAndRoles returns a user and its effective roles (sorted), from the view when useView and it
// has them, else from the database (filling the view when useView).
func (s *Service) userAndRoles(ctx context.Context, userID string, useView bool) (*gatehousev1.User, []string, error) {
	if useView {
		if u, roles, ok := s.view.user(userID); ok {
			return u, roles, nil
		}
	}
	tick := s.view.begin()
	eu, err := s.store.Client.User.Get(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	roles, err := s.store.RoleNames(ctx, s.store.DB, userID)
	if err != nil {
		return nil, nil, err
	}
	u := convert.User(eu)
	if useView {
		s.view.fillUser(tick, u, roles)
	}
	return u, roles, nil
}

func errSessionNotFound() error {
	return errs.Unauthenticated("SESSION_NOT_FOUND", "no session has this token")
}

// Authenticate implements auth.Authenticator.
func (s *Service) Authenticate(ctx context.Context, token string) (*auth.Principal, error) {
	row, u, roles, err := s.validate(ctx, token, false)
	if err != nil {
		return nil, err
	}
	return &auth.Principal{
		UserID: u.Id, Username: u.Username, SessionID: row.ID, Roles: roles,
		ImpersonatorUserID: row.ImpersonatorUserID, ImpersonatorSessionID: row.ImpersonatorSessionID,
	}, nil
}

// Logout ends the caller's session with LOGOUT.
func (s *Service) Logout(ctx context.Context) (events.Position, error) {
	p := auth.PrincipalFrom(ctx)
	if p == nil {
		return events.Position{}, errs.Unauthenticated("UNAUTHENTICATED", "logout needs the session's token")
	}
	return s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		sess, err := tx.Session.Get(ctx, p.SessionID)
		if err != nil {
			return err
		}
		_, err = EndSession(ctx, tx, sess, gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT, "")
		return err
	})
}
