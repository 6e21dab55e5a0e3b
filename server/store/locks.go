package store

import (
	"context"

	"github.com/gatehouse/gatehouse/ent"
	entuser "github.com/gatehouse/gatehouse/ent/user"
)

// TryLock takes the transaction-scoped advisory lock key if no other transaction holds it, and
// reports whether it did: on PostgreSQL by SELECT pg_try_advisory_xact_lock(key), released when the
// transaction ends. On SQLite, whose write transactions are exclusive, it runs nothing and always
// succeeds.
func (t *Tx) TryLock(ctx context.Context, key int64) (bool, error) {
	if !t.store.IsPostgres() {
		return true, nil
	}
	var got bool
	rows, err := t.QueryContext(ctx, "SELECT pg_try_advisory_xact_lock($1)", key)
	if err != nil {
		return false, err
	}
	for rows.Next() {
		if err := rows.Scan(&got); err != nil {
			rows.Close()
			return false, err
		}
	}
	return got, rows.Close()
}

// LockUser reads the user userID and, on PostgreSQL, locks its row until the transaction ends
// (SELECT ... FOR UPDATE), which serialises the session changes of one user across every node. On
// SQLite, whose write transactions are exclusive already, it is a plain read. A missing user gives
// ent's not-found error.
func (t *Tx) LockUser(ctx context.Context, userID string) (*ent.User, error) {
	q := t.User.Query().Where(entuser.ID(userID))
	if t.store.IsPostgres() {
		q = q.ForUpdate()
	}
	return q.Only(ctx)
}

// SessionsForUpdate returns a query of sessions that, on PostgreSQL, locks the rows it selects until
// the transaction ends (SELECT ... FOR UPDATE); a row that a concurrent transaction changes is read
// as that transaction commits it. On SQLite, whose write transactions are exclusive already, it is
// a plain query.
func (t *Tx) SessionsForUpdate() *ent.SessionQuery {
	q := t.Session.Query()
	if t.store.IsPostgres() {
		q = q.ForUpdate()
	}
	return q
}
