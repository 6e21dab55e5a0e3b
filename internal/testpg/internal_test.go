package testpg

import (
	"database/sql"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lib/pq"
)

func TestDatabaseName(t *testing.T) {
	for _, tc := range []struct{ test, prefix string }{
		{"TestFoo", "t_testfoo_"},
		{"TestFoo/Sub_Test#01", "t_testfoo_sub_test_01_"},
		{"__x__", "t_x_"},
		{"", "t_"},
		{"ÄÖÜ", "t_"},
		{strings.Repeat("a", 100), "t_" + strings.Repeat("a", 52) + "_"},
	} {
		got := databaseName(tc.test)
		if !strings.HasPrefix(got, tc.prefix) || len(got) != len(tc.prefix)+8 || len(got) > 63 {
			t.Errorf("databaseName(%q) = %q, want %q + 8 hex digits, <= 63 bytes", tc.test, got, tc.prefix)
		}
	}
	if a, b := databaseName("TestX"), databaseName("TestX"); a == b {
		t.Errorf("databaseName returned %q twice", a)
	}
}

func TestDSNRewriter(t *testing.T) {
	for _, dsn := range []string{
		"postgres://admin:s%40cret@db.example:6543/postgres?sslmode=disable&connect_timeout=5",
		"postgresql://admin@db.example:6543?sslmode=disable",
		"host=db.example port=6543 user=admin password='s@cret x' dbname=postgres sslmode=disable",
	} {
		rewrite, err := dsnRewriter(dsn)
		if err != nil {
			t.Fatalf("dsnRewriter(%q): %v", dsn, err)
		}
		for _, name := range []string{"t_simple_0123abcd", "odd 'name'/x"} {
			cfg, err := pq.NewConfig(rewrite(name))
			if err != nil {
				t.Fatalf("rewritten %q: %v", rewrite(name), err)
			}
			if cfg.Database != name || cfg.Host != "db.example" || cfg.Port != 6543 || cfg.User != "admin" {
				t.Errorf("rewrite(%q) of %q = %q: database %q host %q port %d user %q",
					name, dsn, rewrite(name), cfg.Database, cfg.Host, cfg.Port, cfg.User)
			}
		}
	}
}

// TestExternalServer uses a private cluster as if it had been named by
// GATEHOUSE_TEST_DATABASE_URL, in key=value form.
func TestExternalServer(t *testing.T) {
	t.Parallel()
	c := NewCluster(t)
	u, err := url.Parse(c.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	kv := "host=" + u.Hostname() + " port=" + u.Port() + " user=postgres dbname=postgres sslmode=disable"
	ext, err := openExternal(kv)
	if err != nil {
		t.Fatalf("openExternal(%q): %v", kv, err)
	}
	t.Cleanup(ext.Stop)
	if !ext.External() {
		t.Error("External() = false")
	}
	dsn := ext.NewDatabase(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name string
	if err := db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
		t.Fatalf("query %q: %v", dsn, err)
	}
	if !strings.HasPrefix(name, "t_testexternalserver_") {
		t.Errorf("current_database() = %q", name)
	}
}

func TestStopRemovesCluster(t *testing.T) {
	t.Parallel()
	c := NewCluster(t)
	base := c.baseDir
	if !strings.HasPrefix(filepath.Base(base), DirPrefix) || filepath.Dir(base) != filepath.Clean(os.TempDir()) {
		t.Errorf("cluster directory %s is not in %s with prefix %s", base, os.TempDir(), DirPrefix)
	}
	if filepath.Dir(c.LogFile()) != base || filepath.Dir(c.dataDir) != base {
		t.Errorf("log %s and data %s should both be in %s", c.LogFile(), c.dataDir, base)
	}
	c.Stop()
	c.Stop() // idempotent
	if _, err := os.Stat(base); !os.IsNotExist(err) {
		t.Errorf("after Stop, %s: %v; want it removed", base, err)
	}
	if _, err := sql.Open("postgres", c.AdminDSN()); err != nil {
		t.Fatal(err)
	}
}

func TestReapStale(t *testing.T) {
	// A cluster directory whose creator has exited.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("cannot run true: %v", err)
	}
	deadPID := cmd.Process.Pid
	stale, err := os.MkdirTemp("", DirPrefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(stale)
	if err := os.WriteFile(filepath.Join(stale, ownerFile), []byte(strconv.Itoa(deadPID)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A cluster directory whose creator is alive (this process).
	live, err := os.MkdirTemp("", DirPrefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(live)
	if err := os.WriteFile(filepath.Join(live, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}

	reapStale()

	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale cluster directory %s: %v; want it reaped", stale, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live cluster directory %s was reaped: %v", live, err)
	}
}
