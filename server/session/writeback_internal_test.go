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

	"github.com/gatehouse/gatehouse/ent"
	entevent "github.com/gatehouse/gatehouse/ent/event"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
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
			s.writeBack = newWriteBack(st, log, func() time.Duration { return time.Minute })
			clock := time.Now().UTC().Truncate(time.Second)
			s.now = func() time.Time { return clock }

			u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("busy").SetUsernameKey("busy").Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			token, hash, err := auth.NewToken()
			if err != nil {
				t.Fatal(err)
			}
			const window = 30 * time.Second
			impersonator, impersonatorSession := convert.NewID(), convert.NewID()
			sess, err := st.Client.Session.Create().SetID(convert.NewID()).SetUserID(u.ID).SetTokenHash(hash).
				SetImpersonatorUserID(impersonator).SetImpersonatorSessionID(impersonatorSession).
				SetType("web_browser").SetCreateTime(clock).SetLastActiveTime(clock).
				SetIdleExpireTime(clock.Add(window)).SetAbsoluteExpireTime(clock.Add(24 * time.Hour)).Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
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
// dropped, the row keeping what the change wrote; on PostgreSQL, a row another transaction holds
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

			// Newer activity of the skipped session, read from the view that the skipped one
			// moved: one write takes the row from what it has to the newer activity.
			later := now.Add(time.Second)
			w.add(newActivity(held, rows[2].UserID, now, now.Add(time.Hour), later, later.Add(time.Hour)))
			release()
			w.flush(ctx)
			got, err := st.Client.Session.Get(ctx, held)
			if err != nil {
				t.Fatal(err)
			}
			if !got.LastActiveTime.Equal(later) || !got.IdleExpireTime.Equal(later.Add(time.Hour)) {
				t.Fatalf("the held session, once free, has last activity %v, idle expiry %v; want %v, %v",
					got.LastActiveTime, got.IdleExpireTime, later, later.Add(time.Hour))
			}
			held = ""
			want = func(id string) (time.Time, time.Time) {
				switch id {
				case moved:
					return start, policyIdle
				case ended:
					return start, start.Add(time.Hour)
				case rows[2].ID:
					return later, later.Add(time.Hour)
				}
				return now, now.Add(time.Hour)
			}
			check()
			if len(w.pending) != 0 || w.failing {
				t.Fatalf("pending after the lock was released: %v (failing %v)", slices.Collect(maps.Keys(w.pending)), w.failing)
			}

			// The view keeps the times it wrote to the nanosecond, the row to the microsecond on
			// PostgreSQL: a second write, conditional on the first's nanoseconds, still applies.
			r := rows[3]
			t1 := now.Add(1500*time.Millisecond + 123*time.Nanosecond)
			t2 := t1.Add(time.Second + 456*time.Nanosecond)
			w.add(newActivity(r.ID, r.UserID, now, now.Add(time.Hour), t1, t1.Add(time.Hour)))
			w.flush(ctx)
			w.add(newActivity(r.ID, r.UserID, t1, t1.Add(time.Hour), t2, t2.Add(time.Hour)))
			w.flush(ctx)
			got, err = st.Client.Session.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if d := got.LastActiveTime.Sub(t2).Abs(); d >= time.Microsecond || len(w.pending) != 0 || w.failing {
				t.Fatalf("after two writes the row's last activity is %v, want %v (pending %d, failing %v)", got.LastActiveTime, t2, len(w.pending), w.failing)
			}
		})
	}
}

// TestWriteBackMergesChainedActivity: the activity kept of a session accepts every state the
// row may be in, whichever order its activities come in: newer activity that follows from an
// older one not written (pending, or put back after a failed write) accepts the older one's read
// state and its own; newer activity that shares its read with the one a flush is writing accepts
// that read state and the state the write leaves; newer activity read afresh from the database
// replaces the older one as it is; older activity never replaces newer.
func TestWriteBackMergesChainedActivity(t *testing.T) {
	act := func(last, idle, now, newIdle int64) activity {
		return activity{id: "s", last: last, idle: idle, last2: last, idle2: idle, now: now, newIdle: newIdle}
	}
	older := act(0, 100, 10, 110)
	chained := act(10, 110, 20, 120)
	sibling := act(0, 100, 15, 115)
	afresh := act(15, 115, 30, 130)
	both := func(a activity, last2, idle2 int64) activity { a.last2, a.idle2 = last2, idle2; return a }
	for _, tc := range []struct {
		name     string
		inflight *activity
		adds     []activity
		want     activity
	}{
		{"chained after older", nil, []activity{older, chained}, both(act(0, 100, 20, 120), 10, 110)},
		{"older put back after chained", nil, []activity{chained, older}, both(act(0, 100, 20, 120), 10, 110)},
		{"sibling after older", nil, []activity{older, sibling}, sibling},
		{"sibling while older is written", &older, []activity{sibling}, both(sibling, 10, 110)},
		{"sibling while older is written, then older put back", &older, []activity{sibling, older}, both(sibling, 10, 110)},
		{"chained while older is written, then older put back", &older, []activity{chained, older}, both(act(0, 100, 20, 120), 10, 110)},
		{"afresh after older", nil, []activity{older, afresh}, afresh},
		{"older after afresh", nil, []activity{afresh, older}, afresh},
		{"the same twice", nil, []activity{older, older}, older},
	} {
		w := newWriteBack(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Duration { return 0 })
		if tc.inflight != nil {
			w.inflight = map[string]activity{"s": *tc.inflight}
		}
		for _, a := range tc.adds {
			w.add(a)
		}
		if got := w.pending["s"]; got != tc.want || len(w.pending) != 1 {
			t.Errorf("%s: pending %+v, want %+v", tc.name, w.pending, tc.want)
		}
	}
}

// TestActivityAccepts: an activity accepts a row in either of its states, read back from the
// database to the microsecond (PostgreSQL rounds the nanoseconds the view keeps), and no other.
func TestActivityAccepts(t *testing.T) {
	base := time.Date(2026, 12, 6, 9, 0, 0, 123_456_789, time.UTC).UnixNano()
	a := activity{last: base, idle: base + int64(time.Hour), last2: base + int64(time.Minute), idle2: base + int64(time.Hour+time.Minute)}
	micro := func(x int64) int64 { return time.Unix(0, x).Round(time.Microsecond).UnixNano() }
	for _, tc := range []struct {
		last, idle int64
		want       bool
	}{
		{a.last, a.idle, true},
		{micro(a.last), micro(a.idle), true},
		{micro(a.last2), micro(a.idle2), true},
		{micro(a.last), micro(a.idle2), false},
		{a.last + int64(time.Millisecond), a.idle, false},
		{a.last, a.idle - int64(time.Microsecond), false},
	} {
		if got := a.accepts(tc.last, tc.idle); got != tc.want {
			t.Errorf("accepts(%d, %d) = %v, want %v", tc.last-base, tc.idle-base, got, tc.want)
		}
	}
}

// TestWriteBackKeepsUpWithItsOwnWrites: on both backends, the write kept applies to the row
// whatever became of the writes before it: two requests of a session at once (one read, two
// activities) split by a flush, which writes the first; and a write reported failed that
// committed after all, put back while newer activity waits.
func TestWriteBackKeepsUpWithItsOwnWrites(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			f := newWriteBackFixture(t, backend, 1, 0)
			st, w, start, r := f.st, f.w, f.start, f.rows[0]
			row := func(what string, last time.Time) {
				t.Helper()
				got, err := st.Client.Session.Get(ctx, r.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !got.LastActiveTime.Equal(last) || !got.IdleExpireTime.Equal(last.Add(time.Hour)) || len(w.pending) != 0 || w.failing {
					t.Fatalf("%s: last activity %v, idle expiry %v, %d pending (failing %v); want %v, %v, none",
						what, got.LastActiveTime, got.IdleExpireTime, len(w.pending), w.failing, last, last.Add(time.Hour))
				}
			}

			// Two requests at once: both read the row as stored; the flush takes the first and
			// the second comes while it writes.
			t1, t2 := start.Add(time.Second), start.Add(time.Second+time.Millisecond)
			w.add(newActivity(r.ID, r.UserID, start, start.Add(time.Hour), t1, t1.Add(time.Hour)))
			w.taken = func() {
				w.taken = nil
				w.add(newActivity(r.ID, r.UserID, start, start.Add(time.Hour), t2, t2.Add(time.Hour)))
			}
			w.flush(ctx)
			w.flush(ctx)
			row("after two requests at once", t2)

			// A write reported failed that committed: the row is at its end, and it is put back
			// (as a failed flush puts it back) while the activity that follows it waits.
			t3, t4 := t2.Add(time.Minute), t2.Add(2*time.Minute)
			committed := newActivity(r.ID, r.UserID, t2, t2.Add(time.Hour), t3, t3.Add(time.Hour))
			if err := st.Client.Session.UpdateOneID(r.ID).SetLastActiveTime(t3).SetIdleExpireTime(t3.Add(time.Hour)).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			w.add(newActivity(r.ID, r.UserID, t3, t3.Add(time.Hour), t4, t4.Add(time.Hour)))
			w.add(committed)
			w.flush(ctx)
			row("after a failed write that committed", t4)
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
}

// newWriteBackFixture returns the fixture on a fresh database of backend, with a write-back whose
// expiry warning's lead is lead.
func newWriteBackFixture(tb testing.TB, backend string, n int, lead time.Duration) writeBackFixture {
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
	w := newWriteBack(st, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Duration { return lead })
	return writeBackFixture{st: st, w: w, start: start, rows: rows}
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
