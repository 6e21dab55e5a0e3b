package store

import (
	"context"

	"entgo.io/ent/dialect/sql"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/ent/predicate"
	entsession "github.com/gatehouse/gatehouse/ent/session"
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
	return t.lockUser(ctx, userID, false)
}

// LockUserSharingRoleGraph is LockUser that first takes the role-graph lock shared: transactions
// that share it run concurrently with each other but never with one that holds it by
// LockRoleGraph. A login takes it so that it reads the roles and policies of its user either
// entirely before or entirely after any change to them, and that change's hooks see the session it
// opens; UpdateUser and SetPassword by an administrator take it so that the user's roles, which
// decide whether the caller may make the change, cannot change before it commits. When the user
// does not exist it takes no role-graph lock and fails as LockUser does; the caller must then read
// nothing that the lock guards.
//
// NOTE: one statement on PostgreSQL, a login's first: the shared lock is taken in the row filter
// of the user's SELECT ... FOR UPDATE, so before the row lock, in the code base's one lock order.
func (t *Tx) LockUserSharingRoleGraph(ctx context.Context, userID string) (*ent.User, error) {
	return t.lockUser(ctx, userID, true)
}

func (t *Tx) lockUser(ctx context.Context, userID string, shareRoleGraph bool) (*ent.User, error) {
	q := t.User.Query().Where(entuser.ID(userID))
	if !t.store.IsPostgres() {
		return q.Only(ctx)
	}
	if shareRoleGraph {
		// NOTE: a filter with a volatile function is evaluated for each row the index finds,
		// after the cheaper id test, never folded into a one-time test before the scan.
		q = q.Where(predicate.User(func(s *sql.Selector) {
			s.Where(sql.P(func(b *sql.Builder) {
				b.WriteString("pg_advisory_xact_lock_shared(").Arg(roleGraphLockKey).WriteString(") IS NOT NULL")
			}))
		}))
	}
	return q.ForUpdate().Only(ctx)
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

// LockSessionNoWait locks the row of the active session id until the transaction ends, without
// waiting for it: on PostgreSQL with SELECT ... FOR NO KEY UPDATE SKIP LOCKED (the lock an UPDATE
// of the session's times takes); on SQLite, whose write transactions are exclusive already, by a
// plain read. held reports that another transaction holds the row, which is then not locked;
// neither locked nor held means there is no such active session.
func (t *Tx) LockSessionNoWait(ctx context.Context, id string) (locked, held bool, err error) {
	if !t.store.IsPostgres() {
		locked, err = t.Session.Query().Where(entsession.ID(id), entsession.Active(true)).Exist(ctx)
		return locked, false, err
	}
	got, err := t.Strings(ctx, "SELECT id FROM sessions WHERE id = ? AND active FOR NO KEY UPDATE SKIP LOCKED", id)
	if err != nil || len(got) > 0 {
		return len(got) > 0, false, err
	}
	// NOTE: a plain read does not wait for the lock either: it sees the row as last committed.
	got, err = t.Strings(ctx, "SELECT id FROM sessions WHERE id = ? AND active", id)
	return false, len(got) > 0, err
}
