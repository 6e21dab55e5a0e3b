package events_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// NOTE: database/sql's connection openers live as long as the pools the test stores own.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

const wait = 20 * time.Second

// startLive runs a live layer over a fresh store of backend until the test ends.
func startLive(t *testing.T, backend string, opts events.Options) (*store.Store, *events.Live) {
	t.Helper()
	st := teststore.Open(t, backend)
	live := events.New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	if err := live.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.SetCommitHook(live.Committed)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = live.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return st, live
}

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

// next returns the next batch of a stream within the deadline.
func next(t *testing.T, s *events.Stream) []events.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	recs, err := s.Next(ctx, nil)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return recs
}

// TestStreamsCatchUpThenFollow: a stream from a cursor reads the backlog from the database, then
// follows the hub, in log order, with nothing missing or repeated; a user filter keeps only that
// user's events.
func TestStreamsCatchUpThenFollow(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			st, live := startLive(t, backend, events.Options{})
			start := emit(t, st, "a")
			var want []events.Position
			for range 3 {
				want = append(want, emit(t, st, "b"))
			}
			s, err := live.Open(context.Background(), start, events.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			only, err := live.Open(context.Background(), events.Position{}, events.Filter{UserID: "c"})
			if err != nil {
				t.Fatal(err)
			}
			defer only.Close()
			for range 2 {
				want = append(want, emit(t, st, "c"))
			}
			var got []events.Position
			for len(got) < len(want) {
				for _, r := range next(t, s) {
					got = append(got, r.Pos)
				}
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("stream = %v, want %v", got, want)
				}
			}
			var gotC []events.Position
			for len(gotC) < 2 {
				for _, r := range next(t, only) {
					if r.Event.UserId != "c" {
						t.Fatalf("a stream for user c received an event of %q", r.Event.UserId)
					}
					gotC = append(gotC, r.Pos)
				}
			}
			if gotC[0] != want[3] || gotC[1] != want[4] {
				t.Fatalf("user stream = %v, want %v", gotC, want[3:])
			}
		})
	}
}

// TestStreamPrunedWhileCatchingUp: a stream whose position the retention prunes while it is still
// reading its backlog ends OUT_OF_RANGE, as a resume from that position would, instead of skipping
// the pruned events silently.
func TestStreamPrunedWhileCatchingUp(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st, live := startLive(t, backend, events.Options{})
			var pos []events.Position
			for range 5 {
				pos = append(pos, emit(t, st, "u"))
			}
			// The node has read them: the streams' backlog holds them all.
			if err := live.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			kept, err := live.Open(ctx, pos[0], events.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			defer kept.Close()
			var got []events.Position
			for len(got) < 4 {
				for _, r := range next(t, kept) {
					got = append(got, r.Pos)
				}
			}
			if !slices.Equal(got, pos[1:]) {
				t.Fatalf("a stream from the first event read %v, want %v", got, pos[1:])
			}
			s, err := live.Open(ctx, pos[0], events.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The retention prunes every event but the newest (PruneEvents keeps it) before the
			// stream's first read.
			if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
				_, err := tx.PruneEvents(ctx, time.Now().Add(time.Hour), 500)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			recs, err := s.Next(rctx, nil)
			if errs.KindOf(err) != errs.KindOutOfRange {
				t.Fatalf("the pruned stream's read returned %d events and %v, want OUT_OF_RANGE", len(recs), err)
			}
		})
	}
}

// TestSlowSubscriberIsCutOff: a subscriber that does not read is cut off with RESOURCE_EXHAUSTED
// SUBSCRIBER_TOO_SLOW once its buffer is full, while another keeps receiving every event.
func TestSlowSubscriberIsCutOff(t *testing.T) {
	st, live := startLive(t, "sqlite", events.Options{Buffer: 4})
	slow, _ := live.Hub().Subscribe("")
	defer slow.Close()
	fast, err := live.Open(context.Background(), events.Position{}, events.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for i := range 20 {
		p := emit(t, st, "u")
		// NOTE: wait for each event on the fast stream, so that each is its own batch.
		recs := next(t, fast)
		if len(recs) != 1 || recs[0].Pos != p {
			t.Fatalf("event %d: fast subscriber got %v, want %v", i, recs, p)
		}
	}
	select {
	case <-slow.Done():
	case <-time.After(wait):
		t.Fatal("the slow subscriber was never cut off")
	}
	if e, ok := errs.As(slow.Err()); !ok || e.Reason != events.ReasonTooSlow {
		t.Fatalf("slow subscriber ended with %v, want %s", slow.Err(), events.ReasonTooSlow)
	}
}

// TestSyncSeesEarlierCommits: once Sync returns, the hub's listeners have seen every event
// committed before the call, and a consistency token of it is reached at once.
func TestSyncSeesEarlierCommits(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			st, live := startLive(t, backend, events.Options{})
			seen := make(chan events.Position, 100)
			live.Hub().OnCommit(func(recs []events.Record) {
				for _, r := range recs {
					seen <- r.Pos
				}
			})
			p := emit(t, st, "u")
			if err := live.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-seen:
				if got != p {
					t.Fatalf("listener saw %v, want %v", got, p)
				}
			default:
				t.Fatal("Sync returned before the listeners saw an earlier commit")
			}
			if ok, err := live.AtLeast(context.Background(), "t", p); !ok || err != nil {
				t.Fatalf("AtLeast(%v) = %v, %v", p, ok, err)
			}
			future := events.Position{Log: st.LogID(), Xid: p.Xid * 2, ID: p.ID + 1000}
			if _, err := live.AtLeast(context.Background(), "t", future); err == nil {
				t.Fatal("a token from the future was accepted")
			}
		})
	}
}

// TestCloseEndsStreams: closing the hub ends open streams with the given error.
func TestCloseEndsStreams(t *testing.T) {
	_, live := startLive(t, "sqlite", events.Options{})
	s, err := live.Open(context.Background(), events.Position{}, events.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	live.Close(errs.Unavailable("NODE_SHUTTING_DOWN", "bye"))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := s.Next(ctx, nil); errs.KindOf(err) != errs.KindUnavailable {
		t.Fatalf("Next after Close = %v, want UNAVAILABLE", err)
	}
}
