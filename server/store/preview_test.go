package store_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestRunPreviewWritesNothing runs the same mutation previewed and applied on each backend: the
// preview sees its own writes inside the transaction, then leaves no row, no event and no commit
// hook behind, returns the zero position, and passes the mutation's error through unchanged.
func TestRunPreviewWritesNothing(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st := teststore.Open(t, backend)
			var hooks atomic.Int32
			st.SetCommitHook(func() { hooks.Add(1) })
			var seen int
			create := func(ctx context.Context, tx *store.Tx) error {
				if err := tx.Role.Create().SetID("previewed").Exec(ctx); err != nil {
					return err
				}
				tx.Emit(&gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_ROLE_CREATED})
				var err error
				seen, err = tx.Role.Query().Count(ctx)
				return err
			}
			count := func(table string) int {
				var n int
				if err := st.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			roles, evs := count("roles"), count("events")
			pos, err := st.Run(ctx, store.Preview, create)
			if err != nil || !pos.IsZero() {
				t.Fatalf("preview: position %+v, %v; want the zero position and no error", pos, err)
			}
			if seen != roles+1 {
				t.Errorf("the preview saw %d roles inside its transaction, want %d", seen, roles+1)
			}
			if count("roles") != roles || count("events") != evs || hooks.Load() != 0 {
				t.Errorf("after the preview: %d roles (want %d), %d events (want %d), %d commit hooks (want 0)",
					count("roles"), roles, count("events"), evs, hooks.Load())
			}
			boom := errors.New("boom")
			if _, err := st.Run(ctx, store.Preview, func(context.Context, *store.Tx) error { return boom }); !errors.Is(err, boom) {
				t.Errorf("a failing preview returned %v, want its own error", err)
			}
			pos, err = st.Run(ctx, store.Apply, create)
			if err != nil || pos.IsZero() {
				t.Fatalf("apply: position %+v, %v; want the event's position", pos, err)
			}
			if count("roles") != roles+1 || count("events") != evs+1 || hooks.Load() != 1 {
				t.Errorf("after the change: %d roles (want %d), %d events (want %d), %d commit hooks (want 1)",
					count("roles"), roles+1, count("events"), evs+1, hooks.Load())
			}
		})
	}
}
