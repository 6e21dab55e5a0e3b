package store

import (
	"context"

	"entgo.io/ent/dialect/sql"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entuser "github.com/gatehouse/gatehouse/ent/user"
	"github.com/gatehouse/gatehouse/server/convert"
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

// UserByName finds a user by username, case-insensitively (by its username_key); a missing user
// gives ent's not-found error.
func (s *Store) UserByName(ctx context.Context, username string) (*ent.User, error) {
	return s.Client.User.Query().Where(entuser.UsernameKey(convert.Key(username))).Only(ctx)
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

// LockUserSharingRoleGraph is ShareRoleGraph then LockUser, in one statement on PostgreSQL: the
// shared role-graph lock is taken in the row filter of the user's SELECT ... FOR UPDATE, so before
// the row lock, in the code base's one lock order. When the user does not exist it takes no
// role-graph lock and fails as LockUser does; the caller must then read nothing that the lock
// guards.
//
// NOTE: a login runs this for every password it accepts; one round trip instead of two is a
// fifteenth of the statements of a login.
func (t *Tx) LockUserSharingRoleGraph(ctx context.Context, userID string) (*ent.User, error) {
	q := t.User.Query().Where(entuser.ID(userID))
	if t.store.IsPostgres() {
		// NOTE: a filter with a volatile function is evaluated for each row the index finds,
		// never folded into a one-time test before the scan.
		q = q.Where(predicate.User(func(s *sql.Selector) {
			s.Where(sql.P(func(b *sql.Builder) {
				b.WriteString("pg_advisory_xact_lock_shared(").Arg(roleGraphLockKey).WriteString(") IS NOT NULL")
			}))
		})).ForUpdate()
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
