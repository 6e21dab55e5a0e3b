package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

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
