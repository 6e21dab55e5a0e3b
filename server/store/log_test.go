package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/lib/pq"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/store"
)

// emit commits one event about user and returns its position.
func emit(t *testing.T, st *store.Store, user string) events.Position {
	t.Helper()
	pos, err := st.InTx(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		tx.Emit(&gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_USER_UPDATED, UserId: user})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestPollSeesEveryCommitOnce(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st := teststore.Open(t, backend)
			before := emit(t, st, "u0")
			snap, recs, err := st.Poll(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Pos.Less(snap.Bound()) {
					t.Errorf("initial poll returned settled event %v below bound %v", r.Pos, snap.Bound())
				}
			}
			if !snap.Visible(before) || !before.Less(snap.Bound()) {
				t.Fatalf("an event committed before the snapshot is not settled in it: %v, snapshot %+v", before, snap)
			}
			var want []events.Position
			for i := range 3 {
				want = append(want, emit(t, st, "u"+string(rune('1'+i))))
			}
			snap2, recs, err := st.Poll(ctx, &snap)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(want) {
				t.Fatalf("poll returned %d events, want %d", len(recs), len(want))
			}
			got := map[events.Position]bool{}
			for _, r := range recs {
				got[r.Pos] = true
				if r.Pos.Log != st.LogID() || r.Event.Cursor != r.Pos.Cursor() {
					t.Errorf("record %v has cursor %q and log %d, want log %d", r.Pos, r.Event.Cursor, r.Pos.Log, st.LogID())
				}
			}
			for _, p := range want {
				if !got[p] {
					t.Errorf("poll missed %v", p)
				}
			}
			_, recs, err = st.Poll(ctx, &snap2)
			if err != nil || len(recs) != 0 {
				t.Fatalf("a second poll with nothing new returned %d events, %v", len(recs), err)
			}
			listed, err := st.Read(ctx, before, events.Position{}, events.Filter{}, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(listed) != 3 || listed[0].Pos != want[0] || listed[2].Pos != want[2] {
				t.Fatalf("Read after %v = %v, want %v", before, listed, want)
			}
			byUser, err := st.Read(ctx, events.Position{}, events.Position{}, events.Filter{UserID: "u2"}, 100)
			if err != nil || len(byUser) != 1 || byUser[0].Pos != want[1] {
				t.Fatalf("Read for u2 = %v, %v", byUser, err)
			}
			for p, w := range map[events.Position]events.Where{
				want[1]: events.InLog,
				{Log: st.LogID(), Xid: want[2].Xid, ID: want[2].ID + 100}: events.NotInLog,
				{Log: st.LogID() + 1, Xid: want[1].Xid, ID: want[1].ID}:   events.NotInLog,
			} {
				if got, err := st.Locate(ctx, p); err != nil || got != w {
					t.Errorf("Locate(%v) = %v, %v; want %v", p, got, err, w)
				}
			}
		})
	}
}

// TestHorizonHoldsBackAnEarlierTransaction is the case a naive id > cursor reader gets wrong: a
// transaction that wrote first (lower xid and id) commits after a later one. The later one is
// seen at once (Poll) but settles only when the earlier one has finished, so that a reader in log
// order never passes a position below which an event may still appear.
func TestHorizonHoldsBackAnEarlierTransaction(t *testing.T) {
	ctx := context.Background()
	st := teststore.Open(t, "postgres")
	snap, _, err := st.Poll(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := st.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback()
	var slowXid string
	if err := slow.QueryRowContext(ctx, "INSERT INTO events (time, type, payload) VALUES (now(), 'EVENT_TYPE_USER_UPDATED', ''::bytea) RETURNING xid::text").Scan(&slowXid); err != nil {
		t.Fatal(err)
	}
	fast := emit(t, st, "fast")
	snap2, recs, err := st.Poll(ctx, &snap)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Pos != fast {
		t.Fatalf("poll while the slow transaction runs = %v, want only %v", recs, fast)
	}
	if fast.Less(snap2.Bound()) {
		t.Fatalf("the fast event %v settled (bound %v) while an earlier transaction (xid %s) was still running", fast, snap2.Bound(), slowXid)
	}
	listed, err := st.Read(ctx, events.Position{}, events.Position{}, events.Filter{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range listed {
		if r.Pos == fast {
			t.Fatalf("Read listed %v before the earlier transaction finished", fast)
		}
	}
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	snap3, recs, err := st.Poll(ctx, &snap2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || !recs[0].Pos.Less(fast) {
		t.Fatalf("poll after the slow commit = %v, want the slow event, before %v in log order", recs, fast)
	}
	if !fast.Less(snap3.Bound()) {
		t.Fatalf("the fast event %v is still unsettled (bound %v) after every transaction finished", fast, snap3.Bound())
	}
}

// TestLogOrderIsNumeric: the log is ordered by transaction id as a number. Events of transactions
// 9 and 10 (stored with those ids, as a cluster's first transactions would have them) are read,
// located and pruned in that order; sorted as text, 10 would come before 9, so ListEvents would
// page out of order, repeating some events and skipping others, and a prune would delete events
// still within retention.
func TestLogOrderIsNumeric(t *testing.T) {
	ctx := context.Background()
	st := teststore.Open(t, "postgres")
	payload, err := proto.Marshal(&gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_USER_UPDATED})
	if err != nil {
		t.Fatal(err)
	}
	for _, xid := range []string{"9", "10", "11"} {
		if _, err := st.DB.ExecContext(ctx, "INSERT INTO events (time, type, actor_user_id, actor_session_id, user_id, session_id, payload, xid) "+
			"VALUES (now(), 'EVENT_TYPE_USER_UPDATED', '', '', '', '', $1, $2::text::xid8)", payload, xid); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := st.Read(ctx, events.Position{}, events.Position{}, events.Filter{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var xids []uint64
	for _, r := range recs {
		xids = append(xids, r.Pos.Xid)
	}
	if !slices.Equal(xids, []uint64{9, 10, 11}) {
		t.Fatalf("Read gives transactions %v, want 9 10 11", xids)
	}
	// Paging one event at a time from the last cursor gives each event once.
	var paged []uint64
	after := events.Position{}
	for {
		page, err := st.Read(ctx, after, events.Position{}, events.Filter{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page[0].Pos.Xid)
		after = page[0].Pos
	}
	if !slices.Equal(paged, xids) {
		t.Errorf("paging one at a time gives transactions %v, want %v", paged, xids)
	}
	// A position before the first event is pruned; the first event itself is in the log.
	if where, err := st.Locate(ctx, events.Position{Log: st.LogID(), Xid: 9, ID: recs[0].Pos.ID - 1}); err != nil || where != events.Pruned {
		t.Errorf("Locate before the first event = %v, %v; want Pruned", where, err)
	}
	if where, err := st.Locate(ctx, recs[0].Pos); err != nil || where != events.InLog {
		t.Errorf("Locate of the first event = %v, %v; want InLog", where, err)
	}
	// Nothing is past a retention of a week.
	var n int
	if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		n, err = tx.PruneEvents(ctx, time.Now().Add(-7*24*time.Hour), 100)
		return err
	}); err != nil || n != 0 {
		t.Errorf("PruneEvents deleted %d recent events (%v), want none", n, err)
	}
}

// TestNodeKnowsItsOwnNotifications: each node tags its commits' NOTIFYs, so that its listener
// skips its own (its tailer was woken in-process by the commit) and is woken by every other node's.
func TestNodeKnowsItsOwnNotifications(t *testing.T) {
	url := testpg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := teststore.OpenURL(t, url), teststore.OpenURL(t, url)
	l := pq.NewListener(url, 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen("gatehouse_events"); err != nil {
		t.Fatal(err)
	}
	next := func(what string) *pq.Notification {
		t.Helper()
		for {
			select {
			case n := <-l.Notify:
				if n != nil {
					return n
				}
			case <-ctx.Done():
				t.Fatalf("no NOTIFY after %s", what)
			}
		}
	}
	for round := range 3 {
		emit(t, a, "u")
		n := next("a commit on node a")
		if !a.Own(n) || b.Own(n) {
			t.Fatalf("round %d: node a's NOTIFY (%q): own to a %v, to b %v; want only a", round, n.Extra, a.Own(n), b.Own(n))
		}
		emit(t, b, "u")
		n = next("a commit on node b")
		if a.Own(n) || !b.Own(n) {
			t.Fatalf("round %d: node b's NOTIFY (%q): own to a %v, to b %v; want only b", round, n.Extra, a.Own(n), b.Own(n))
		}
	}
}
