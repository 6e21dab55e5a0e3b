package session_test

import (
	"context"
	"testing"
	"time"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	entpolicy "github.com/gatehouse/gatehouse/ent/sessionpolicy"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestPolicyChangeWithManySessions gives one user more live sessions than one UPDATE binding five
// parameters per session could name (SQLite allows 32766 parameters, PostgreSQL 65535), as a
// database from before the cap on sessions per user may hold: a global policy change still
// re-applies timeouts to all of them.
func TestPolicyChangeWithManySessions(t *testing.T) {
	for _, tc := range []struct {
		backend  string
		sessions int
	}{{"sqlite", 32766/5 + 500}, {"postgres", 65535/5 + 500}} {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st, svc := newService(t, tc.backend)
			addManySessions(t, st, "flood", tc.sessions)
			const idle = 10 * time.Minute
			global := &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}}
			if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
				if err := tx.SessionPolicy.Create().SetID(convert.NewID()).SetScopeKind(entpolicy.ScopeKindGlobal).
					SetIdleTimeoutNs(int64(idle)).Exec(ctx); err != nil {
					return err
				}
				effect, err := svc.PolicyChanged(ctx, tx, global)
				if err == nil && effect.Refreshed != tc.sessions {
					t.Errorf("PolicyChanged reports %d sessions refreshed; want %d", effect.Refreshed, tc.sessions)
				}
				return err
			}); err != nil {
				t.Fatalf("a global policy change with %d live sessions: %v", tc.sessions, err)
			}
			// The sessions were last active 30 days ago: a 10-minute idle timeout has expired them.
			stale, err := st.Client.Session.Query().Where(entsession.Active(true), entsession.IdleExpireTimeGT(time.Now())).Count(ctx)
			if err != nil || stale != 0 {
				t.Errorf("%d sessions kept an idle expiry in the future, %v; want 0", stale, err)
			}
		})
	}
}

// TestEndingManySessions gives one user more live sessions than one IN list could name on SQLite
// (32766 parameters): ending the user's sessions, as disabling or deleting the user does, still ends
// every one, with one event each.
func TestEndingManySessions(t *testing.T) {
	if raceEnabled {
		// NOTE: SQLite is C transpiled to Go, which the race detector slows some twentyfold: ending
		// 33,000 sessions would take minutes. The test checks statement sizes, not concurrency.
		t.Skip("slow under the race detector; make test runs it again without -race")
	}
	const sessions = 32766 + 500
	ctx := context.Background()
	st, _ := newService(t, "sqlite")
	addManySessions(t, st, "flood", sessions)
	addSessions(t, st, "other", 3, time.Time{})
	var ended []string
	if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		ended, err = session.EndUserSessions(ctx, tx, "flood", "", gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED, "")
		return err
	}); err != nil {
		t.Fatalf("ending %d sessions of a user: %v", sessions, err)
	}
	if len(ended) != sessions {
		t.Errorf("ended %d sessions, want %d", len(ended), sessions)
	}
	left, err := st.Client.Session.Query().Where(entsession.Active(true)).Count(ctx)
	if err != nil || left != 3 {
		t.Errorf("%d active sessions left, %v; want the other user's 3", left, err)
	}
	var events int
	if err := st.DB.QueryRow("SELECT COUNT(*) FROM events WHERE type = 'EVENT_TYPE_SESSION_TERMINATED'").Scan(&events); err != nil || events != sessions {
		t.Errorf("%d SESSION_TERMINATED events, %v; want %d", events, err, sessions)
	}
}

// addManySessions stores n active sessions of user, created and last active 30 days ago.
func addManySessions(t *testing.T, st *store.Store, user string, n int) {
	t.Helper()
	teststore.AddSessions(t, st, user, n, time.Now().Add(-30*day), time.Now().Add(day))
}
