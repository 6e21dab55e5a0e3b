// Package identity is the domain of users, groups, roles, grants and effective roles. Every mutation
// runs in one transaction with its events; any change that can alter someone's effective roles
// rematerialises them in that transaction (set-based, in batches) and emits ROLES_CHANGED.
package identity

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gatehouse/gatehouse/ent"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// RolesChangedFunc is called inside the transaction that changed users' effective roles, after the
// ROLES_CHANGED events are emitted (the session domain applies the role-change policy there). It
// reports what it did to live sessions, for the change's ChangeImpact.
type RolesChangedFunc func(ctx context.Context, tx *store.Tx, changes []RoleChange) (policy.SessionEffect, error)

// PasswordVerifier checks a user's current password as a login would: within the failed-login
// budgets, recording every wrong attempt (the session domain, session.Service.VerifyPassword). It
// reports whether the password matches, and fails (LOGIN_RATE_LIMITED) once a budget is spent.
type PasswordVerifier interface {
	VerifyPassword(ctx context.Context, u *ent.User, password string) (bool, error)
}

// Service implements the identity domain.
type Service struct {
	store          *store.Store
	hasher         *auth.Hasher
	log            *slog.Logger
	onRolesChanged RolesChangedFunc
	passwords      PasswordVerifier
}

// Option configures a Service built by New.
type Option func(*Service)

// WithPasswordVerifier makes v check the current password of users changing their own. Without
// it, such changes fail with an internal error.
//
// NOTE: the current password goes through the session domain rather than the hasher directly, so
// that SetPassword is not an unlimited, unaudited password oracle beside the limited login.
func WithPasswordVerifier(v PasswordVerifier) Option {
	return func(s *Service) { s.passwords = v }
}

// New returns the identity domain over st. onRolesChanged may be nil.
func New(st *store.Store, hasher *auth.Hasher, log *slog.Logger, onRolesChanged RolesChangedFunc, opts ...Option) *Service {
	s := &Service{store: st, hasher: hasher, log: log, onRolesChanged: onRolesChanged}
	for _, o := range opts {
		o(s)
	}
	if s.passwords == nil {
		s.passwords = noPasswordVerifier{}
	}
	return s
}

// noPasswordVerifier is the PasswordVerifier of a Service built without one: it checks nothing.
type noPasswordVerifier struct{}

// VerifyPassword implements PasswordVerifier by failing.
func (noPasswordVerifier) VerifyPassword(context.Context, *ent.User, string) (bool, error) {
	return false, errs.Internal(errors.New("identity: no password verifier configured"))
}

// mutate runs fn, a change to the role graph, as one transaction in mode and returns the impact fn
// reports (an empty one when fn changed nobody's roles). Previewed (store.Preview), fn runs exactly
// as it would for real and is rolled back: nothing is written, no event is emitted, and the position
// is zero (no consistency token); fn's errors are the change's errors.
func (s *Service) mutate(ctx context.Context, mode store.Mode, fn func(ctx context.Context, tx *store.Tx) (*gatehousev1.ChangeImpact, error)) (*gatehousev1.ChangeImpact, events.Position, error) {
	var impact *gatehousev1.ChangeImpact
	pos, err := s.store.Run(ctx, mode, func(ctx context.Context, tx *store.Tx) error {
		var err error
		impact, err = fn(ctx, tx)
		return err
	})
	if err != nil {
		return nil, events.Position{}, err
	}
	if impact == nil {
		impact = &gatehousev1.ChangeImpact{}
	}
	return impact, pos, nil
}

// getUser loads a user by id, NOT_FOUND if there is none.
func (s *Service) getUser(ctx context.Context, c *ent.Client, id string) (*ent.User, error) {
	u, err := c.User.Get(ctx, id)
	return u, notFound(err, "USER_NOT_FOUND", "user %s not found", id)
}

// txUser loads a user by id inside a transaction.
func txUser(ctx context.Context, tx *store.Tx, id string) (*ent.User, error) {
	u, err := tx.User.Get(ctx, id)
	return u, notFound(err, "USER_NOT_FOUND", "user %s not found", id)
}

// notFound turns ent's not-found error into a NOT_FOUND domain error.
func notFound(err error, reason, format string, args ...any) error {
	if ent.IsNotFound(err) {
		return errs.NotFound(reason, format, args...)
	}
	return err
}

// isConstraint reports a unique or foreign-key violation.
func isConstraint(err error) bool {
	var ce *ent.ConstraintError
	return errors.As(err, &ce)
}
