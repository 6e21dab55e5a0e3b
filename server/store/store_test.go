package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/store"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, p := range []events.Position{{Xid: 0, ID: 1}, {Xid: 739, ID: 7}, {Xid: 1 << 62, ID: 1<<62 + 5}} {
		got, err := events.ParseCursor(p.Cursor())
		if err != nil || got != p {
			t.Errorf("ParseCursor(%v.Cursor()) = %v, %v", p, got, err)
		}
	}
	if c := (events.Position{}).Cursor(); c != "" {
		t.Errorf("zero position encodes as %q, want empty", c)
	}
	if p, err := events.ParseCursor(""); err != nil || !p.IsZero() {
		t.Errorf(`ParseCursor("") = %v, %v`, p, err)
	}
	for _, bad := range []string{"garbage", "djEuMA", "djIuMC41", "!!!", "djEuLTEuNQ", "djEuMC4w"} {
		if _, err := events.ParseCursor(bad); !errors.Is(err, events.ErrBadCursor) {
			t.Errorf("ParseCursor(%q) error = %v, want ErrBadCursor", bad, err)
		}
	}
}

func TestPositionOrder(t *testing.T) {
	// On PostgreSQL the transaction id orders first: a later transaction's rows come after an
	// earlier one's even when their ids are smaller.
	a, b := events.Position{Xid: 10, ID: 50}, events.Position{Xid: 11, ID: 49}
	if !a.Less(b) || b.Less(a) {
		t.Errorf("want %v before %v", a, b)
	}
	if !(events.Position{Xid: 0, ID: 1}).Less(events.Position{Xid: 0, ID: 2}) {
		t.Error("ids order within a transaction")
	}
}

func openSQLite(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestSQLiteIsSingleProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	first := openSQLite(t, path)
	_, err := store.Open(context.Background(), "sqlite://"+path)
	if err == nil || !strings.Contains(err.Error(), "in use by another gatehouse process") {
		t.Fatalf("second Open on the same file: err = %v, want 'in use by another gatehouse process'", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Once the first store is closed, the file can be opened again.
	openSQLite(t, path)
}

// TestSQLiteLockFollowsLinks opens a database through a hard link and through a symlink in other
// directories: both are refused while the first store holds the file, which keeps working (its own
// SQLite locks do not conflict with the lock, and the refused opens do not disturb them).
func TestSQLiteLockFollowsLinks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	first := openSQLite(t, path)
	if err := first.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	hard := filepath.Join(t.TempDir(), "hard.db")
	if err := os.Link(path, hard); err != nil {
		t.Fatal(err)
	}
	soft := filepath.Join(t.TempDir(), "soft.db")
	if err := os.Symlink(path, soft); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{hard, soft, path} {
		st, err := store.Open(ctx, "sqlite://"+p)
		if err == nil {
			_ = st.Close()
			t.Fatalf("Open through %s succeeded while the database is in use", p)
		}
		if !strings.Contains(err.Error(), "in use by another gatehouse process") {
			t.Errorf("Open through %s: err = %v, want 'in use by another gatehouse process'", p, err)
		}
	}
	// The first store still reads and writes, in transactions that take SQLite's own locks.
	for i := range 3 {
		if _, err := first.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
			return tx.Role.Create().SetID(fmt.Sprintf("r%d", i)).Exec(ctx)
		}); err != nil {
			t.Fatalf("writing through the first store: %v", err)
		}
	}
	n, err := first.Client.Role.Query().Count(ctx)
	if want := len(auth.BuiltInRoles) + 3; err != nil || n != want {
		t.Fatalf("roles = %d, %v; want %d", n, err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Once it is closed, the database opens through either link.
	for _, p := range []string{hard, soft} {
		st, err := store.Open(ctx, "sqlite://"+p)
		if err != nil {
			t.Fatalf("Open through %s after Close: %v", p, err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejectsUnknownURLs(t *testing.T) {
	for _, u := range []string{"mysql://x", "gatehouse.db", "sqlite://"} {
		if _, err := store.Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	_, err := store.Open(context.Background(), "mysql://user:hunter2@host/db")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error must not contain the password: %v", err)
	}
}

func TestRebind(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "g.db"))
	if got := st.Rebind("a = ? AND b = ?"); got != "a = ? AND b = ?" {
		t.Errorf("SQLite Rebind changed the query: %q", got)
	}
}

func TestMigrateIsIdempotentAndSeedsBuiltInRoles(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "g.db"))
	ctx := context.Background()
	for range 2 {
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	n, err := st.Client.Role.Query().Count(ctx)
	if want := len(auth.BuiltInRoles); err != nil || n != want {
		t.Fatalf("built-in roles = %d, %v; want %d", n, err, want)
	}
}

// TestRoleNamesInByteOrder reads role sets on each backend (PostgreSQL here is the shared test
// cluster, whose collation is ICU en-US): they come sorted in byte order, which the binary searches
// of auth.Principal.Has and of the role-change diff rely on. RoleNamesOf reads more users than one
// IN list holds.
func TestRoleNamesInByteOrder(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st := teststore.Open(t, backend)
			roles := []string{"zeta", "gatehouse_ops", "app_admin", "gatehouse.admin", "app.viewer"}
			want := slices.Clone(roles)
			slices.Sort(want)
			for _, r := range roles {
				if err := st.Client.Role.Create().SetID(r).OnConflictColumns("name").DoNothing().Exec(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
					t.Fatal(err)
				}
			}
			users := make([]string, store.MaxInList+7)
			for i := range users {
				users[i] = fmt.Sprintf("u%04d", i)
			}
			for batch := range slices.Chunk(users, 100) {
				var q strings.Builder
				var args []any
				q.WriteString("INSERT INTO effective_roles (user_id, role, source_kind, source_ref) VALUES ")
				for i, u := range batch {
					if _, err := st.Client.User.Create().SetID(u).SetUsername(u).SetUsernameKey(u).Save(ctx); err != nil {
						t.Fatal(err)
					}
					for j, r := range roles {
						if i > 0 || j > 0 {
							q.WriteString(", ")
						}
						q.WriteString("(?, ?, 'direct', '')")
						args = append(args, u, r)
					}
				}
				if _, err := st.DB.Exec(st.Rebind(q.String()), args...); err != nil {
					t.Fatal(err)
				}
			}
			got, err := st.RoleNames(ctx, st.DB, users[0])
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("RoleNames = %q, %v; want %q", got, err, want)
			}
			all, err := st.RoleNamesOf(ctx, st.DB, users)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != len(users) {
				t.Errorf("RoleNamesOf has %d users, want %d", len(all), len(users))
			}
			for _, u := range users {
				if !slices.Equal(all[u], want) {
					t.Fatalf("RoleNamesOf[%s] = %q, want %q", u, all[u], want)
				}
			}
		})
	}
}

// TestPostgresPoolKeepsItsConnections: connections that a burst opened stay in the pool when the
// burst ends (as many idle as open), instead of being closed and opened again by the next burst.
func TestPostgresPoolKeepsItsConnections(t *testing.T) {
	st := teststore.Open(t, "postgres")
	ctx := context.Background()
	const burst = 32
	var txs []*sql.Tx
	for range burst {
		tx, err := st.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		txs = append(txs, tx)
	}
	for _, tx := range txs {
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if s := st.DB.Stats(); s.Idle != burst || s.MaxIdleClosed != 0 {
		t.Errorf("after a burst of %d: %d idle connections, %d closed for the idle bound; want all %d kept", burst, s.Idle, s.MaxIdleClosed, burst)
	}
}
