package session_test

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

func TestMain(m *testing.M) { testpg.Main(m) }

const day = 24 * time.Hour

// newService opens a migrated store of backend and the session domain over it.
func newService(t *testing.T, backend string) (*store.Store, *session.Service) {
	t.Helper()
	st := teststore.Open(t, backend)
	return st, session.New(st, auth.NewHasher(1), slog.New(slog.NewTextHandler(io.Discard, nil)), session.Options{})
}

// addSessions stores n sessions of user: ended at ended, or active when ended is zero.
func addSessions(t *testing.T, st *store.Store, user string, n int, ended time.Time) []string {
	t.Helper()
	ctx := context.Background()
	created := time.Now().UTC().Add(-30 * day)
	var ids []string
	for start := 0; start < n; start += 200 {
		var bulk []*ent.SessionCreate
		for i := start; i < min(start+200, n); i++ {
			id := convert.NewID()
			ids = append(ids, id)
			hash := sha256.Sum256([]byte(id))
			c := st.Client.Session.Create().SetID(id).SetUserID(user).SetTokenHash(hash[:]).
				SetType("non_interactive").SetCreateTime(created).SetLastActiveTime(created).
				SetIdleExpireTime(time.Now().Add(day)).SetAbsoluteExpireTime(time.Now().Add(day))
			if !ended.IsZero() {
				c.SetActive(false).SetTerminateTime(ended).
					SetTerminationReason(gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT.String())
			}
			bulk = append(bulk, c)
		}
		if err := st.Client.Session.CreateBulk(bulk...).Exec(ctx); err != nil {
			t.Fatalf("storing sessions: %v", err)
		}
	}
	return ids
}

// addEvents appends n LOGIN_FAILED events at at, and returns their ids.
func addEvents(t *testing.T, st *store.Store, n int, at time.Time) []int64 {
	t.Helper()
	var ids []int64
	for range n {
		var id int64
		err := st.DB.QueryRow(st.Rebind("INSERT INTO events (time, type, actor_user_id, actor_session_id, user_id, session_id, payload) "+
			"VALUES (?, 'EVENT_TYPE_LOGIN_FAILED', '', '', '', '', ?) RETURNING id"), at.UTC(), []byte{}).Scan(&id)
		if err != nil {
			t.Fatalf("storing an event: %v", err)
		}
		ids = append(ids, id)
	}
	return ids
}

func sessionIDs(t *testing.T, st *store.Store) []string {
	t.Helper()
	ids, err := st.Client.Session.Query().IDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func eventIDs(t *testing.T, st *store.Store) []int64 {
	t.Helper()
	ids, err := st.Client.Event.Query().IDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// TestPruneDeletesWhatIsPastRetention stores ended sessions and events on both sides of the
// retention, more of them than one prune batch: those past it go, the recent ones and every active
// session (however old) stay.
func TestPruneDeletesWhatIsPastRetention(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			st, svc := newService(t, backend)
			now := time.Now().UTC()
			old := addSessions(t, st, "u1", 1100, now.Add(-8*day))
			recent := addSessions(t, st, "u1", 3, now.Add(-6*day))
			active := addSessions(t, st, "u2", 2, time.Time{})
			oldEvents := addEvents(t, st, 1100, now.Add(-8*day))
			recentEvents := addEvents(t, st, 3, now.Add(-6*day))

			got, err := svc.Prune(context.Background(), session.Retention{Sessions: 7 * day, Events: 7 * day})
			if err != nil {
				t.Fatalf("Prune: %v", err)
			}
			if got != (session.Pruned{Sessions: len(old), Events: len(oldEvents)}) {
				t.Errorf("Prune = %+v, want %d sessions and %d events", got, len(old), len(oldEvents))
			}
			want := append(slices.Clone(recent), active...)
			slices.Sort(want)
			if ids := sessionIDs(t, st); !slices.Equal(ids, want) {
				t.Errorf("%d sessions left, want the %d recent and active ones", len(ids), len(want))
			}
			if ids := eventIDs(t, st); !slices.Equal(ids, recentEvents) {
				t.Errorf("events left = %v, want the recent ones %v", ids, recentEvents)
			}

			// Nothing more to prune; no retention prunes nothing.
			if got, err := svc.Prune(context.Background(), session.Retention{Sessions: 7 * day, Events: 7 * day}); err != nil || got != (session.Pruned{}) {
				t.Errorf("second Prune = %+v, %v; want nothing", got, err)
			}
			if got, err := svc.Prune(context.Background(), session.Retention{Sessions: 0, Events: -1}); err != nil || got != (session.Pruned{}) {
				t.Errorf("Prune without retention = %+v, %v; want nothing", got, err)
			}
		})
	}
}

// TestPruneKeepsTheNewestEvent checks that a log whose every event is past retention keeps its
// newest one, so that ids (and consistency tokens) never go back.
func TestPruneKeepsTheNewestEvent(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			st, svc := newService(t, backend)
			ids := addEvents(t, st, 5, time.Now().Add(-30*day))
			if _, err := svc.Prune(context.Background(), session.Retention{Events: 7 * day}); err != nil {
				t.Fatal(err)
			}
			if got := eventIDs(t, st); !slices.Equal(got, ids[4:]) {
				t.Fatalf("events left = %v, want only the newest %v", got, ids[4:])
			}
			next := addEvents(t, st, 1, time.Now())
			if next[0] <= ids[4] {
				t.Errorf("a new event got id %d, not after %d", next[0], ids[4])
			}
		})
	}
}

// TestPruneCutsTheLogAtAPosition: the log is pruned from its start, in log order, so an event past
// retention that follows a recent one in the log stays; deleting by time alone would leave a hole
// in the log, where a reader resuming below it could skip what it never saw.
func TestPruneCutsTheLogAtAPosition(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			st, svc := newService(t, backend)
			now := time.Now()
			first := addEvents(t, st, 2, now.Add(-9*day))
			kept := addEvents(t, st, 1, now.Add(-6*day))
			kept = append(kept, addEvents(t, st, 2, now.Add(-8*day))...)
			kept = append(kept, addEvents(t, st, 1, now)...)
			got, err := svc.Prune(context.Background(), session.Retention{Events: 7 * day})
			if err != nil {
				t.Fatal(err)
			}
			if got.Events != len(first) {
				t.Errorf("Prune deleted %d events, want the %d before the first recent one", got.Events, len(first))
			}
			if ids := eventIDs(t, st); !slices.Equal(ids, kept) {
				t.Errorf("events left = %v, want %v", ids, kept)
			}
		})
	}
}
