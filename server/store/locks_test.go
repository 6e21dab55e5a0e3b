package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestLockUserSharingRoleGraph: the login's one statement takes the role-graph lock shared and
// then the user's row, in that order: while a role change holds the role-graph lock it waits
// without holding the row; once it returns it holds both; for a missing user it takes neither.
func TestLockUserSharingRoleGraph(t *testing.T) {
	st := teststore.Open(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("locked").SetUsernameKey("locked").Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// rowFree reports whether another transaction could lock the user's row now.
	rowFree := func() bool {
		t.Helper()
		tx, err := st.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		_, err = tx.ExecContext(ctx, "SELECT id FROM users WHERE id = $1 FOR UPDATE NOWAIT", u.ID)
		var pe *pq.Error
		if errors.As(err, &pe) && pe.Code == "55P03" {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	// advisory returns the modes in which the role-graph lock is held ("ShareLock",
	// "ExclusiveLock") and how many wait for it.
	advisory := func() (held []string, waiting int) {
		t.Helper()
		// NOTE: only the role-graph key (7,240,002: class 0, object 7240002) in this database;
		// the cluster is shared with other tests.
		rows, err := st.DB.QueryContext(ctx, "SELECT mode, granted FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = 7240002 "+
			"AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var mode string
			var granted bool
			if err := rows.Scan(&mode, &granted); err != nil {
				t.Fatal(err)
			}
			if granted {
				held = append(held, mode)
			} else {
				waiting++
			}
		}
		return held, waiting
	}

	// A role change holds the role-graph lock.
	changing, release := make(chan struct{}), make(chan struct{})
	changeDone := make(chan error, 1)
	go func() {
		_, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
			if err := tx.LockRoleGraph(ctx); err != nil {
				return err
			}
			close(changing)
			<-release
			return nil
		})
		changeDone <- err
	}()
	<-changing

	// The login waits for it, without the user's row.
	locked, holding, done := make(chan *ent.User, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
			got, err := tx.LockUserSharingRoleGraph(ctx, u.ID)
			if err != nil {
				return err
			}
			locked <- got
			<-holding
			return nil
		})
		done <- err
	}()
	for {
		if _, waiting := advisory(); waiting == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the login never waited for the role-graph lock")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !rowFree() {
		t.Fatal("waiting for the role-graph lock, the login already holds the user's row")
	}

	// Once the change commits the login holds both.
	close(release)
	if err := <-changeDone; err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-locked:
		if got.ID != u.ID {
			t.Fatalf("locked user %s, want %s", got.ID, u.ID)
		}
	case err := <-done:
		t.Fatalf("the login's transaction ended early: %v", err)
	}
	if held, _ := advisory(); len(held) != 1 || held[0] != "ShareLock" {
		t.Errorf("advisory locks held by the login: %v, want the role-graph lock shared", held)
	}
	if rowFree() {
		t.Error("the login does not hold the user's row")
	}
	close(holding)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A missing user: not found, and no lock is left behind.
	_, err = st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		_, err := tx.LockUserSharingRoleGraph(ctx, convert.NewID())
		if !ent.IsNotFound(err) {
			t.Errorf("locking a missing user: %v, want not found", err)
		}
		if held, _ := advisory(); len(held) != 0 {
			t.Errorf("after a missing user, advisory locks held: %v", held)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
