package session

import (
	"context"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/server/store"
)

// LockUser locks a user's row for the rest of tx (on PostgreSQL; SQLite write transactions are
// exclusive already) and returns the user as locked; a missing user, or one deleted meanwhile,
// gives ent's not-found error. See store.Tx.LockUser.
//
// NOTE: the one lock order of the code base, so that no two transactions can deadlock: the
// role-graph lock first (when taken), then the user's row, then that user's sessions. Every
// transaction that ends sessions of a user (logins evicting, terminations, disabling, deleting,
// password changes) locks the user before it touches the sessions.
func LockUser(ctx context.Context, tx *store.Tx, userID string) (*ent.User, error) {
	return tx.LockUser(ctx, userID)
}
