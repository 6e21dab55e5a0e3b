// Package teststore gives tests a migrated store on a fresh database, and bulk test data written
// straight into it.
package teststore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/server/store"
)

// Open returns a migrated store on a fresh database of backend ("sqlite": a file in a temporary
// directory; "postgres": a new database on the throwaway cluster), closed when t ends.
func Open(t testing.TB, backend string) *store.Store {
	t.Helper()
	url := "sqlite://" + filepath.Join(t.TempDir(), "g.db")
	if backend == "postgres" {
		url = testpg.NewDatabase(t)
	}
	return OpenURL(t, url)
}

// OpenURL returns a migrated store on the database url names (several stores on one database
// are several nodes), closed when t ends.
func OpenURL(t testing.TB, url string) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// AddSessions stores n active non-interactive sessions of userID, created and last active at
// created and expiring at expire, in one statement that binds a handful of parameters whatever n
// is (as a database from before the per-user cap may hold them).
func AddSessions(t testing.TB, st *store.Store, userID string, n int, created, expire time.Time) {
	t.Helper()
	query := `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
		INSERT INTO sessions (id, user_id, token_hash, type, user_agent, ip_address, device_name, trusted,
			create_time, last_active_time, idle_expire_time, absolute_expire_time, active, termination_reason, note)
		SELECT lower(hex(randomblob(16))), ?, randomblob(32), 'non_interactive', '', '', '', false, ?, ?, ?, ?, true, '', '' FROM n`
	if st.IsPostgres() {
		query = `INSERT INTO sessions (id, user_id, token_hash, type, user_agent, ip_address, device_name, trusted,
			create_time, last_active_time, idle_expire_time, absolute_expire_time, active, termination_reason, note)
		SELECT gen_random_uuid()::text, $2, sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'non_interactive', '', '', '', false,
			$3, $4, $5, $6, true, '', '' FROM generate_series(1, $1)`
	}
	if _, err := st.DB.Exec(st.Rebind(query), n, userID, created.UTC(), created.UTC(), expire.UTC(), expire.UTC()); err != nil {
		t.Fatalf("storing %d sessions: %v", n, err)
	}
}
