package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/server/store"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, p := range []store.Position{{Xid: 0, ID: 1}, {Xid: 739, ID: 7}, {Xid: 1 << 62, ID: 1<<62 + 5}} {
		got, err := store.ParseCursor(p.Cursor())
		if err != nil || got != p {
			t.Errorf("ParseCursor(%v.Cursor()) = %v, %v", p, got, err)
		}
	}
	if c := (store.Position{}).Cursor(); c != "" {
		t.Errorf("zero position encodes as %q, want empty", c)
	}
	if p, err := store.ParseCursor(""); err != nil || !p.IsZero() {
		t.Errorf(`ParseCursor("") = %v, %v`, p, err)
	}
	for _, bad := range []string{"garbage", "djEuMA", "djIuMC41", "!!!", "djEuLTEuNQ", "djEuMC4w"} {
		if _, err := store.ParseCursor(bad); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("ParseCursor(%q) error = %v, want ErrBadCursor", bad, err)
		}
	}
}

func TestPositionOrder(t *testing.T) {
	// On PostgreSQL the transaction id orders first: a later transaction's rows come after an
	// earlier one's even when their ids are smaller.
	a, b := store.Position{Xid: 10, ID: 50}, store.Position{Xid: 11, ID: 49}
	if !a.Less(b) || b.Less(a) {
		t.Errorf("want %v before %v", a, b)
	}
	if !(store.Position{Xid: 0, ID: 1}).Less(store.Position{Xid: 0, ID: 2}) {
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
	if err != nil || n != 7 {
		t.Fatalf("built-in roles = %d, %v; want 7", n, err)
	}
}
