package session

import (
	"context"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
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
	w := newWake()
	s.view.watchers.add(p.SessionID, w)
	defer s.view.watchers.remove(p.SessionID, w)
	if err := s.live.Sync(ctx); err != nil {
		return err
	}
	row, err := s.store.Client.Session.Get(ctx, p.SessionID)
	if ent.IsNotFound(err) {
		return errSessionNotFound()
	}
	if err != nil {
		return err
	}
	if !row.Active {
		return errs.Unauthenticated("SESSION_TERMINATED", "the session has ended").
			WithMetadata("termination_reason", row.TerminationReason)
	}
	_, roles, err := s.userAndRoles(ctx, p.UserID, true)
	if err != nil {
		return err
	}
	ongoing, err := s.store.Client.Session.Query().
		Where(entsession.UserID(p.UserID), entsession.Active(true), entsession.ImpersonatorUserIDNEQ("")).All(ctx)
	if err != nil {
		return err
	}
	err = send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Snapshot_{
		Snapshot: &gatehousev1.WatchSessionResponse_Snapshot{Session: convert.Session(row), Roles: roles},
	}})
	if err != nil {
		return err
	}
	ws := newWatchState(p.SessionID)
	for _, o := range ongoing {
		if m := ws.began(convert.Session(o)); m != nil {
			if err := send(m); err != nil {
				return err
			}
		}
	}

	beat := time.AfterFunc(s.heartbeat, func() { w.set(&w.beat) })
	defer beat.Stop()
	warn := &expiryWarning{lead: time.Duration(s.view.watchers.lead.Load())}
	timer := time.AfterFunc(time.Hour, func() { w.set(&w.due) })
	timer.Stop()
	defer timer.Stop()
	// expiring looks at the session's expiries (idle, absolute) and sends what warn says.
	expiring := func(idle, absolute time.Time) error {
		msg, next := warn.update(s.now(), idle, absolute)
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(s.now()), 0))
		}
		if msg == nil {
			return nil
		}
		return send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Expiring_{Expiring: msg}})
	}
	if err := expiring(s.laterIdle(row), row.AbsoluteExpireTime); err != nil {
		return err
	}
	for {
		recs, err := st.Next(ctx, w.C)
		if err != nil {
			return err
		}
		out, ended, rolesCursor, moved := ws.events(recs)
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
			if err := send(m); err != nil {
				return err
			}
		}
		if rolesCursor != "" {
			_, now, err := s.userAndRoles(ctx, p.UserID, true)
			switch {
			case err != nil && ended:
				// The user is gone with the session (deleted): the termination says it all.
			case err != nil:
				return err
			default:
				if added, removed := diff(roles, now); len(added) > 0 || len(removed) > 0 {
					roles = now
					err = send(&gatehousev1.WatchSessionResponse{
						Event: &gatehousev1.WatchSessionResponse_RolesChanged_{RolesChanged: &gatehousev1.WatchSessionResponse_RolesChanged{
							Roles: now, Added: added, Removed: removed,
						}},
						ConsistencyToken: rolesCursor,
					})
					if err != nil {
						return err
					}
				}
			}
		}
		if ended {
			return send(last)
		}
		if w.beat.Swap(false) {
			if err := send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Heartbeat_{
				Heartbeat: &gatehousev1.WatchSessionResponse_Heartbeat{},
			}}); err != nil {
				return err
			}
			beat.Reset(s.heartbeat)
		}
		// NOTE: activity only moves the idle expiry later, which matters only to a warning in
		// force: otherwise the timer of the next warning is early, and looks again when it fires.
		touched := w.touched.Swap(false) && !warn.sent.IsZero()
		if w.due.Swap(false) || w.moved.Swap(false) || touched || moved {
			idle, absolute, active, err := s.expiries(ctx, p.SessionID)
			if err != nil {
				return err
			}
			if !active {
				// Its termination is on the way.
				timer.Stop()
				continue
			}
			if err := expiring(idle, absolute); err != nil {
				return err
			}
		}
	}
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
