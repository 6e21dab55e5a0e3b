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
// the values the node read, which the row must still have.
//
// The times are Unix nanoseconds: the queue holds one activity per session in use, and four
// time.Time doubled its size.
type activity struct {
	id, user string
	// last and idle are the row's last activity and idle expiry as read; now and newIdle what the
	// write sets them to.
	last, idle, now, newIdle int64
}

// newActivity returns the activity at now that moves a session's idle expiry from idle to
// newIdle, for a row read with last activity last.
func newActivity(id, user string, last, idle, now, newIdle time.Time) activity {
	return activity{id: id, user: user, last: last.UnixNano(), idle: idle.UnixNano(), now: now.UnixNano(), newIdle: newIdle.UnixNano()}
}

// stored is a as the store writes it.
func (a activity) stored() store.Activity {
	return store.Activity{ID: a.id, Last: unixNano(a.last), Idle: unixNano(a.idle), Now: unixNano(a.now), NewIdle: unixNano(a.newIdle)}
}

// writeBack is a node's batcher of last-activity writes, off the request path.
type writeBack struct {
	st  *store.Store
	log *slog.Logger
	// lead is how long before an expiry WatchSession warns of it (see announced).
	lead func() time.Duration
	// stale is told of each session whose row was not in the state its activity was read from,
	// so that the copy it came from is read again (the view's forget).
	stale func(id string)

	mu      sync.Mutex
	pending map[string]activity
	failing bool

	// flushed is a test hook, nil otherwise: called after each flush with what it left pending.
	flushed func(left int)
}

func newWriteBack(st *store.Store, log *slog.Logger, lead func() time.Duration, stale func(id string)) *writeBack {
	return &writeBack{st: st, log: log, lead: lead, stale: stale, pending: map[string]activity{}}
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

// addLocked records a, or keeps the newer activity of the same session pending; w.mu is held.
//
// NOTE: the view builds each activity from its copy of the session, which the one before moved:
// an activity that follows one still pending (read from the state the pending one writes) would
// miss its row, since the pending one was never written, and both would be lost (the session
// forgotten, the database keeping an idle expiry its user passes while still using it). So the
// newer one is written from the older one's state, the state the row is in. The one case where
// the row is not (a write reported failed that committed after all) misses, and is forgotten as
// any stale copy is.
func (w *writeBack) addLocked(a activity) {
	p, ok := w.pending[a.id]
	if !ok {
		w.pending[a.id] = a
		return
	}
	older, newer := a, p
	if a.now > p.now {
		older, newer = p, a
	}
	if newer.last == older.now && newer.idle == older.newIdle {
		newer.last, newer.idle = older.last, older.idle
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
// if the row still has the last activity and idle expiry the node read: a policy change (which
// moved the idle expiry) or another node's write wins. What was skipped because another
// transaction held the row, and what a failure stopped, stays pending for the next flush.
//
// NOTE: a write that found its row in another state is dropped, and the session's copy in the
// view is forgotten (stale). The view builds each activity from its copy, which the previous
// activity moved; a copy the database disagrees with (a policy change the view has not applied
// yet, two requests of the session at once split by a flush, a write reported failed that
// committed) would make every later write miss too, the database keep an idle expiry the session
// has passed, and a sweeper end the session while it is in use. Read again, the copy agrees.
func (w *writeBack) flush(ctx context.Context) int {
	w.mu.Lock()
	batch := w.pending
	w.pending = map[string]activity{}
	w.mu.Unlock()
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
	// unwritten are the ids of what goes back: skipped, held, or not tried after a failure;
	// stale those of the writes that found their row in another state.
	var unwritten, stale []string
	for chunk := range slices.Chunk(quiet, store.MaxInList) {
		var skipped, missed []string
		if failed == nil {
			skipped, missed, failed = w.st.WriteActivity(ctx, chunk)
		}
		if failed != nil {
			for _, a := range chunk {
				unwritten = append(unwritten, a.ID)
			}
			continue
		}
		unwritten = append(unwritten, skipped...)
		stale = append(stale, missed...)
	}
	for _, a := range announced {
		if failed != nil {
			unwritten = append(unwritten, a.id)
			continue
		}
		var held, missed bool
		held, missed, failed = w.extend(ctx, a)
		if failed != nil || held {
			unwritten = append(unwritten, a.id)
		}
		if missed {
			stale = append(stale, a.id)
		}
	}
	for _, id := range stale {
		w.stale(id)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// NOTE: what was not written goes back (or, when newer activity of the same session came in
	// meanwhile, lends it its state: see addLocked): the node's view already extended those
	// sessions' idle expiry, and a sweeper reading the old one from the database would end a
	// session its user is still using.
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
// that another transaction held the session's row, stale that the row was not in the state read;
// in either case nothing was written.
//
// NOTE: activity writes no event as a rule (a session validated on every request would flood the
// log); only activity close enough to the idle expiry to have been announced does: activity after
// a pause of at least half the idle timeout (idleLead), never that of a session in constant use.
func (w *writeBack) extend(ctx context.Context, a activity) (held, stale bool, err error) {
	_, err = w.st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		// NOTE: like the batches, it never waits for the row: a row another transaction holds
		// waits for the next flush, and holds up no other write.
		locked, h, err := tx.LockSessionNoWait(ctx, a.id)
		if held = h; err != nil || !locked {
			return cmp.Or(err, errNothingToWrite)
		}
		n, err := a.stored().Update(tx.Session).Save(ctx)
		if stale = err == nil && n == 0; err != nil || stale {
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
	return held, stale, err
}

// errNothingToWrite ends extend's transaction without a commit (and without the log's head, which
// InTx reads for a transaction that emitted nothing) when there is nothing to write: the row is
// held, gone, or not in the state read.
var errNothingToWrite = errors.New("session: no activity to write")
