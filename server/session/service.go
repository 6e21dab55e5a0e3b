// Package session is the domain of sessions: login, validation, termination. It also applies the
// consequences of identity changes to live sessions.
package session

import (
	"context"
	"log/slog"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// Built-in policy defaults (ARCHITECTURE.md section 8).
const (
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultAbsoluteTimeout = 24 * time.Hour
	// activityInterval coalesces last-activity write-backs: a session's last activity is written
	// at most once per interval, not on every validation.
	activityInterval = time.Minute
)

// Service implements the session domain.
type Service struct {
	store  *store.Store
	hasher *auth.Hasher
	log    *slog.Logger
	now    func() time.Time
}

// New returns the session domain over st.
func New(st *store.Store, hasher *auth.Hasher, log *slog.Logger) *Service {
	return &Service{store: st, hasher: hasher, log: log, now: func() time.Time { return time.Now().UTC() }}
}

var _ auth.Authenticator = (*Service)(nil)

// errInvalidCredentials is the one answer to every failed login.
func errInvalidCredentials() error {
	return errs.Unauthenticated("INVALID_CREDENTIALS", "invalid credentials")
}

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
	Pos     store.Position
}

// CreateWithPassword logs a user in with a password. Unknown users, wrong passwords, disabled users
// and users without a password all get one INVALID_CREDENTIALS error after the same amount of work.
func (s *Service) CreateWithPassword(ctx context.Context, in Login) (*Created, error) {
	u, err := s.store.Client.User.Query().Where(entuser.UsernameKey(convert.Key(in.Username))).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, err
	}
	ok := false
	if u != nil && u.PasswordHash != nil {
		if ok, err = s.hasher.Verify(ctx, *u.PasswordHash, in.Password); err != nil {
			return nil, err
		}
	} else {
		// NOTE: the same argon2id work as a real check, so timing does not tell whether the user
		// exists or has a password.
		s.hasher.VerifyDummy(ctx, in.Password)
	}
	if !ok || u.Disabled {
		s.recordFailure(ctx, in.Username, u, in.Client)
		return nil, errInvalidCredentials()
	}
	return s.create(ctx, u, in.Type, in.Client, false)
}

// recordFailure appends a LOGIN_FAILED event in its own transaction. It never records the password.
func (s *Service) recordFailure(ctx context.Context, username string, u *ent.User, client *gatehousev1.ClientInfo) {
	userID := ""
	if u != nil {
		userID = u.ID
	}
	_, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		tx.Emit(&gatehousev1.Event{
			Type:   gatehousev1.EventType_EVENT_TYPE_LOGIN_FAILED,
			UserId: userID,
			Payload: &gatehousev1.Event_LoginFailed{LoginFailed: &gatehousev1.LoginFailedPayload{
				Username: username, Client: s.clientInfo(ctx, client),
			}},
		})
		return nil
	})
	if err != nil {
		s.log.ErrorContext(ctx, "recording a failed login", "err", err)
	}
}

// clientInfo fills the fields of the client description that the caller left empty from the
// transport.
func (s *Service) clientInfo(ctx context.Context, in *gatehousev1.ClientInfo) *gatehousev1.ClientInfo {
	out := &gatehousev1.ClientInfo{}
	if in != nil {
		out.UserAgent, out.IpAddress, out.DeviceName = in.UserAgent, in.IpAddress, in.DeviceName
	}
	c := auth.ClientFrom(ctx)
	if out.UserAgent == "" {
		out.UserAgent = truncate(c.UserAgent, 512)
	}
	if out.IpAddress == "" {
		out.IpAddress = c.IP
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// create opens a session for an authenticated user.
func (s *Service) create(ctx context.Context, u *ent.User, typ gatehousev1.SessionType, client *gatehousev1.ClientInfo, trusted bool) (*Created, error) {
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
	out := &Created{Token: token, User: convert.User(u)}
	out.Pos, err = s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		now := s.now()
		sess, err := tx.Session.Create().
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
			SetIdleExpireTime(now.Add(DefaultIdleTimeout)).
			SetAbsoluteExpireTime(now.Add(DefaultAbsoluteTimeout)).
			Save(ctx)
		if err != nil {
			return err
		}
		roles, err := s.store.RoleNames(ctx, tx, u.ID)
		if err != nil {
			return err
		}
		out.Session, out.Roles = convert.Session(sess), roles
		tx.Emit(&gatehousev1.Event{
			Type:      gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED,
			UserId:    u.ID,
			SessionId: sess.ID,
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

// Validated is a session that a token authenticates.
type Validated struct {
	Session *gatehousev1.Session
	User    *gatehousev1.User
	Roles   []string
}

// Validate checks a token: UNAUTHENTICATED with reason SESSION_NOT_FOUND, SESSION_TERMINATED (with
// the termination reason in the metadata) or SESSION_EXPIRED when it does not authenticate.
func (s *Service) Validate(ctx context.Context, token string) (*Validated, error) {
	if !auth.LooksLikeToken(token) {
		return nil, errSessionNotFound()
	}
	sess, err := s.store.Client.Session.Query().Where(entsession.TokenHash(auth.HashToken(token))).WithUser().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errSessionNotFound()
	}
	if err != nil {
		return nil, err
	}
	if !sess.Active {
		return nil, errs.Unauthenticated("SESSION_TERMINATED", "the session has ended").
			WithMetadata("termination_reason", sess.TerminationReason)
	}
	now := s.now()
	if !now.Before(sess.IdleExpireTime) || !now.Before(sess.AbsoluteExpireTime) {
		return nil, errs.Unauthenticated("SESSION_EXPIRED", "the session has expired")
	}
	if now.Sub(sess.LastActiveTime) >= activityInterval {
		idle := now.Add(DefaultIdleTimeout)
		if idle.After(sess.AbsoluteExpireTime) {
			idle = sess.AbsoluteExpireTime
		}
		err := s.store.Client.Session.Update().
			Where(entsession.ID(sess.ID), entsession.Active(true)).
			SetLastActiveTime(now).SetIdleExpireTime(idle).Exec(ctx)
		if err != nil {
			return nil, err
		}
		sess.LastActiveTime, sess.IdleExpireTime = now, idle
	}
	roles, err := s.store.RoleNames(ctx, s.store.DB, sess.UserID)
	if err != nil {
		return nil, err
	}
	return &Validated{Session: convert.Session(sess), User: convert.User(sess.Edges.User), Roles: roles}, nil
}

func errSessionNotFound() error {
	return errs.Unauthenticated("SESSION_NOT_FOUND", "no session has this token")
}

// Authenticate implements auth.Authenticator.
func (s *Service) Authenticate(ctx context.Context, token string) (*auth.Principal, error) {
	v, err := s.Validate(ctx, token)
	if err != nil {
		return nil, err
	}
	return &auth.Principal{UserID: v.User.Id, Username: v.User.Username, SessionID: v.Session.Id, Roles: v.Roles}, nil
}

// Logout ends the caller's session with LOGOUT.
func (s *Service) Logout(ctx context.Context) (store.Position, error) {
	p := auth.PrincipalFrom(ctx)
	if p == nil {
		return store.Position{}, errs.Unauthenticated("UNAUTHENTICATED", "logout needs the session's token")
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
