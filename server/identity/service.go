// Package identity is the domain of users, groups, roles, grants and effective roles. Every mutation
// runs in one transaction with its events; any change that can alter someone's effective roles
// rematerialises them in that transaction (set-based, in batches) and emits ROLES_CHANGED.
package identity

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gatehouse/gatehouse/ent"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// RolesChangedFunc is called inside the transaction that changed users' effective roles, after the
// ROLES_CHANGED events are emitted (the session domain applies the role-change policy there).
type RolesChangedFunc func(ctx context.Context, tx *store.Tx, changes []RoleChange) error

// Service implements the identity domain.
type Service struct {
	store          *store.Store
	hasher         *auth.Hasher
	log            *slog.Logger
	onRolesChanged RolesChangedFunc
}

// New returns the identity domain over st. onRolesChanged may be nil.
func New(st *store.Store, hasher *auth.Hasher, log *slog.Logger, onRolesChanged RolesChangedFunc) *Service {
	return &Service{store: st, hasher: hasher, log: log, onRolesChanged: onRolesChanged}
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

// lookupUser finds a user by username, case-insensitively.
func lookupUser(ctx context.Context, c *ent.UserClient, username string) (*ent.User, error) {
	return c.Query().Where(entuser.UsernameKey(keyOf(username))).Only(ctx)
}

// isConstraint reports a unique or foreign-key violation.
func isConstraint(err error) bool {
	var ce *ent.ConstraintError
	return errors.As(err, &ce)
}
