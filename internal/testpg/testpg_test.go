package testpg_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/gatehouse/gatehouse/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// openDB opens dsn, checks that it is reachable and closes it when t ends.
func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatalf("sql.Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("ping %q: %v", dsn, err)
	}
	return db
}

func currentDatabase(t *testing.T, db *sql.DB) string {
	t.Helper()
	var name string
	if err := db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
		t.Fatalf("current_database: %v", err)
	}
	return name
}

func TestParallelDatabases(t *testing.T) {
	var (
		mu   sync.Mutex
		dsns = map[string]string{} // subtest -> DSN
		dbs  = map[string]string{} // subtest -> current_database()
	)
	t.Run("group", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			rows []string
		}{
			{"a", []string{"alpha", "apple", "avocado"}},
			{"b", []string{"beta"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				dsn := testpg.NewDatabase(t)
				db := openDB(t, dsn)

				// Both databases get a table of the same name; each must see
				// exactly its own rows.
				if _, err := db.Exec(`CREATE TABLE items (id serial PRIMARY KEY, v text NOT NULL)`); err != nil {
					t.Fatalf("create table: %v", err)
				}
				for _, v := range tc.rows {
					if _, err := db.Exec(`INSERT INTO items (v) VALUES ($1)`, v); err != nil {
						t.Fatalf("insert %q: %v", v, err)
					}
				}
				rows, err := db.Query(`SELECT v FROM items ORDER BY id`)
				if err != nil {
					t.Fatalf("select: %v", err)
				}
				defer rows.Close()
				var got []string
				for rows.Next() {
					var v string
					if err := rows.Scan(&v); err != nil {
						t.Fatalf("scan: %v", err)
					}
					got = append(got, v)
				}
				if err := rows.Err(); err != nil {
					t.Fatalf("rows: %v", err)
				}
				if !slices.Equal(got, tc.rows) {
					t.Errorf("items = %q, want %q", got, tc.rows)
				}

				name := currentDatabase(t, db)
				mu.Lock()
				dsns[tc.name], dbs[tc.name] = dsn, name
				mu.Unlock()
			})
		}
	})
	if t.Failed() {
		return
	}

	if dsns["a"] == dsns["b"] {
		t.Errorf("both tests got DSN %q", dsns["a"])
	}
	if dbs["a"] == dbs["b"] {
		t.Errorf("both tests got database %q", dbs["a"])
	}
	for sub, name := range dbs {
		if !strings.HasPrefix(name, "t_testparalleldatabases_group_"+sub+"_") {
			t.Errorf("database of subtest %s is %q, want it derived from the test name", sub, name)
		}
	}

	// The subtests have finished, so their databases must have been dropped.
	admin := openDB(t, testpg.Server(t).AdminDSN())
	var n int
	if err := admin.QueryRow(`SELECT count(*) FROM pg_database WHERE datname IN ($1, $2)`,
		dbs["a"], dbs["b"]).Scan(&n); err != nil {
		t.Fatalf("count databases: %v", err)
	}
	if n != 0 {
		t.Errorf("%d of the databases %q, %q still exist after their tests ended", n, dbs["a"], dbs["b"])
	}
}

func TestDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	a := openDB(t, testpg.NewDatabase(t))
	b := openDB(t, testpg.NewDatabase(t))

	if na, nb := currentDatabase(t, a), currentDatabase(t, b); na == nb {
		t.Fatalf("both databases are %q", na)
	}
	if _, err := a.Exec(`CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (42)`); err != nil {
		t.Fatalf("create table in a: %v", err)
	}
	var x int
	if err := a.QueryRow(`SELECT x FROM only_in_a`).Scan(&x); err != nil || x != 42 {
		t.Fatalf("select in a = %d, %v; want 42", x, err)
	}

	var missing bool
	if err := b.QueryRow(`SELECT to_regclass('only_in_a') IS NULL`).Scan(&missing); err != nil {
		t.Fatalf("to_regclass in b: %v", err)
	}
	if !missing {
		t.Errorf("table only_in_a of database a is visible in database b")
	}
	_, err := b.Exec(`SELECT x FROM only_in_a`)
	if pqErr, ok := errors.AsType[*pq.Error](err); !ok || pqErr.Code != "42P01" {
		t.Errorf("select from a's table in b: err = %v, want undefined_table (42P01)", err)
	}

	// A new database is empty: no user tables at all.
	var tables int
	if err := b.QueryRow(`SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`).Scan(&tables); err != nil {
		t.Fatalf("count tables in b: %v", err)
	}
	if tables != 0 {
		t.Errorf("new database has %d user tables, want 0", tables)
	}
}

func TestLongAndOddTestNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		strings.Repeat("VeryLongSubtestName", 10),
		"spaces and/slashes ÄÖÜ \"quotes\" 'single' -- ; DROP TABLE x",
		"___",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := openDB(t, testpg.NewDatabase(t))
			got := currentDatabase(t, db)
			if len(got) > 63 || !strings.HasPrefix(got, "t_testlongandoddtestnames_") {
				t.Errorf("database name %q: want <= 63 bytes and derived from the test name", got)
			}
			for _, r := range got {
				if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
					t.Errorf("database name %q contains %q", got, r)
				}
			}
		})
	}
}

func TestDSNFor(t *testing.T) {
	t.Parallel()
	srv := testpg.Server(t)
	dsn := testpg.NewDatabase(t)
	name := currentDatabase(t, openDB(t, dsn))
	if got := currentDatabase(t, openDB(t, srv.DSNFor(name))); got != name {
		t.Errorf("DSNFor(%q) connects to %q", name, got)
	}
	if got := currentDatabase(t, openDB(t, srv.AdminDSN())); got == name {
		t.Errorf("AdminDSN connects to the test database %q", got)
	}
}

func TestRestartPrivateCluster(t *testing.T) {
	t.Parallel()
	c := testpg.NewCluster(t)
	if c.External() {
		t.Fatal("NewCluster returned an external server")
	}
	dsn := c.NewDatabase(t)
	db := openDB(t, dsn)
	if _, err := db.Exec(`CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')`); err != nil {
		t.Fatalf("create: %v", err)
	}
	var before, after time.Time
	if err := db.QueryRow(`SELECT pg_postmaster_start_time()`).Scan(&before); err != nil {
		t.Fatalf("start time: %v", err)
	}
	db.Close()

	c.Restart(t)

	db = openDB(t, dsn)
	if err := db.QueryRow(`SELECT pg_postmaster_start_time()`).Scan(&after); err != nil {
		t.Fatalf("start time after restart: %v", err)
	}
	if !after.After(before) {
		t.Errorf("postmaster start time %v not after %v: server was not restarted", after, before)
	}
	var v string
	if err := db.QueryRow(`SELECT v FROM kept`).Scan(&v); err != nil || v != "survives" {
		t.Errorf("after restart: v = %q, %v; want survives", v, err)
	}
	// The cluster still creates databases after a restart.
	openDB(t, c.NewDatabase(t))
}

// sorted returns words as the database of db sorts them with its default collation.
func sorted(t *testing.T, db *sql.DB, words ...string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT w FROM unnest($1::text[]) AS w ORDER BY w`, pq.Array(words))
	if err != nil {
		t.Fatalf("sorting: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			t.Fatal(err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCollations checks that the shared throwaway cluster sorts text like a production server with
// an ICU en-US collation ("_" before "."), and that a cluster started with empty options sorts in
// byte order.
func TestCollations(t *testing.T) {
	t.Parallel()
	words := []string{"zeta", "app.viewer", "app_admin"}
	icu := []string{"app_admin", "app.viewer", "zeta"}
	bytewise := []string{"app.viewer", "app_admin", "zeta"}
	t.Run("shared", func(t *testing.T) {
		t.Parallel()
		if testpg.Server(t).External() {
			t.Skip("the external server's collation is its own")
		}
		if got := sorted(t, openDB(t, testpg.NewDatabase(t)), words...); !slices.Equal(got, icu) {
			t.Errorf("shared cluster sorts %q, want %q (ICU en-US)", got, icu)
		}
	})
	t.Run("icu", func(t *testing.T) {
		t.Parallel()
		c := testpg.NewClusterWith(t, testpg.Options{ICULocale: "en-US"})
		if got := sorted(t, openDB(t, c.NewDatabase(t)), words...); !slices.Equal(got, icu) {
			t.Errorf("ICU en-US cluster sorts %q, want %q", got, icu)
		}
	})
	t.Run("c", func(t *testing.T) {
		t.Parallel()
		c := testpg.NewClusterWith(t, testpg.Options{})
		if got := sorted(t, openDB(t, c.NewDatabase(t)), words...); !slices.Equal(got, bytewise) {
			t.Errorf("C cluster sorts %q, want %q", got, bytewise)
		}
	})
}
