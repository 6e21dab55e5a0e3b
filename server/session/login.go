package session

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/ent"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// Byte bounds of the client strings stored with a session or a LOGIN_FAILED event (the columns of
// ent/schema/session.go).
const (
	maxUserAgent  = 512
	maxIPAddress  = 64
	maxDeviceName = 128
)

// errWrongPassword is returned by checkPassword when the password does not match (or the user has
// none, or is disabled). The failure has been counted and recorded as a LOGIN_FAILED event.
var errWrongPassword = errors.New("session: wrong password")

// errInvalidCredentials is the one answer to every failed login.
func errInvalidCredentials() error {
	return errs.Unauthenticated("INVALID_CREDENTIALS", "invalid credentials")
}

func errLoginRateLimited() error {
	return errs.ResourceExhausted("LOGIN_RATE_LIMITED", "too many failed logins; try again later")
}

// passwordCheck is one password check: a login, or the current password of a password change.
type passwordCheck struct {
	// username is the username as given; user is its user, nil when there is none.
	username string
	user     *ent.User
	// client is the client info of the request, nil when it has none.
	client *gatehousev1.ClientInfo
}

// checkPassword checks password against the user's hash within the failed-login budgets of the
// username (of the username and the address, when the user logged in from there before:
// knownClients) and the client address: nil when it matches and the user is enabled, errWrongPassword
// (after counting and recording the failure) when not, LOGIN_RATE_LIMITED (after recording a
// refused attempt) when a budget is spent. Unknown users, users without a password and disabled
// users cost one derivation, as a real check does, so that timing does not tell them apart.
//
// It fails without counting anything when no hashing slot can be had (auth.ReasonQueueFull,
// auth.ReasonQueueTimeout) or the budget wait times out, and with the database's error when a
// LOGIN_FAILED event cannot be written: no attempt goes unrecorded.
func (s *Service) checkPassword(ctx context.Context, c passwordCheck, password string) error {
	name, addrKey := convert.Key(c.username), addressKey(s.clientAddress(ctx, c.client))
	known := ""
	if c.user != nil && c.user.PasswordHash != nil {
		known = passwordStamp(name, *c.user.PasswordHash)
	}
	userKey := s.known.budgetKey(name, known, addrKey, time.Now())
	if err := s.admitCheck(ctx, userKey, addrKey); err != nil {
		if isReason(err, "LOGIN_RATE_LIMITED") {
			if rerr := s.recordFailure(ctx, c, true); rerr != nil {
				return rerr
			}
		}
		return err
	}
	var ok bool
	var err error
	if c.user != nil && c.user.PasswordHash != nil {
		ok, err = s.hasher.Verify(ctx, *c.user.PasswordHash, password)
	} else {
		err = s.hasher.VerifyDummy(ctx, password)
	}
	now := time.Now()
	if err != nil {
		// Nothing was tried: no slot, or a malformed stored hash.
		s.settle(userKey, addrKey, now, false)
		return err
	}
	if !ok || c.user.Disabled {
		s.settle(userKey, addrKey, now, true)
		if err := s.recordFailure(ctx, c, false); err != nil {
			return err
		}
		return errWrongPassword
	}
	s.settle(userKey, addrKey, now, false)
	s.known.succeeded(name, known, addrKey, now)
	return nil
}

// passwordStamp returns the key of a username in knownClients, tied to the user's password as it is
// stored: once the password changes, the addresses that knew the old one are strangers again
// (whoever stole it does not keep a budget of their own to guess the new one).
func passwordStamp(userKey, encoded string) string {
	return userKey + "\x00" + encoded[max(0, len(encoded)-16):]
}

// isReason reports whether err is a domain error with the reason.
func isReason(err error, reason string) bool {
	e, ok := errs.As(err)
	return ok && e.Reason == reason
}

// admitCheck reserves a check of the username and the address in their budgets (see limiter),
// waiting while the checks in flight could spend what is left, at most the queue timeout.
func (s *Service) admitCheck(ctx context.Context, userKey, addrKey string) error {
	var timeout <-chan time.Time
	for {
		now := time.Now()
		v, wait := s.users.reserve(userKey, now)
		if v == admitted {
			if v, wait = s.addrs.reserve(addrKey, now); v == admitted {
				return nil
			}
			s.users.settle(userKey, now, false)
		}
		if v == refused {
			return errLoginRateLimited()
		}
		if timeout == nil {
			t := time.NewTimer(s.queueTimeout)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return auth.QueueTimeoutError()
		}
	}
}

// settle ends a check admitted by admitCheck.
func (s *Service) settle(userKey, addrKey string, now time.Time, failed bool) {
	s.users.settle(userKey, now, failed)
	s.addrs.settle(addrKey, now, failed)
}

// VerifyPassword checks the current password of u, for a password change, exactly as a login
// checks a password: against the same failed-login budgets of the username and the client address,
// with a LOGIN_FAILED event for every wrong or refused attempt. It reports whether the password
// matches; false (with a nil error) also for a disabled user or one without a password, and for an
// empty password, which is not counted since it guesses nothing. Once a budget is spent it fails
// with LOGIN_RATE_LIMITED, right password or not; otherwise it fails as checkPassword does.
func (s *Service) VerifyPassword(ctx context.Context, u *ent.User, password string) (bool, error) {
	if password == "" {
		return false, nil
	}
	err := s.checkPassword(ctx, passwordCheck{username: u.Username, user: u}, password)
	if errors.Is(err, errWrongPassword) {
		return false, nil
	}
	return err == nil, err
}

// recordFailure appends a LOGIN_FAILED event in its own transaction. It never records the password.
//
// NOTE: the event is written even if the caller has gone away (the password was checked, or
// refused, all the same), and an error writing it fails the request: guessing must never go on
// without an audit trail.
func (s *Service) recordFailure(ctx context.Context, c passwordCheck, rateLimited bool) error {
	userID := ""
	if c.user != nil {
		userID = c.user.ID
	}
	ctx = context.WithoutCancel(ctx)
	_, err := s.store.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		tx.Emit(&gatehousev1.Event{
			Type:   gatehousev1.EventType_EVENT_TYPE_LOGIN_FAILED,
			UserId: userID,
			Payload: &gatehousev1.Event_LoginFailed{LoginFailed: &gatehousev1.LoginFailedPayload{
				Username: strings.ToValidUTF8(c.username, "\uFFFD"), Client: s.clientInfo(ctx, c.client), RateLimited: rateLimited,
			}},
		})
		return nil
	})
	if err != nil {
		s.log.ErrorContext(ctx, "recording a failed login", "err", err)
		return err
	}
	return nil
}

// clientInfo describes the client of a new session or a failed login: the user agent and device
// name the caller gave, the user agent of the call otherwise, and the client address of
// clientAddress. Every string is valid UTF-8 and fits its column.
//
// NOTE: events are protobuf messages, whose strings must be valid UTF-8, and the user agent of
// the call is whatever bytes the client sent: unsanitised, a User-Agent holding \xff (or cut in
// the middle of a character) made the event fail to marshal, turning a right password into an
// internal error and a wrong one into an unrecorded failure. Request fields are valid UTF-8
// within their character limits already (protobuf and protovalidate see to that); they are
// cleaned the same way so that nothing relies on it.
func (s *Service) clientInfo(ctx context.Context, in *gatehousev1.ClientInfo) *gatehousev1.ClientInfo {
	out := &gatehousev1.ClientInfo{
		UserAgent:  cleanRunes(in.GetUserAgent(), maxUserAgent),
		IpAddress:  cleanBytes(s.clientAddress(ctx, in), maxIPAddress),
		DeviceName: cleanRunes(in.GetDeviceName(), maxDeviceName),
	}
	if out.UserAgent == "" {
		out.UserAgent = cleanBytes(auth.ClientFrom(ctx).UserAgent, maxUserAgent)
	}
	return out
}

// clientAddress returns the address a login comes from: the one a session issuer reports in the
// request (the address it saw), otherwise the address of the call.
//
// NOTE: from any other caller an address in the request is only a claim: honouring it would let a
// guesser dodge the per-address limit by claiming a new address each time, or lock out another
// address by claiming it, and would put untrusted addresses into the session list.
func (s *Service) clientAddress(ctx context.Context, in *gatehousev1.ClientInfo) string {
	if in.GetIpAddress() != "" && auth.PrincipalFrom(ctx).Has(auth.RoleSessionIssuer) {
		return in.GetIpAddress()
	}
	return auth.ClientFrom(ctx).IP
}

// cleanBytes returns s as valid UTF-8 (each invalid byte sequence becomes U+FFFD) of at most n
// bytes, cut on a character boundary.
func cleanBytes(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cleanRunes returns s as valid UTF-8 (each invalid byte sequence becomes U+FFFD) of at most n
// characters: the unit of the protovalidate max_len of request fields, so that a valid request
// value is kept as it was sent.
func cleanRunes(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// rehash stores a fresh hash of password for u, who has just logged in with it, when u's stored
// hash was made with parameters other than the hasher's (an older cost, or a malformed encoding
// that somehow verified). A failure is logged and does not fail the login. client is the login's:
// its address stays known under the new hash (knownClients).
//
// NOTE: the update is conditional on the stored hash being the one verified, so that it never
// overwrites a password changed in the meantime. It emits no event and leaves update_time alone:
// the password is the same, only its encoding changed. A concurrent login that verified the old
// hash is refused by create's hash comparison if it commits after this update (a spurious
// INVALID_CREDENTIALS, once per user when the parameters change, which a retry clears).
func (s *Service) rehash(ctx context.Context, u *ent.User, password string, client *gatehousev1.ClientInfo) {
	if u.PasswordHash == nil || !s.hasher.NeedsRehash(*u.PasswordHash) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	hash, err := s.hasher.Hash(ctx, password)
	n := 0
	if err == nil {
		n, err = s.store.Client.User.Update().
			Where(entuser.ID(u.ID), entuser.PasswordHash(*u.PasswordHash)).
			SetPasswordHash(hash).
			Save(ctx)
	}
	if err != nil {
		s.log.WarnContext(ctx, "re-hashing a password with the current parameters", "user_id", u.ID, "err", err)
		return
	}
	// NOTE: the login made its address known under the old hash (knownClients), which no check
	// will find again: it is known under the new one instead.
	if n > 0 {
		name := convert.Key(u.Username)
		s.known.succeeded(name, passwordStamp(name, hash), addressKey(s.clientAddress(ctx, client)), time.Now())
	}
}
