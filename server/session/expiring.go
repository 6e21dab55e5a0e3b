package session

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
)

// DefaultExpiryWarning is how long before a timeout WatchSession sends expiring, unless
// SetExpiryWarning says otherwise.
const DefaultExpiryWarning = time.Minute

// expiryGrace is how long after a warned expiry a stream looks at its session once more when
// the expiry had not moved at the expiry itself: activity just before the expiry reaches the
// database through the write-back (every writeBackInterval), and then the session lives on.
const expiryGrace = 2 * time.Second

// SetExpiryWarning sets how long before an idle or absolute timeout WatchSession sends expiring
// (DefaultExpiryWarning until it is called); zero or less sends none. Call it before serving.
func (s *Service) SetExpiryWarning(lead time.Duration) {
	s.view.watchers.lead.Store(int64(lead))
}

// watchers are the node's WatchSession streams by session id, for the view to wake when it learns
// that a session's expiries moved: activity on this node (view.touch) and policy changes (which
// write no event per session, so no stream would hear of them).
//
// NOTE: activity writes an event only when it moves an expiry close enough to have been announced
// (writeBack.extend: EVENT_TYPE_SESSION_EXTENDED), and the view wakes the session's streams on
// it, so a stream on any node hears at once of activity that moves a warned expiry; a stream on
// the node that served the activity hears of it even before the write-back. A stream also looks
// at its session's expiries when a warning is due, and at the warned expiry (and once more
// expiryGrace later). No stream reads the database on a schedule of its own.
type watchers struct {
	lead atomic.Int64 // time.Duration
	mu   sync.Mutex
	// bySession holds the wakes of the streams watching each session.
	bySession map[string]map[*wake]struct{}
}

func newWatchers() *watchers {
	w := &watchers{bySession: map[string]map[*wake]struct{}{}}
	w.lead.Store(int64(DefaultExpiryWarning))
	return w
}

// add registers a stream watching session id.
func (ws *watchers) add(id string, w *wake) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	m := ws.bySession[id]
	if m == nil {
		m = map[*wake]struct{}{}
		ws.bySession[id] = m
	}
	m[w] = struct{}{}
}

// remove forgets a stream registered by add.
func (ws *watchers) remove(id string, w *wake) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.bySession[id], w)
	if len(ws.bySession[id]) == 0 {
		delete(ws.bySession, id)
	}
}

// touched wakes the streams of session id: activity moved its idle expiry later.
func (ws *watchers) touched(id string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.bySession[id] {
		w.set(&w.touched)
	}
}

// moved wakes every stream: any session's expiries may have moved, either way.
func (ws *watchers) moved() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, m := range ws.bySession {
		for w := range m {
			w.set(&w.moved)
		}
	}
}

// wake is how a stream's timers and the view wake its loop: each sets a flag, then makes sure C
// holds a value, which the loop hands to events.Stream.Next as its tick. The loop reads the flags
// whenever Next returns, so no wake is lost (a flag is set before the value is sent).
type wake struct {
	C chan time.Time
	// beat: a heartbeat is due. due: the expiry timer fired. touched: activity on this node moved
	// the idle expiry later. moved: the expiries may have moved either way.
	beat, due, touched, moved atomic.Bool
}

func newWake() *wake { return &wake{C: make(chan time.Time, 1)} }

// set raises flag and wakes the loop; it never blocks.
func (w *wake) set(flag *atomic.Bool) {
	flag.Store(true)
	select {
	case w.C <- time.Time{}:
	default:
	}
}

// idleLead is how long before an idle expiry a warning of it goes out: lead, but at most half the
// session's idle window (its idle timeout), so that a session in use is not under a warning all
// the time. Activity moves the idle expiry as soon as a quarter window (or activityInterval, if
// shorter) has passed since the last move (Service.touch), so a session in use never comes
// within half a window of its idle expiry: only one left idle for half its timeout is warned of,
// and only the activity that ends such a pause moves an announced expiry (writeBack.announced).
// A window of zero or less (unknown) leaves lead as it is.
//
// NOTE: without the bound, a timeout shorter than the lead put every session under a warning from
// its first moment: each of its streams got a fresh expiring at every activity, and every write-back
// of its activity was a transaction with a SESSION_EXTENDED event that made every node drop the
// session from its view.
func idleLead(lead, window time.Duration) time.Duration {
	if window <= 0 {
		return lead
	}
	return min(lead, window/2)
}

// expiryWarning decides one stream's expiring messages from its session's current expiries.
type expiryWarning struct {
	lead time.Duration
	// sent is the expire_time of the warning in force (zero: none), of reason.
	sent   time.Time
	reason gatehousev1.TerminationReason
}

// update takes the session's current expiries at now, and returns the message to send (nil:
// none) and when to look again (zero: only when woken). Whichever expiry comes first is warned of,
// from lead before it (idleLead before an idle expiry); when a warning is in force and the expiry
// moves, a fresh warning goes out if the new expiry is within the lead, else one with no
// expire_time.
func (w *expiryWarning) update(now time.Time, e expiries) (*gatehousev1.WatchSessionResponse_Expiring, time.Time) {
	if w.lead <= 0 {
		return nil, time.Time{}
	}
	due, reason, lead := e.idle, gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT, idleLead(w.lead, e.window)
	// NOTE: the idle expiry never slides past the absolute one; when they meet, the sweeper ends
	// the session as ABSOLUTE_TIMEOUT.
	if !e.absolute.After(e.idle) {
		due, reason, lead = e.absolute, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT, w.lead
	}
	if from := due.Add(-lead); now.Before(from) {
		if w.sent.IsZero() {
			return nil, from
		}
		w.sent, w.reason = time.Time{}, gatehousev1.TerminationReason_TERMINATION_REASON_UNSPECIFIED
		return &gatehousev1.WatchSessionResponse_Expiring{}, from
	}
	var msg *gatehousev1.WatchSessionResponse_Expiring
	if !w.sent.Equal(due) || w.reason != reason {
		w.sent, w.reason = due, reason
		msg = &gatehousev1.WatchSessionResponse_Expiring{ExpireTime: convert.Timestamp(due), Reason: reason}
	}
	switch {
	case now.Before(due):
		return msg, due
	case now.Before(due.Add(expiryGrace)):
		return msg, due.Add(expiryGrace)
	}
	// The sweeper ends the session; its termination arrives on the stream.
	return msg, time.Time{}
}

// expiries are a session's expiries as a stream sees them.
type expiries struct {
	// idle is the later of the database's idle expiry and this node's (see laterIdle).
	idle, absolute time.Time
	// window is the idle window: the idle timeout the idle expiry slides by.
	window time.Duration
	active bool
}

// expiriesOf returns the expiries of row, a session as read.
func (s *Service) expiriesOf(row *ent.Session) expiries {
	return expiries{idle: s.laterIdle(row), absolute: row.AbsoluteExpireTime,
		window: row.IdleExpireTime.Sub(row.LastActiveTime), active: row.Active}
}

// expiries returns session id's current expiries (the zero value for a session that is gone).
// The idle expiry is the later of the database's and the view's: activity on this node moves
// the view's copy at once and reaches the database through the write-back.
func (s *Service) expiries(ctx context.Context, id string) (expiries, error) {
	row, err := s.streamSession(ctx, id)
	if err != nil || row == nil {
		return expiries{}, err
	}
	return s.expiriesOf(row), nil
}

// laterIdle returns the latest of row's idle expiry, the view's copy of it and the activity
// pending in the write-back that will apply to row.
//
// NOTE: a policy change empties the view, so right after one only the write-back knows of this
// node's activity not yet written; a pending write that no longer matches the row is one the
// write-back will not apply either.
func (s *Service) laterIdle(row *ent.Session) time.Time {
	idle := row.IdleExpireTime
	if v, ok := s.view.idleExpiry(row.ID); ok && v.After(idle) {
		idle = v
	}
	if w := s.writeBack; w != nil {
		w.mu.Lock()
		a, ok := w.pending[row.ID]
		w.mu.Unlock()
		if ok && a.last == row.LastActiveTime.UnixNano() && a.idle == row.IdleExpireTime.UnixNano() && unixNano(a.newIdle).After(idle) {
			idle = unixNano(a.newIdle)
		}
	}
	return idle
}
