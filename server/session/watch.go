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
// role changes and the session's end as they commit, with heartbeats in between. After
// terminated it returns nil. The stream follows the hub: it does no database work of its own
// beyond the snapshot and re-reading the user's roles (shared with the node's view) after a role
// change.
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
	st, err := s.live.Open(ctx, events.Position{}, events.Filter{UserID: p.UserID})
	if err != nil {
		return err
	}
	defer st.Close()
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
	err = send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Snapshot_{
		Snapshot: &gatehousev1.WatchSessionResponse_Snapshot{Session: convert.Session(row), Roles: roles},
	}})
	if err != nil {
		return err
	}
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	for {
		recs, err := st.Next(ctx, tick.C)
		if err != nil {
			return err
		}
		if recs == nil {
			if err := send(&gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Heartbeat_{
				Heartbeat: &gatehousev1.WatchSessionResponse_Heartbeat{},
			}}); err != nil {
				return err
			}
			continue
		}
		rolesChanged := false
		var cursor string
		for _, r := range recs {
			switch ev := r.Event; ev.Type {
			case gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED:
				if ev.SessionId != p.SessionID {
					continue
				}
				pl := ev.GetSessionTerminated()
				return send(&gatehousev1.WatchSessionResponse{
					Event: &gatehousev1.WatchSessionResponse_Terminated_{Terminated: &gatehousev1.WatchSessionResponse_Terminated{
						Reason: pl.GetReason(), Note: pl.GetNote(),
					}},
					ConsistencyToken: ev.Cursor,
				})
			case gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED:
				rolesChanged, cursor = true, ev.Cursor
			}
		}
		if !rolesChanged {
			continue
		}
		_, now, err := s.userAndRoles(ctx, p.UserID, true)
		if err != nil {
			return err
		}
		added, removed := diff(roles, now)
		if len(added) == 0 && len(removed) == 0 {
			continue
		}
		roles = now
		err = send(&gatehousev1.WatchSessionResponse{
			Event: &gatehousev1.WatchSessionResponse_RolesChanged_{RolesChanged: &gatehousev1.WatchSessionResponse_RolesChanged{
				Roles: now, Added: added, Removed: removed,
			}},
			ConsistencyToken: cursor,
		})
		if err != nil {
			return err
		}
	}
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
	return &auth.Principal{UserID: u.Id, Username: u.Username, SessionID: row.ID, Roles: roles}, nil
}
