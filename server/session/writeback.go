package session

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/store"
)

// writeBackInterval is how often a node writes the activity of its sessions back.
const writeBackInterval = 250 * time.Millisecond

// writeBackRetry is how often the node's last flush, on shutdown, tries again what it could not
// write.
const writeBackRetry = 20 * time.Millisecond

// activity is one session's activity to write back: its new last activity and idle expiry, and
// the values the row must have for the write to apply: those the node read, or an alternative
// (see addLocked).
//
// The times are Unix nanoseconds: the queue holds one activity per session in use, and time.Time
// would double its size.
type activity struct {
	id, user string
	// last and idle are the row's last activity and idle expiry as read; last2 and idle2 another
	// state the row may be in instead (last and idle when there is none); now and newIdle what
	// the write sets them to.
	last, idle, last2, idle2, now, newIdle int64
}

// newActivity returns the activity at now that moves a session's idle expiry from idle to
// newIdle, for a row read with last activity last.
func newActivity(id, user string, last, idle, now, newIdle time.Time) activity {
	a := activity{id: id, user: user, last: last.UnixNano(), idle: idle.UnixNano(), now: now.UnixNano(), newIdle: newIdle.UnixNano()}
	a.last2, a.idle2 = a.last, a.idle
	return a
}

// stored is a as the store writes it.
func (a activity) stored() store.Activity {
	return store.Activity{ID: a.id, Last: unixNano(a.last), Idle: unixNano(a.idle), Last2: unixNano(a.last2), Idle2: unixNano(a.idle2),
		Now: unixNano(a.now), NewIdle: unixNano(a.newIdle)}
}

// accepts reports whether a's write applies to a row with last activity last and idle expiry
// idle, as read from the database.
//
// NOTE: within a microsecond: the view keeps the times it wrote to the nanosecond, PostgreSQL to
// the microsecond; two activities of one session are never that close.
func (a activity) accepts(last, idle int64) bool {
	near := func(x, y int64) bool { return max(x-y, y-x) < int64(time.Microsecond) }
	return (near(a.last, last) && near(a.idle, idle)) || (near(a.last2, last) && near(a.idle2, idle))
}

// writeBack is a node's batcher of last-activity writes, off the request path.
type writeBack struct {
	st  *store.Store
	log *slog.Logger
	// lead is how long before an expiry WatchSession warns of it (see announced).
	lead func() time.Duration

	mu      sync.Mutex
	pending map[string]activity
	// inflight is what the running flush is writing (read-only), nil between flushes.
	inflight map[string]activity
	failing  bool

	// taken and flushed are test hooks, nil otherwise: called when a flush has taken what is
	// pending (without w.mu), and after it with what it left pending (with w.mu).
	taken   func()
	flushed func(left int)
}

func newWriteBack(st *store.Store, log *slog.Logger, lead func() time.Duration) *writeBack {
	return &writeBack{st: st, log: log, lead: lead, pending: map[string]activity{}}
}

// announced reports whether a's session was, when the activity happened, close enough to its idle
// expiry for WatchSession to have warned of it (idleLead, over the idle window the row was read
// with): its streams, on whichever node, must then hear that the expiry moved.
func (w *writeBack) announced(a activity) bool {
	lead := idleLead(w.lead(), time.Duration(a.idle-a.last))
	return lead > 0 && time.Duration(a.idle-a.now) <= lead
}

func (w *writeBack) add(a activity) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addLocked(a)
}

// addLocked records a, or keeps the newer activity of the same session already pending, so that
// the one write kept applies whatever the database holds; w.mu is held.
//
// NOTE: the view builds an activity from its own copy of the session, which the previous activity
// moved, so the newer one's condition (the state it read) is what the older one writes. When the
// older one was not written (a batch skipped its row, or a write failed), the newer one alone
// would never match the row, and the database would keep an idle expiry the session has long
// passed, for a sweeper to end it while it is in use. Two activities also share one read when
// two requests of a session come at once, and a flush may write the first before the second is
// queued. So the activity kept accepts both states the row may be in:
//   - following an older one not yet written (pending, or put back after its write failed): the
//     older one's read state, and the newer one's own in case the failed write committed after all;
//   - a sibling of the one being written (the same read state, later): that read state, and the
//     state the write in flight leaves;
//   - a sibling of an older one pending: the older one's states.
//
// Whichever of the two comes first: the newer one may arrive while the older one's flush runs,
// and the older one be put back after it.
func (w *writeBack) addLocked(a activity) {
	p, ok := w.pending[a.id]
	if !ok {
		if o, ok := w.inflight[a.id]; ok && o.now < a.now && a.last == o.last && a.idle == o.idle {
			a.last2, a.idle2 = o.now, o.newIdle
		}
		w.pending[a.id] = a
		return
	}
	older, newer := a, p
	if a.now > p.now {
		older, newer = p, a
	}
	switch {
	case newer.last == older.now && newer.idle == older.newIdle:
		newer.last2, newer.idle2 = newer.last, newer.idle
		newer.last, newer.idle = older.last, older.idle
	case newer.last == older.last && newer.idle == older.idle && newer.last2 == newer.last && newer.idle2 == newer.idle:
		newer.last2, newer.idle2 = older.last2, older.idle2
	}
	w.pending[a.id] = newer
}

// RunWriteBack writes the activity of the node's sessions back every writeBackInterval until
// ctx ends, then once more.
func (s *Service) RunWriteBack(ctx context.Context) error {
	if s.writeBack == nil {
		return nil
	}
	t := time.NewTicker(writeBackInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// NOTE: the last flush tries again, for as long as its bound allows, what it could
			// not write (a row another transaction held, a failed write): the node is going.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			retry := time.NewTicker(writeBackRetry)
			defer retry.Stop()
			for s.writeBack.flush(fctx) > 0 {
				select {
				case <-fctx.Done():
					return nil
				case <-retry.C:
				}
			}
			return nil
		case <-t.C:
			s.writeBack.flush(ctx)
		}
	}
}

// flush writes what is pending, and returns how many activities it left pending (new ones
// included). The activities no stream can have been warned about go first, in batches of
// store.MaxInList rows (store.WriteActivity); then those WatchSession announced, each in a
// transaction of its own with its event (extend). Neither waits for a row lock, so neither can
// deadlock with the transactions that lock a user and then its sessions. Each write applies only
// if the row still has a state the activity accepts (what the node read; see addLocked): a policy
// change (which moved the idle expiry) or another node's write wins, and the node's view of that
// session was dropped or is a lower bound anyway. What was skipped because another transaction
// held the row, and what a failure stopped, stays pending for the next flush.
func (w *writeBack) flush(ctx context.Context) int {
	w.mu.Lock()
	batch := w.pending
	w.pending = map[string]activity{}
	w.inflight = batch
	w.mu.Unlock()
	if w.taken != nil {
		w.taken()
	}
	var failed error
	quiet := make([]store.Activity, 0, len(batch))
	var announced []activity
	for _, a := range batch {
		if w.announced(a) {
			announced = append(announced, a)
		} else {
			quiet = append(quiet, a.stored())
		}
	}
	// unwritten are the ids of what goes back: skipped, held, or not tried after a failure.
	var unwritten []string
	for chunk := range slices.Chunk(quiet, store.MaxInList) {
		var skipped []string
		if failed == nil {
			skipped, failed = w.st.WriteActivity(ctx, chunk)
		}
		if failed != nil {
			for _, a := range chunk {
				unwritten = append(unwritten, a.ID)
			}
			continue
		}
		unwritten = append(unwritten, skipped...)
	}
	for _, a := range announced {
		if failed != nil {
			unwritten = append(unwritten, a.id)
			continue
		}
		var held bool
		if held, failed = w.extend(ctx, a); failed != nil || held {
			unwritten = append(unwritten, a.id)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inflight = nil
	// NOTE: what was not written goes back (merged with newer activity of the same session that
	// came in meanwhile): the node's view already extended those sessions' idle expiry, and a
	// sweeper reading the old one from the database would end a session its user is still using.
	for _, id := range unwritten {
		w.addLocked(batch[id])
	}
	// NOTE: a flush cut short by the node shutting down is not a failure to report: the final
	// flush (RunWriteBack) writes what is left.
	if failed != nil && ctx.Err() != nil {
		return w.left()
	}
	if failed != nil && !w.failing {
		w.log.Warn("writing session activity back failed; it is retried at the next flush", "err", failed)
	}
	w.failing = failed != nil
	return w.left()
}

// left reports what a flush left pending (to the test hook too); w.mu is held.
func (w *writeBack) left() int {
	if w.flushed != nil {
		w.flushed(len(w.pending))
	}
	return len(w.pending)
}

// extend writes a's activity and, in the same transaction, an EVENT_TYPE_SESSION_EXTENDED event,
// so that every node's streams of the session hear that its announced expiry moved. held reports
// that another transaction held the session's row, so that nothing was written.
//
// NOTE: activity writes no event as a rule (a session validated on every request would flood the
// log); only activity close enough to the idle expiry to have been announced does: activity after
// a pause of at least half the idle timeout (idleLead), never that of a session in constant use.
func (w *writeBack) extend(ctx context.Context, a activity) (held bool, err error) {
	_, err = w.st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		// NOTE: like the batches, it never waits for the row: a row another transaction holds
		// waits for the next flush, and holds up no other write.
		locked, h, err := tx.LockSessionNoWait(ctx, a.id)
		if held = h; err != nil || !locked {
			return cmp.Or(err, errNothingToWrite)
		}
		n, err := a.stored().Update(tx.Session).Save(ctx)
		if err != nil || n == 0 {
			return cmp.Or(err, errNothingToWrite)
		}
		// NOTE: the extension of an impersonation names its impersonator, as its creation and
		// its end do.
		row, err := tx.Session.Query().Where(entsession.ID(a.id)).
			Select(entsession.FieldImpersonatorUserID, entsession.FieldImpersonatorSessionID).Only(ctx)
		if err != nil {
			return err
		}
		tx.Emit(&gatehousev1.Event{
			Type: gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED, UserId: a.user, SessionId: a.id,
			ImpersonatorUserId: row.ImpersonatorUserID, ImpersonatorSessionId: row.ImpersonatorSessionID,
			Payload: &gatehousev1.Event_SessionExtended{SessionExtended: &gatehousev1.SessionExtendedPayload{
				IdleExpireTime: timestamppb.New(unixNano(a.newIdle))}},
		})
		return nil
	})
	if errors.Is(err, errNothingToWrite) {
		err = nil
	}
	return held, err
}

// errNothingToWrite ends extend's transaction without a commit (and without the log's head, which
// InTx reads for a transaction that emitted nothing) when there is nothing to write: the row is
// held, gone, or no longer in the state the activity accepts.
var errNothingToWrite = errors.New("session: no activity to write")
