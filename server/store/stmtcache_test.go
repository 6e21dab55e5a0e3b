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
// being read is refused with an error, whichever path either takes (a cached statement, a query
// without arguments, one with more arguments than the cache keeps), instead of interleaving the two
// on the wire; once the rows are closed the connection works, and the rows still describe their
// columns.
func TestStatementWhileRowsOpen(t *testing.T) {
	st := teststore.Open(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := st.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 100_000
	many := make([]any, 33)
	marks := make([]string, len(many))
	for i := range many {
		many[i], marks[i] = -i, fmt.Sprintf("$%d", i+1)
	}
	for _, first := range []struct {
		name, query string
		args        []any
	}{
		{"cached", "SELECT g FROM generate_series(1, $1::int) g", []any{n}},
		{"without arguments", fmt.Sprintf("SELECT g FROM generate_series(1, %d) g", n), nil},
		{"with 33 arguments", fmt.Sprintf("SELECT g FROM generate_series(1, %d) g WHERE g NOT IN (%s)", n, strings.Join(marks, ", ")), many},
	} {
		rows, err := conn.QueryContext(ctx, first.query, first.args...)
		if err != nil {
			t.Fatalf("%s: %v", first.name, err)
		}
		types, err := rows.ColumnTypes()
		if err != nil || len(types) != 1 || types[0].DatabaseTypeName() != "INT4" {
			t.Fatalf("%s: column types %v, %v; want one INT4", first.name, types, err)
		}
		if !rows.Next() {
			t.Fatalf("%s: no first row: %v", first.name, rows.Err())
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
				t.Errorf("%s, then %s while its rows were open: %d, %v; want the refusal", first.name, q.query, got, err)
			}
			if _, err := conn.ExecContext(ctx, q.query, q.args...); err == nil || !strings.Contains(err.Error(), "rows of another were open") {
				t.Errorf("%s, then exec %s while its rows were open: %v; want the refusal", first.name, q.query, err)
			}
		}
		read := 1
		for rows.Next() {
			read++
		}
		if err := rows.Close(); err != nil || read != n {
			t.Fatalf("%s: read %d rows (%v), want %d", first.name, read, err, n)
		}
		if err := conn.QueryRowContext(ctx, "SELECT $1::int + 1", 41).Scan(&got); err != nil || got != 42 {
			t.Fatalf("%s: after the rows were closed: %d, %v", first.name, got, err)
		}
	}
}
