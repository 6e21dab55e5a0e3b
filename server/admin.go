package server

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/store"
)

// The recovery commands (gatehouse admin ...) for an operator who has lost every administrator's
// access. They act on the database directly, as the node itself (the events they write name no
// actor), through the same domain code as the API: every change writes its events in its own
// transaction, and the role-change and session consequences follow as for any change. A SQLite
// file that a running node holds is refused by the store's lock; on PostgreSQL they may run beside
// live nodes.

// Password length bounds, as the protos declare them for passwords (in characters).
const (
	minPasswordLen = 8
	maxPasswordLen = 256
)

// adminDomain opens the database of cfg and returns the identity domain over it, with the session
// domain's hooks, and a function that closes the database.
func adminDomain(ctx context.Context, cfg Config) (*identity.Service, func() error, error) {
	cfg = cfg.Defaults()
	st, err := store.OpenWith(ctx, cfg.Database, cfg.storeOptions())
	if err != nil {
		return nil, nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		_ = st.Close()
		return nil, nil, err
	}
	d, err := newDomain(st, cfg)
	if err != nil {
		_ = st.Close()
		return nil, nil, err
	}
	return d.identities, st.Close, nil
}

// lookup finds a user by username, with an error that names it when there is none.
func lookup(ctx context.Context, ids *identity.Service, username string) (*gatehousev1.User, error) {
	u, err := ids.LookupUser(ctx, username)
	if errs.KindOf(err) == errs.KindNotFound {
		return nil, fmt.Errorf("there is no user named %q", username)
	}
	return u, err
}

// ResetPassword sets the password of the user named username, ending every session of that user
// (PASSWORD_CHANGED), as `gatehouse admin reset-password` does.
func ResetPassword(ctx context.Context, cfg Config, username, password string) error {
	if n := utf8.RuneCountInString(password); n < minPasswordLen || n > maxPasswordLen {
		return fmt.Errorf("the password must be %d to %d characters long", minPasswordLen, maxPasswordLen)
	}
	if !utf8.ValidString(password) {
		return errors.New("the password must be valid UTF-8")
	}
	ids, closeDB, err := adminDomain(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeDB()
	u, err := lookup(ctx, ids, username)
	if err != nil {
		return err
	}
	_, err = ids.SetPassword(ctx, u.Id, password, "")
	return err
}

// GrantAdmin grants gatehouse.admin to the user named username and enables that user if it is
// disabled (an administrator who cannot log in recovers nothing), as `gatehouse admin grant-admin`
// does. It reports what it changed.
func GrantAdmin(ctx context.Context, cfg Config, username string) (granted, enabled bool, err error) {
	ids, closeDB, err := adminDomain(ctx, cfg)
	if err != nil {
		return false, false, err
	}
	defer closeDB()
	u, err := lookup(ctx, ids, username)
	if err != nil {
		return false, false, err
	}
	before, err := ids.GetEffectiveRoles(ctx, u.Id)
	if err != nil {
		return false, false, err
	}
	held := false
	for _, r := range before {
		held = held || r.Role == auth.RoleAdmin
	}
	if u.Disabled {
		if _, _, err := ids.UpdateUser(ctx, &gatehousev1.User{Id: u.Id, Disabled: false}, []string{"disabled"}); err != nil {
			return false, false, err
		}
	}
	if _, _, err := ids.GrantRole(ctx, auth.RoleAdmin, identity.Principal{UserID: u.Id}, store.Apply); err != nil {
		return false, u.Disabled, err
	}
	return !held, u.Disabled, nil
}
