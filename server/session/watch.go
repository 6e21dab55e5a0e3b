package session

import (
	"context"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
)

// Watch streams what happens to the caller's session (WatchSession): a snapshot first, then
// role changes, impersonations of its user, expiry warnings and the session's end as they happen,
// with heartbeats in between. After terminated it returns nil. The stream follows the hub and
// its own timers: it does no database work of its own beyond the snapshot, re-reading the user's
// roles (shared with the node's view) after a role change, and re-reading its session's expiries
// when a warning is due or they may have moved (see watchers).
func (s *Service) Watch(ctx context.Context, send func(*gatehousev1.WatchSessionResponse) error) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil {
		return errs.Unauthenticated("UNAUTHENTICATED", "WatchSession needs the session's token")
	}
	if s.live == nil {
		return errs.Unavailable("NOT_SERVING", "this node does not serve streams")
	}
	// NOTE: subscribe first, then read the snapshot: a change that commits in between is both in
	// the snapshot and on the stream, never in neither. Roles are re-read on each change and
	// sent only when they differ from what the client holds, so the overlap sends nothing twice.
	// Likewise the stream registers for the view's wakes before it reads its expiries.
	st, err := s.live.Open(ctx, events.Position{}, events.Filter{UserID: p.UserID})
	if err != nil {
		return err
	}
	defer st.Close()
	w := &watcher{s: s, p: p, st: st, wake: newWake(), send: send}
	s.view.watchers.add(p.SessionID, w.wake)
	defer s.view.watchers.remove(p.SessionID, w.wake)
	row, err := w.snapshot(ctx)
	if err != nil {
		return err
	}
	w.beat = time.AfterFunc(s.heartbeat, func() { w.wake.set(&w.wake.beat) })
	defer w.beat.Stop()
	w.warn = &expiryWarning{lead: time.Duration(s.view.watchers.lead.Load())}
	w.timer = time.AfterFunc(time.Hour, func() { w.wake.set(&w.wake.due) })
	w.timer.Stop()
	defer w.timer.Stop()
	if err := w.expiring(s.expiriesOf(row)); err != nil {
		return err
	}
	return w.run(ctx)
}

// watcher is one WatchSession stream.
//
// NOTE: an idle stream's goroutine waits in run, under Watch, in events.Stream.Next: those frames
// are what the node keeps per idle stream, since the runtime halves a goroutine's stack only when
// less than a quarter of it is in use. The snapshot's reads and the handling of a batch, which
// need large frames, are methods of their own that return before the stream waits again.
type watcher struct {
	s    *Service
	p    *auth.Principal
	st   *events.Stream
	wake *wake
	send func(*gatehousev1.WatchSessionResponse) error
	// state are the impersonations announced; roles the roles the client holds.
	state *watchState
	roles []string
	// beat is the heartbeat's timer, timer that of the next expiry warning.
	beat, timer *time.Timer
	warn        *expiryWarning
}

// snapshot reads and sends the stream's first messages: the snapshot, then the impersonations of
// the user under way. It returns the session's row.
func (w *watcher) snapshot(ctx context.Context) (*ent.Session, error) {
	s, p := w.s, w.p
	if err := s.live.Sync(ctx); err != nil {
		return nil, err
	}
	row, err := s.streamSession(ctx, p.SessionID)
	if err != nil {
		return nil, err
	}
	if row == nil {
		return nil, errSessionNotFound()
	}
	if !row.Active {
		return nil, errs.Unauthenticated("SESSION_TERMINATED", "the session has ended").
			WithMetadata("termination_reason", row.TerminationReason)
	}
	if w.roles, err = s.streamRoles(ctx, p.UserID); err != nil {
		return nil, err
	}
	ongoing, _, err := s.impersonationsBatch.get(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	err = w.send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Snapshot_{
		Snapshot: &gatehousev1.WatchSessionResponse_Snapshot{Session: convert.Session(row), Roles: w.roles},
	}})
	if err != nil {
		return nil, err
	}
	w.state = newWatchState(p.SessionID)
	for _, o := range ongoing {
		if m := w.state.began(convert.Session(o)); m != nil {
			if err := w.send(m); err != nil {
				return nil, err
			}
		}
	}
	return row, nil
}

// expiring looks at the session's expiries (idle, absolute) and sends what the warning says.
func (w *watcher) expiring(e expiries) error {
	msg, next := w.warn.update(w.s.now(), e)
	w.timer.Stop()
	if !next.IsZero() {
		w.timer.Reset(max(next.Sub(w.s.now()), 0))
	}
	if msg == nil {
		return nil
	}
	return w.send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Expiring_{Expiring: msg}})
}

// run follows the stream until the session ends (nil, after terminated) or the stream fails.
func (w *watcher) run(ctx context.Context) error {
	for {
		recs, err := w.st.Next(ctx, w.wake.C)
		if err != nil {
			return err
		}
		if ended, err := w.handle(ctx, recs); ended || err != nil {
			return err
		}
	}
}

// handle sends what a batch of the user's events (empty: a wake) means to the client; ended says
// the stream has sent terminated.
func (w *watcher) handle(ctx context.Context, recs []events.Record) (ended bool, err error) {
	s, p := w.s, w.p
	out, ended, rolesCursor, moved := w.state.events(recs)
	var last *gatehousev1.WatchSessionResponse
	if ended {
		// NOTE: the terminated message goes last, after a role change that committed before
		// the session ended in the same batch (a busy tailer reads both in one round). A
		// termination for the role change itself (a re-authenticate policy) is sent instead
		// of the roles_changed.
		out, last = out[:len(out)-1], out[len(out)-1]
		if last.GetTerminated().GetReason() == gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE {
			rolesCursor = ""
		}
	}
	for _, m := range out {
		if err := w.send(m); err != nil {
			return false, err
		}
	}
	if rolesCursor != "" {
		now, err := s.streamRoles(ctx, p.UserID)
		switch {
		case err != nil && ended:
			// The user is gone with the session (deleted): the termination says it all.
		case err != nil:
			return false, err
		default:
			if added, removed := diff(w.roles, now); len(added) > 0 || len(removed) > 0 {
				w.roles = now
				err = w.send(&gatehousev1.WatchSessionResponse{
					Event: &gatehousev1.WatchSessionResponse_RolesChanged_{RolesChanged: &gatehousev1.WatchSessionResponse_RolesChanged{
						Roles: now, Added: added, Removed: removed,
					}},
					ConsistencyToken: rolesCursor,
				})
				if err != nil {
					return false, err
				}
			}
		}
	}
	if ended {
		return true, w.send(last)
	}
	if w.wake.beat.Swap(false) {
		if err := w.send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Heartbeat_{
			Heartbeat: &gatehousev1.WatchSessionResponse_Heartbeat{},
		}}); err != nil {
			return false, err
		}
		w.beat.Reset(s.heartbeat)
	}
	// NOTE: activity only moves the idle expiry later, which matters only to a warning in
	// force: otherwise the timer of the next warning is early, and looks again when it fires.
	touched := w.wake.touched.Swap(false) && !w.warn.sent.IsZero()
	if w.wake.due.Swap(false) || w.wake.moved.Swap(false) || touched || moved {
		e, err := s.expiries(ctx, p.SessionID)
		if err != nil {
			return false, err
		}
		if !e.active {
			// Its termination is on the way.
			w.timer.Stop()
			return false, nil
		}
		if err := w.expiring(e); err != nil {
			return false, err
		}
	}
	return false, nil
}

// watchState is what a WatchSession stream keeps between batches of its user's events: the
// impersonations of the user it has announced, by session id.
type watchState struct {
	session        string
	impersonations map[string]*gatehousev1.WatchSessionResponse_Impersonation
}

func newWatchState(session string) *watchState {
	return &watchState{session: session, impersonations: map[string]*gatehousev1.WatchSessionResponse_Impersonation{}}
}

// began returns the impersonation message for a session of the user that an impersonator opened
// (nil for any other session, for the stream's own session, and for one already announced).
func (w *watchState) began(sess *gatehousev1.Session) *gatehousev1.WatchSessionResponse {
	if sess.GetImpersonatorUserId() == "" || sess.GetId() == w.session || w.impersonations[sess.GetId()] != nil {
		return nil
	}
	m := &gatehousev1.WatchSessionResponse_Impersonation{
		SessionId: sess.GetId(), ImpersonatorUserId: sess.GetImpersonatorUserId(), Reason: sess.GetImpersonationReason(), Active: true,
	}
	w.impersonations[sess.GetId()] = m
	return &gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Impersonation_{Impersonation: m}}
}

// events maps a batch of the user's committed events (in log order) to the messages they send
// at once: impersonations that began or ended, and the stream's own terminated (ended: nothing
// follows it). rolesCursor is the cursor of the last ROLES_CHANGED (empty: none), after which the
// roles are read again; moved says the session's expiries may have moved (a role change
// re-applies the role policies' timeouts).
func (w *watchState) events(recs []events.Record) (out []*gatehousev1.WatchSessionResponse, ended bool, rolesCursor string, moved bool) {
	for _, r := range recs {
		switch ev := r.Event; ev.Type {
		case gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED:
			if m := w.began(ev.GetSessionCreated().GetSession()); m != nil {
				m.ConsistencyToken = ev.Cursor
				out = append(out, m)
			}
		case gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED:
			if ev.SessionId == w.session {
				pl := ev.GetSessionTerminated()
				out = append(out, &gatehousev1.WatchSessionResponse{
					Event: &gatehousev1.WatchSessionResponse_Terminated_{Terminated: &gatehousev1.WatchSessionResponse_Terminated{
						Reason: pl.GetReason(), Note: pl.GetNote(),
					}},
					ConsistencyToken: ev.Cursor,
				})
				return out, true, rolesCursor, moved
			}
			if m := w.impersonations[ev.SessionId]; m != nil {
				delete(w.impersonations, ev.SessionId)
				out = append(out, &gatehousev1.WatchSessionResponse{
					Event: &gatehousev1.WatchSessionResponse_Impersonation_{Impersonation: &gatehousev1.WatchSessionResponse_Impersonation{
						SessionId: m.SessionId, ImpersonatorUserId: m.ImpersonatorUserId, Reason: m.Reason, Active: false,
					}},
					ConsistencyToken: ev.Cursor,
				})
			}
		case gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED:
			rolesCursor, moved = ev.Cursor, true
		}
	}
	return out, false, rolesCursor, moved
}

// diff returns the roles in now and not in before, and those in before and not in now; both
// lists are sorted (their inputs are).
func diff(before, now []string) (added, removed []string) {
	for _, r := range now {
		if _, ok := slices.BinarySearch(before, r); !ok {
			added = append(added, r)
		}
	}
	for _, r := range before {
		if _, ok := slices.BinarySearch(now, r); !ok {
			removed = append(removed, r)
		}
	}
	return added, removed
}

// Principal re-reads the caller of a stream: its session must still be active and unexpired, and
// the roles are its user's current ones. Streams call it when an event may have changed their
// caller's standing.
func (s *Service) Principal(ctx context.Context, p *auth.Principal) (*auth.Principal, error) {
	row, err := s.store.Client.Session.Get(ctx, p.SessionID)
	if ent.IsNotFound(err) {
		return nil, errSessionNotFound()
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	if !row.Active {
		return nil, errs.Unauthenticated("SESSION_TERMINATED", "the session has ended").
			WithMetadata("termination_reason", row.TerminationReason)
	}
	if !now.Before(row.IdleExpireTime) || !now.Before(row.AbsoluteExpireTime) {
		return nil, errs.Unauthenticated("SESSION_EXPIRED", "the session has expired")
	}
	u, roles, err := s.userAndRoles(ctx, row.UserID, false)
	if err != nil {
		return nil, err
	}
	return &auth.Principal{UserID: u.Id, Username: u.Username, SessionID: row.ID, Roles: roles,
		ImpersonatorUserID: row.ImpersonatorUserID, ImpersonatorSessionID: row.ImpersonatorSessionID}, nil
}
