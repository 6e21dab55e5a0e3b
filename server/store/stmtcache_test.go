package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/teststore"
)

// TestPreparedStatementsPerConnection: on PostgreSQL a statement with arguments is prepared once
// per connection and reused (pg_prepared_statements of the connection); the connection keeps at
// most 256 of them; statements without arguments (several in one text) and jsonb arguments work as
// they did without the cache; and a cached statement whose table changed under it is prepared
// again instead of failing every later call.
func TestPreparedStatementsPerConnection(t *testing.T) {
	st := teststore.Open(t, "postgres")
	ctx := context.Background()
	conn, err := st.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	prepared := func(like string) int {
		t.Helper()
		var n int
		if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '"+like+"'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	for i := range 5 {
		var got int
		if err := conn.QueryRowContext(ctx, "SELECT $1::int + 1 AS cached_probe", i).Scan(&got); err != nil || got != i+1 {
			t.Fatalf("call %d: %d, %v", i, got, err)
		}
	}
	if n := prepared("%cached_probe%"); n != 1 {
		t.Fatalf("5 calls of one statement left %d prepared statements, want 1", n)
	}

	for i := range 300 {
		var got int
		if err := conn.QueryRowContext(ctx, fmt.Sprintf("SELECT $1::int AS evict_probe_%d", i), i).Scan(&got); err != nil || got != i {
			t.Fatalf("statement %d: %d, %v", i, got, err)
		}
	}
	if n := prepared("%"); n > 256 {
		t.Fatalf("the connection holds %d prepared statements, want at most 256", n)
	}

	if _, err := conn.ExecContext(ctx, "CREATE TEMP TABLE cache_probe (a int, doc jsonb); INSERT INTO cache_probe VALUES (1, '{}')"); err != nil {
		t.Fatalf("several statements without arguments: %v", err)
	}
	doc, _ := json.Marshal(map[string]any{"k": []int{1, 2}})
	if _, err := conn.ExecContext(ctx, "INSERT INTO cache_probe VALUES ($1, $2)", 2, doc); err != nil {
		t.Fatalf("a jsonb argument: %v", err)
	}
	var got string
	if err := conn.QueryRowContext(ctx, "SELECT doc->>'k' FROM cache_probe WHERE a = $1", 2).Scan(&got); err != nil || got != "[1, 2]" {
		t.Fatalf("reading the jsonb back: %q, %v", got, err)
	}

	read := func() error {
		var n int
		return conn.QueryRowContext(ctx, "SELECT * FROM cache_probe WHERE a = $1", 1).Scan(&n, new(any))
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "ALTER TABLE cache_probe ADD COLUMN b int"); err != nil {
		t.Fatal(err)
	}
	// The cached plan's result type changed: that call fails, the next prepares the statement
	// again and reads three columns.
	if err := read(); err == nil || !strings.Contains(err.Error(), "0A000") {
		t.Fatalf("the first read after the change: %v, want PostgreSQL's 0A000 (cached plan must not change result type)", err)
	}
	var a, b any
	var d any
	if err := conn.QueryRowContext(ctx, "SELECT * FROM cache_probe WHERE a = $1", 1).Scan(&a, &d, &b); err != nil {
		t.Fatalf("after the table changed: %v", err)
	}
	// The failed statement was closed, not left on the backend beside its replacement.
	if n := prepared("SELECT * FROM cache_probe WHERE a = %"); n != 1 {
		t.Errorf("the connection holds %d prepared statements of the changed query, want 1", n)
	}
}

// TestStatementWhileRowsOpen: a statement started on a connection while another's rows are still
// being read is refused with an error, through a cached statement or not, instead of interleaving
// the two on the wire; once the rows are closed the connection works, and the rows of a cached
// statement still describe their columns.
func TestStatementWhileRowsOpen(t *testing.T) {
	st := teststore.Open(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := st.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SELECT g FROM generate_series(1, $1::int) g", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	types, err := rows.ColumnTypes()
	if err != nil || len(types) != 1 || types[0].DatabaseTypeName() != "INT4" {
		t.Fatalf("column types %v, %v; want one INT4", types, err)
	}
	if !rows.Next() {
		t.Fatalf("no first row: %v", rows.Err())
	}
	var got int
	for _, q := range []struct {
		query string
		args  []any
	}{
		{"SELECT $1::int + 1", []any{1}},
		{"SELECT 2", nil},
	} {
		if err := conn.QueryRowContext(ctx, q.query, q.args...).Scan(&got); err == nil || !strings.Contains(err.Error(), "rows of another were open") {
			t.Errorf("%s while rows were open: %d, %v; want the refusal", q.query, got, err)
		}
		if _, err := conn.ExecContext(ctx, q.query, q.args...); err == nil || !strings.Contains(err.Error(), "rows of another were open") {
			t.Errorf("exec %s while rows were open: %v; want the refusal", q.query, err)
		}
	}
	n := 1
	for rows.Next() {
		n++
	}
	if err := rows.Close(); err != nil || n != 100_000 {
		t.Fatalf("read %d rows (%v), want 100000", n, err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT $1::int + 1", 41).Scan(&got); err != nil || got != 42 {
		t.Fatalf("after the rows were closed: %d, %v", got, err)
	}
}
