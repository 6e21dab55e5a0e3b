package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// openPostgres opens a store on a fresh PostgreSQL database with a table t of two rows.
func openPostgres(t *testing.T, opts store.Options) (*store.Store, string) {
	t.Helper()
	dsn := testpg.NewDatabase(t)
	st, err := store.OpenWith(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("OpenWith: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, err := st.DB.Exec("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0)"); err != nil {
		t.Fatal(err)
	}
	return st, dsn
}

func wantKind(t *testing.T, what string, err error, want errs.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if got := store.Classify(err); got != want {
		t.Errorf("%s: Classify(%T %v) = %v, want %v", what, err, err, got, want)
	}
}

// TestClassifyPostgresDeadlock makes a real deadlock: two transactions lock two rows in opposite
// orders. The one PostgreSQL aborts fails with 40P01, which is ABORTED; the other goes through.
func TestClassifyPostgresDeadlock(t *testing.T) {
	t.Parallel()
	st, _ := openPostgres(t, store.Options{})
	ctx := context.Background()
	var txs [2]*sql.Tx
	for i := range txs {
		tx, err := st.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck
		if _, err := tx.Exec("UPDATE t SET v = v + 1 WHERE id = $1", i+1); err != nil {
			t.Fatal(err)
		}
		txs[i] = tx
	}
	type result struct {
		i   int
		err error
	}
	results := make(chan result, 2)
	for i, tx := range txs {
		go func() {
			_, err := tx.Exec("UPDATE t SET v = v + 1 WHERE id = $1", 2-i)
			results <- result{i, err}
		}()
	}
	var failed []error
	for range 2 {
		r := <-results
		if r.err != nil {
			failed = append(failed, r.err)
			// The victim keeps its locks until it rolls back; then the other goes on.
			_ = txs[r.i].Rollback()
		}
	}
	if len(failed) != 1 {
		t.Fatalf("errors = %v, want exactly one deadlock", failed)
	}
	if pe, ok := errors.AsType[*pq.Error](failed[0]); !ok || pe.Code != "40P01" {
		t.Fatalf("error = %v, want a 40P01 deadlock", failed[0])
	}
	wantKind(t, "deadlock", errs.Internal(fmt.Errorf("granting: %w", failed[0])), errs.KindAborted)
}

// TestClassifyPostgresErrors classifies errors real PostgreSQL connections return.
func TestClassifyPostgresErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("serialization failure", func(t *testing.T) {
		t.Parallel()
		st, _ := openPostgres(t, store.Options{})
		a, err := st.DB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Rollback() //nolint:errcheck
		var v int
		if err := a.QueryRow("SELECT v FROM t WHERE id = 1").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DB.Exec("UPDATE t SET v = 7 WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		_, err = a.Exec("UPDATE t SET v = 8 WHERE id = 1")
		wantKind(t, "serialization failure", err, errs.KindAborted)
	})

	t.Run("lock timeout", func(t *testing.T) {
		t.Parallel()
		st, _ := openPostgres(t, store.Options{LockTimeout: 20 * time.Millisecond})
		holder, err := st.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback() //nolint:errcheck
		if _, err := holder.Exec("SELECT * FROM t WHERE id = 1 FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		// NOTE: the deadline only keeps a lock_timeout that is not in effect from hanging the test.
		waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err = st.DB.ExecContext(waitCtx, "UPDATE t SET v = 1 WHERE id = 1")
		if pe, ok := errors.AsType[*pq.Error](err); !ok || pe.Code != "55P03" {
			t.Fatalf("error = %v, want 55P03 lock_not_available (Options.LockTimeout in effect)", err)
		}
		wantKind(t, "lock timeout", err, errs.KindAborted)
	})

	t.Run("statement timeout", func(t *testing.T) {
		t.Parallel()
		st, _ := openPostgres(t, store.Options{StatementTimeout: 20 * time.Millisecond})
		waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := st.DB.ExecContext(waitCtx, "SELECT pg_sleep(30)")
		if pe, ok := errors.AsType[*pq.Error](err); !ok || pe.Code != "57014" {
			t.Fatalf("error = %v, want 57014 query_canceled (Options.StatementTimeout in effect)", err)
		}
		wantKind(t, "statement timeout", err, errs.KindUnavailable)
	})

	t.Run("terminated connection", func(t *testing.T) {
		t.Parallel()
		st, _ := openPostgres(t, store.Options{})
		tx, err := st.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck
		var pid int
		if err := tx.QueryRow("SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		var done bool
		if err := st.DB.QueryRow("SELECT pg_terminate_backend($1, 30000)", pid).Scan(&done); err != nil || !done {
			t.Fatalf("pg_terminate_backend = %v, %v", done, err)
		}
		_, err = tx.Exec("UPDATE t SET v = 1 WHERE id = 1")
		wantKind(t, "statement on a terminated connection", err, errs.KindUnavailable)
	})

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: addr, Path: "/x", RawQuery: "sslmode=disable"}
		_, err = store.Open(ctx, u.String())
		wantKind(t, "connecting to a closed port", err, errs.KindUnavailable)
	})

	t.Run("other errors", func(t *testing.T) {
		t.Parallel()
		st, _ := openPostgres(t, store.Options{})
		_, err := st.DB.Exec("INSERT INTO t VALUES (1, 0)")
		wantKind(t, "unique violation", err, errs.KindInternal)
		_, err = st.DB.Exec("SELEC 1")
		wantKind(t, "syntax error", err, errs.KindInternal)
		wantKind(t, "not a database error", errors.New("boom"), errs.KindInternal)
	})
}

// TestClassifySQLiteBusy makes a real SQLITE_BUSY: a second connection without a busy timeout
// tries to write while the store's transaction holds the write lock.
func TestClassifySQLiteBusy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	st := openSQLite(t, path)
	if _, err := st.DB.Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"); err != nil {
		t.Fatal(err)
	}
	tx, err := st.DB.BeginTx(ctx, nil) // BEGIN IMMEDIATE: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Exec("INSERT INTO t (v) VALUES (1)")
	wantKind(t, "writing while another connection writes", err, errs.KindUnavailable)
	// NOTE: the store's transaction ends before the other handle closes its descriptors.
	_ = tx.Rollback()
	_ = other.Close()
}
