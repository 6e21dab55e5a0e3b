package session

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gatehouse/gatehouse/ent"
	entevent "github.com/gatehouse/gatehouse/ent/event"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestWriteBackAnnouncesOnlyAfterAPause: a session whose idle timeout (30 s) is shorter than the
// expiry warning's lead (60 s) and that is validated without a pause writes its activity back with
// no SESSION_EXTENDED event (it used to write one at every write-back, a transaction and an
// invalidation on every node per session every 7.5 s); the activity that ends a pause of more than
// half the timeout, which WatchSession has warned of, writes one, which names the impersonator of
// the session (an impersonation) as its creation and its end do.
func TestWriteBackAnnouncesOnlyAfterAPause(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st := teststore.Open(t, backend)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			s := New(st, auth.NewHasher(1), log, Options{})
			s.writeBack = newWriteBack(st, log, func() time.Duration { return time.Minute }, s.view.forget)
			clock := time.Now().UTC().Truncate(time.Second)
			s.now = func() time.Time { return clock }

			const window = 30 * time.Second
			impersonator, impersonatorSession := convert.NewID(), convert.NewID()
			sess, token := webSession(t, st, clock, window, func(c *ent.SessionCreate) {
				c.SetImpersonatorUserID(impersonator).SetImpersonatorSessionID(impersonatorSession)
			})
			extended := func() []*ent.Event {
				t.Helper()
				evs, err := st.Client.Event.Query().Where(entevent.Type(gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED.String())).All(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return evs
			}
			use := func(after time.Duration) {
				t.Helper()
				clock = clock.Add(after)
				if _, _, _, err := s.validate(ctx, token, false); err != nil {
					t.Fatalf("validating at +%v: %v", after, err)
				}
				s.writeBack.flush(ctx)
				row, err := st.Client.Session.Get(ctx, sess.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !row.LastActiveTime.Equal(clock) || !row.IdleExpireTime.Equal(clock.Add(window)) {
					t.Fatalf("after activity at %v the row has last activity %v, idle expiry %v", clock, row.LastActiveTime, row.IdleExpireTime)
				}
			}
			// In use: activity every quarter of the timeout, for four minutes.
			for range 32 {
				use(window / 4)
			}
			if evs := extended(); len(evs) != 0 {
				t.Fatalf("a session in constant use wrote %d SESSION_EXTENDED events, want none", len(evs))
			}
			// A pause past half the timeout: WatchSession warned of the expiry, the activity that
			// moves it is announced.
			use(window/2 + time.Second)
			evs := extended()
			if len(evs) != 1 {
				t.Fatalf("the activity after a pause wrote %d SESSION_EXTENDED events, want 1", len(evs))
			}
			var e gatehousev1.Event
			if err := proto.Unmarshal(evs[0].Payload, &e); err != nil {
				t.Fatal(err)
			}
			if e.SessionId != sess.ID || e.ImpersonatorUserId != impersonator || e.ImpersonatorSessionId != impersonatorSession {
				t.Errorf("SESSION_EXTENDED of session %s, impersonator %q (session %q); want session %s, impersonator %s (session %s)",
					e.SessionId, e.ImpersonatorUserId, e.ImpersonatorSessionId, sess.ID, impersonator, impersonatorSession)
			}
		})
	}
}

// TestWriteBackWritesInBatches: one flush writes more activities than one batch holds; an
// activity whose row moved on since it was read (a policy change) or whose session ended is
// dropped and reported stale, the row keeping what the change wrote; on PostgreSQL, a row another transaction holds
// is skipped without waiting for it (the write-back used to wait, and so wrote one row per
// statement to stay out of deadlocks) and written by the first flush after the lock is gone.
func TestWriteBackWritesInBatches(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			f := newWriteBackFixture(t, backend, store.MaxInList+20, 0)
			st, w, start, rows := f.st, f.w, f.start, f.rows
			now := start.Add(time.Second)
			for _, r := range rows {
				w.add(newActivity(r.ID, r.UserID, r.LastActiveTime, r.IdleExpireTime, now, now.Add(time.Hour)))
			}
			moved, ended, held := rows[0].ID, rows[1].ID, rows[2].ID
			policyIdle := start.Add(10 * time.Minute)
			if err := st.Client.Session.UpdateOneID(moved).SetIdleExpireTime(policyIdle).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			if err := st.Client.Session.UpdateOneID(ended).SetActive(false).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			release := func() {}
			if st.IsPostgres() {
				release = holdRow(t, st, held)
			}

			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			w.flush(fctx)
			waited := fctx.Err() != nil
			cancel()
			if waited {
				t.Fatal("the flush waited for a row lock until its deadline")
			}
			want := func(id string) (last, idle time.Time) {
				switch {
				case id == moved:
					return start, policyIdle
				case id == ended, id == held && st.IsPostgres():
					return start, start.Add(time.Hour)
				}
				return now, now.Add(time.Hour)
			}
			check := func() {
				t.Helper()
				got, err := st.Client.Session.Query().All(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range got {
					last, idle := want(r.ID)
					if !r.LastActiveTime.Equal(last) || !r.IdleExpireTime.Equal(idle) {
						t.Fatalf("session %s (moved %v, ended %v, held %v) has last activity %v, idle expiry %v; want %v, %v",
							r.ID, r.ID == moved, r.ID == ended, r.ID == held, r.LastActiveTime, r.IdleExpireTime, last, idle)
					}
				}
			}
			check()
			pending := slices.Collect(maps.Keys(w.pending))
			if wantPending := map[bool][]string{true: {held}, false: nil}[st.IsPostgres()]; !slices.Equal(pending, wantPending) || w.failing {
				t.Fatalf("pending after the flush: %v (failing %v), want %v", pending, w.failing, wantPending)
			}

			// The writes that lost (to the policy change, to the session's end) are reported
			// stale, so that the view reads those sessions again.
			stale := slices.Sorted(slices.Values(f.stale))
			if wantStale := slices.Sorted(slices.Values([]string{moved, ended})); !slices.Equal(stale, wantStale) {
				t.Fatalf("reported stale %v, want %v (the moved and the ended session)", stale, wantStale)
			}

			release()
			w.flush(ctx)
			held = ""
			check()
			if len(w.pending) != 0 || w.failing {
				t.Fatalf("pending after the lock was released: %v (failing %v)", slices.Collect(maps.Keys(w.pending)), w.failing)
			}
		})
	}
}

// TestWriteBackForgetsStaleCopies: a write that finds its row in another state than its activity
// was read from is dropped and reported stale, on the batched path and on the announced one (with
// no event); the next activity, read from the row as it is, applies. Here the first write of two
// requests at once (one read, two activities), split by a flush, moved the row.
func TestWriteBackForgetsStaleCopies(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			f := newWriteBackFixture(t, backend, 1, time.Minute)
			st, w, start, r := f.st, f.w, f.start, f.rows[0]
			first, second := start.Add(time.Second), start.Add(time.Second+time.Millisecond)
			w.add(newActivity(r.ID, r.UserID, start, start.Add(time.Hour), first, first.Add(time.Hour)))
			w.flush(ctx)
			w.add(newActivity(r.ID, r.UserID, start, start.Add(time.Hour), second, second.Add(time.Hour)))
			w.flush(ctx)
			// Announced (30 s before the idle expiry it was read with), from the same old read.
			late := start.Add(time.Hour - 30*time.Second)
			announced := newActivity(r.ID, r.UserID, start, start.Add(time.Hour), late, late.Add(time.Hour))
			if !w.announced(announced) {
				t.Fatal("the activity 30 s before the idle expiry is not one a stream may have been warned of")
			}
			w.add(announced)
			w.flush(ctx)
			n, err := st.Client.Event.Query().Where(entevent.Type(gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED.String())).Count(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := st.Client.Session.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.stale, []string{r.ID, r.ID}) || len(w.pending) != 0 || w.failing || n != 0 || !got.LastActiveTime.Equal(first) {
				t.Fatalf("reported stale %v, %d pending (failing %v), %d SESSION_EXTENDED events, last activity %v; want %v twice, none, none, %v",
					f.stale, len(w.pending), w.failing, n, got.LastActiveTime, r.ID, first)
			}
			w.add(newActivity(r.ID, r.UserID, got.LastActiveTime, got.IdleExpireTime, second, second.Add(time.Hour)))
			w.flush(ctx)
			if got, err = st.Client.Session.Get(ctx, r.ID); err != nil || !got.LastActiveTime.Equal(second) || len(f.stale) != 2 {
				t.Fatalf("activity read from the row: last activity %v (%v), %d reported stale; want %v, 2", got.LastActiveTime, err, len(f.stale), second)
			}
		})
	}
}

// TestWriteBackKeepsActivityThatFollowsAnUnwrittenOne: activity read from the state that activity
// still pending writes (the view moved its copy, the write failed) is written from the state the
// row is in, whichever of the two is queued first; it was lost before (its write missed, and the
// row kept the old idle expiry).
func TestWriteBackKeepsActivityThatFollowsAnUnwrittenOne(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st, s := newLiveService(t, backend)
			clock := time.Now().UTC().Truncate(time.Second)
			s.now = func() time.Time { return clock }
			sess, token := webSession(t, st, clock, time.Hour, nil)
			use := func() {
				t.Helper()
				clock = clock.Add(2 * time.Minute)
				if _, _, _, err := s.validate(ctx, token, false); err != nil {
					t.Fatal(err)
				}
			}
			use()
			failed, cancel := context.WithCancel(ctx)
			cancel()
			if left := s.writeBack.flush(failed); left != 1 {
				t.Fatalf("a flush that failed left %d activities pending, want 1", left)
			}
			use()
			if left := s.writeBack.flush(ctx); left != 0 {
				t.Fatalf("the next flush left %d activities pending, want none", left)
			}
			row, err := st.Client.Session.Get(ctx, sess.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !row.LastActiveTime.Equal(clock) || !row.IdleExpireTime.Equal(clock.Add(time.Hour)) {
				t.Fatalf("the row has last activity %v and idle expiry %v, want %v and %v",
					row.LastActiveTime, row.IdleExpireTime, clock, clock.Add(time.Hour))
			}
			if _, ok := s.view.idleExpiry(sess.ID); !ok {
				t.Error("the view forgot the session, though its copy agrees with the database")
			}
		})
	}
	// A flush puts back what it could not write after newer activity came in meanwhile: the newer
	// one is still written from the state the row is in.
	at := func(m int) time.Time { return time.Unix(0, 0).Add(time.Duration(m) * time.Minute) }
	older := newActivity("s", "u", at(0), at(60), at(2), at(62))
	newer := newActivity("s", "u", at(2), at(62), at(4), at(64))
	w := newWriteBack(nil, nil, nil, nil)
	w.add(newer)
	w.add(older)
	if got, want := w.pending["s"], newActivity("s", "u", at(0), at(60), at(4), at(64)); got != want {
		t.Errorf("pending %+v, want %+v", got, want)
	}
	// Activity read from another state (here the row's, after the view forgot it) is not changed.
	w = newWriteBack(nil, nil, nil, nil)
	other := newActivity("s", "u", at(1), at(61), at(4), at(64))
	w.add(older)
	w.add(other)
	if got := w.pending["s"]; got != other {
		t.Errorf("pending %+v, want %+v", got, other)
	}
}

// TestRefreshKeepsTheWriteBacksActivity: on PostgreSQL, a write-back that commits while a policy
// change's refresh of the live sessions' expiries is under way is kept: the refresh locks and
// reads again the sessions it changes before it writes them, so the row gets the write-back's last
// activity with the new policy's idle window. Before, a write-back committing between the
// refresh's read and its write was overwritten with an idle expiry computed from the activity
// before it.
func TestRefreshKeepsTheWriteBacksActivity(t *testing.T) {
	ctx := context.Background()
	f := newWriteBackFixture(t, "postgres", 1, 0)
	st, start, r := f.st, f.start, f.rows[0]
	if _, _, _, err := policy.New(st, nil).Create(ctx, &gatehousev1.SessionPolicy{
		Scope:       &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}},
		IdleTimeout: durationpb.New(15 * time.Minute),
	}, store.Apply); err != nil {
		t.Fatal(err)
	}
	s := New(st, auth.NewHasher(1), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	active := start.Add(10 * time.Minute)
	f.w.add(newActivity(r.ID, r.UserID, r.LastActiveTime, r.IdleExpireTime, active, active.Add(time.Hour)))
	left := -1
	s.refreshRead = func() { left = f.w.flush(ctx) }
	if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		_, err := s.refreshExpiry(ctx, tx, []string{r.UserID})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Client.Session.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if window := got.IdleExpireTime.Sub(got.LastActiveTime); window != 15*time.Minute || left != 0 || !got.LastActiveTime.Equal(active) {
		t.Fatalf("the write-back during the refresh left %d pending; the row has last activity %v and idle expiry %v, a window of %v; want none pending, %v and the policy's 15m",
			left, got.LastActiveTime, got.IdleExpireTime, window, active)
	}
}

// TestViewForgetsWhatTheDatabaseDisagreesWith: the node's view builds each activity from its copy
// of the session; when the database moved on without it (here another writer's activity), the
// next write misses, the view forgets the session, and the activity after it, read from the
// database, applies. Without forgetting, every later write would miss and the database keep an
// idle expiry the session passes while in use.
func TestViewForgetsWhatTheDatabaseDisagreesWith(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st, s := newLiveService(t, backend)
			clock := time.Now().UTC().Truncate(time.Second)
			s.now = func() time.Time { return clock }
			const window = time.Hour
			sess, token := webSession(t, st, clock, window, nil)
			use := func(what string, want time.Time) {
				t.Helper()
				clock = clock.Add(2 * time.Minute)
				if _, _, _, err := s.validate(ctx, token, false); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				s.writeBack.flush(ctx)
				row, err := st.Client.Session.Get(ctx, sess.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !row.LastActiveTime.Equal(want) {
					t.Fatalf("%s: the row has last activity %v, want %v", what, row.LastActiveTime, want)
				}
			}
			use("the first activity", clock.Add(2*time.Minute))
			if _, ok := s.view.idleExpiry(sess.ID); !ok {
				t.Fatal("the view does not hold the session after a validation")
			}
			other := clock.Add(time.Minute)
			if err := st.Client.Session.UpdateOneID(sess.ID).SetLastActiveTime(other).SetIdleExpireTime(other.Add(window)).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			use("the activity from the view's copy", other)
			if _, ok := s.view.idleExpiry(sess.ID); ok {
				t.Fatal("the view still holds the session after its write missed")
			}
			use("the activity read from the database", clock.Add(2*time.Minute))
		})
	}
}

// TestWriteBackAnnouncedSkipsAHeldRow: on PostgreSQL, activity that WatchSession may have
// announced (written with a SESSION_EXTENDED event) is skipped without waiting when another
// transaction holds the session's row, with no event, and written with its one event by the first
// flush after the lock is gone.
func TestWriteBackAnnouncedSkipsAHeldRow(t *testing.T) {
	ctx := context.Background()
	f := newWriteBackFixture(t, "postgres", 1, time.Minute)
	st, w, start, r := f.st, f.w, f.start, f.rows[0]
	now := start.Add(time.Hour - 30*time.Second)
	a := newActivity(r.ID, r.UserID, r.LastActiveTime, r.IdleExpireTime, now, now.Add(time.Hour))
	if !w.announced(a) {
		t.Fatal("the activity 30 s before the idle expiry is not one a stream may have been warned of")
	}
	w.add(a)
	release := holdRow(t, st, r.ID)
	extended := func() int {
		t.Helper()
		n, err := st.Client.Event.Query().Where(entevent.Type(gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED.String())).Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	left := w.flush(fctx)
	waited := fctx.Err() != nil
	cancel()
	if waited || left != 1 || w.failing || extended() != 0 {
		t.Fatalf("with the row held: waited %v, %d left pending (failing %v), %d SESSION_EXTENDED events; want no wait, 1, none",
			waited, left, w.failing, extended())
	}

	release()
	if left := w.flush(ctx); left != 0 || w.failing {
		t.Fatalf("once the row was free: %d left pending (failing %v)", left, w.failing)
	}
	got, err := st.Client.Session.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.LastActiveTime.Equal(now) || extended() != 1 {
		t.Fatalf("once the row was free: last activity %v (want %v), %d SESSION_EXTENDED events (want 1)", got.LastActiveTime, now, extended())
	}
}

// TestWriteBackLastFlushRetries: on shutdown, the node's last flush tries again the activity of a
// session another transaction held, and writes it once the row is free, within its bound.
func TestWriteBackLastFlushRetries(t *testing.T) {
	ctx := context.Background()
	f := newWriteBackFixture(t, "postgres", 1, 0)
	st, start, r := f.st, f.start, f.rows[0]
	s := New(st, auth.NewHasher(1), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	s.writeBack = f.w
	release := holdRow(t, st, r.ID)
	now := start.Add(time.Second)
	s.writeBack.add(newActivity(r.ID, r.UserID, r.LastActiveTime, r.IdleExpireTime, now, now.Add(time.Hour)))
	skipped := 0
	s.writeBack.flushed = func(left int) {
		if left > 0 {
			skipped++
			release()
		}
	}
	stopped, stop := context.WithCancel(ctx)
	stop()
	if err := s.RunWriteBack(stopped); err != nil {
		t.Fatal(err)
	}
	got, err := st.Client.Session.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if skipped == 0 || !got.LastActiveTime.Equal(now) {
		t.Fatalf("after the last flush (%d skipped) the row has last activity %v, want %v", skipped, got.LastActiveTime, now)
	}
}

// BenchmarkWriteBackFlush measures how fast a node writes session activity back: each iteration
// queues the activity of 1,000 of 10,000 active sessions (taken in turn) and flushes
// it. It reports the rows written per second ("rows/s").
func BenchmarkWriteBackFlush(b *testing.B) {
	const sessions, batch = 10_000, 1_000
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			f := newWriteBackFixture(b, backend, sessions, 0)
			st, w, start, rows := f.st, f.w, f.start, f.rows
			b.ResetTimer()
			written := 0
			for i := range b.N {
				for j := range batch {
					r := rows[(i*batch+j)%len(rows)]
					now := r.LastActiveTime.Add(time.Second)
					w.add(newActivity(r.ID, r.UserID, r.LastActiveTime, r.IdleExpireTime, now, now.Add(time.Hour)))
					r.LastActiveTime, r.IdleExpireTime = now, now.Add(time.Hour)
				}
				w.flush(ctx)
				if len(w.pending) != 0 || w.failing {
					b.Fatalf("%d activities left after a flush", len(w.pending))
				}
				written += batch
			}
			b.ReportMetric(float64(written)/b.Elapsed().Seconds(), "rows/s")
			b.StopTimer()
			n, err := st.Client.Session.Query().Where(entsession.LastActiveTimeGT(start)).Count(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if want := min(b.N*batch, sessions); n != want {
				b.Fatalf("%d sessions have a newer last activity, want %d", n, want)
			}
		})
	}
}

// writeBackFixture is a store with n active sessions of one user, each last active at start and
// expiring an hour later, and a write-back on the store.
type writeBackFixture struct {
	st    *store.Store
	w     *writeBack
	start time.Time
	rows  []*ent.Session
	// stale are the sessions the write-back reported stale, in order.
	stale []string
}

// newWriteBackFixture returns the fixture on a fresh database of backend, with a write-back whose
// expiry warning's lead is lead.
func newWriteBackFixture(tb testing.TB, backend string, n int, lead time.Duration) *writeBackFixture {
	tb.Helper()
	ctx := context.Background()
	st := teststore.Open(tb, backend)
	u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("busy").SetUsernameKey("busy").Save(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Second)
	teststore.AddSessions(tb, st, u.ID, n, start, start.Add(time.Hour))
	rows, err := st.Client.Session.Query().All(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	f := &writeBackFixture{st: st, start: start, rows: rows}
	f.w = newWriteBack(st, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Duration { return lead },
		func(id string) { f.stale = append(f.stale, id) })
	return f
}

// newLiveService returns a session service over a fresh store of backend with its live layer (the
// view, the tailer, the write-back's forgetting) running until the test ends, as a node wires it.
func newLiveService(t *testing.T, backend string) (*store.Store, *Service) {
	t.Helper()
	ctx := context.Background()
	st := teststore.Open(t, backend)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(st, auth.NewHasher(1), log, Options{})
	live := events.New(st, log, events.Options{})
	if err := live.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st.SetCommitHook(live.Committed)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- live.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-ran })
	s.UseLive(live)
	return st, s
}

// holdRow locks session id's row in a transaction of its own, as a login or a role change would,
// until the returned release is called (or the test ends).
func holdRow(t *testing.T, st *store.Store, id string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := st.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	release = func() { _ = tx.Rollback() }
	t.Cleanup(release)
	if _, err := tx.ExecContext(ctx, "SELECT id FROM sessions WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	return release
}

// webSession stores user "busy" and a web-browser session of it, last active at clock, with an
// idle window of window, set further by more when it is not nil; it returns the session and its
// token.
func webSession(t *testing.T, st *store.Store, clock time.Time, window time.Duration, more func(*ent.SessionCreate)) (*ent.Session, string) {
	t.Helper()
	ctx := context.Background()
	u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("busy").SetUsernameKey("busy").Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	token, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	c := st.Client.Session.Create().SetID(convert.NewID()).SetUserID(u.ID).SetTokenHash(hash).
		SetType("web_browser").SetCreateTime(clock).SetLastActiveTime(clock).
		SetIdleExpireTime(clock.Add(window)).SetAbsoluteExpireTime(clock.Add(24 * time.Hour))
	if more != nil {
		more(c)
	}
	sess, err := c.Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sess, token
}
