package api

import (
	"context"
	"slices"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
)

// defaultEventPage is ListEvents' page size when the request sets none.
const defaultEventPage = 50

// ListEvents implements SessionService.ListEvents.
func (h *Session) ListEvents(ctx context.Context, req *gatehousev1.ListEventsRequest) (*gatehousev1.ListEventsResponse, error) {
	after, err := h.live.ParseToken("after", req.After)
	if err != nil {
		return nil, err
	}
	size := int(req.PageSize)
	if size == 0 {
		size = defaultEventPage
	}
	recs, err := h.live.List(ctx, after, events.Filter{Types: req.Types, UserID: req.UserId}, size)
	if err != nil {
		return nil, err
	}
	out := &gatehousev1.ListEventsResponse{Events: make([]*gatehousev1.Event, len(recs))}
	for i, r := range recs {
		out.Events[i] = r.Event
	}
	return out, nil
}

// WatchSession implements SessionService.WatchSession over Connect.
func (h *Session) WatchSession(ctx context.Context, _ *gatehousev1.WatchSessionRequest, stream *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
	return h.svc.Watch(ctx, stream.Send)
}

// WatchSession implements SessionService.WatchSession over gRPC (and REST, through the gateway).
func (h grpcSession) WatchSession(_ *gatehousev1.WatchSessionRequest, stream grpc.ServerStreamingServer[gatehousev1.WatchSessionResponse]) error {
	return h.svc.Watch(stream.Context(), stream.Send)
}

// WatchEvents implements SessionService.WatchEvents over Connect.
func (h *Session) WatchEvents(ctx context.Context, req *gatehousev1.WatchEventsRequest, stream *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
	return h.watchEvents(ctx, req, stream.Send)
}

// WatchEvents implements SessionService.WatchEvents over gRPC (and REST, through the gateway).
func (h grpcSession) WatchEvents(req *gatehousev1.WatchEventsRequest, stream grpc.ServerStreamingServer[gatehousev1.WatchEventsResponse]) error {
	return h.watchEvents(stream.Context(), req, stream.Send)
}

// watchEvents streams the log in order from req.After.
//
// NOTE: the stream's authorisation was checked when it opened, with the caller's standing as it
// was authenticated. A guard follows the caller's own user on the hub and, on any event that may
// have changed the caller's standing (its session ending, its roles changing, its user disabled
// or deleted), checks again and ends the stream with the error the caller would get now. The
// guard subscribes first and the standing is then checked once more, from the database: a change
// published before the guard subscribed (the client may hold the stream's request back for as
// long as it likes after its headers were authenticated) is in that check, and any later one
// reaches the guard.
func (h *Session) watchEvents(ctx context.Context, req *gatehousev1.WatchEventsRequest, send func(*gatehousev1.WatchEventsResponse) error) error {
	after, err := h.live.ParseToken("after", req.After)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if p := auth.PrincipalFrom(ctx); p != nil {
		guard, _ := h.live.Hub().Subscribe(p.UserID)
		defer guard.Close()
		if err := h.mayWatchEvents(ctx, p, req); err != nil {
			return err
		}
		go h.guard(ctx, cancel, guard, p, req)
	}
	st, err := h.live.Open(ctx, after, events.Filter{Types: req.Types, UserID: req.UserId})
	if err != nil {
		return err
	}
	defer st.Close()
	for {
		recs, err := st.Next(ctx, nil)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && cause != err && ctx.Err() != nil {
				return cause
			}
			return err
		}
		for _, r := range recs {
			if err := send(&gatehousev1.WatchEventsResponse{Event: r.Event}); err != nil {
				return err
			}
		}
	}
}

// mayWatchEvents checks the standing of p, as the database has it now, against WatchEvents'
// rule: the error is the one the caller would get if it called now.
func (h *Session) mayWatchEvents(ctx context.Context, p *auth.Principal, req *gatehousev1.WatchEventsRequest) error {
	rule, _ := Rules(gatehousev1.SessionService_WatchEvents_FullMethodName)
	now, err := h.svc.Principal(ctx, p)
	if err != nil {
		return err
	}
	if rule.Allow != nil && !rule.Allow(now, req) {
		return errs.PermissionDenied("PERMISSION_DENIED", "the caller no longer holds a role that may watch events")
	}
	return nil
}

// guard ends a WatchEvents stream (cancel with the cause) when its caller may no longer watch.
func (h *Session) guard(ctx context.Context, cancel context.CancelCauseFunc, sub *events.Subscription, p *auth.Principal, req *gatehousev1.WatchEventsRequest) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Done():
			// NOTE: without its guard the stream could outlive its caller's standing, so it ends
			// with the guard, for the same reason (a guard that fell behind, or the node
			// shutting down); the client resumes from its cursor and is authorised afresh.
			cancel(sub.Err())
			return
		case <-sub.Ready():
			if !slices.ContainsFunc(sub.Take(), func(batch []events.Record) bool { return concernsCaller(batch, p) }) {
				continue
			}
			if err := h.mayWatchEvents(ctx, p, req); err != nil {
				cancel(err)
				return
			}
		}
	}
}

// concernsCaller reports whether a batch of the caller's user's events may change what the
// caller may do.
func concernsCaller(batch []events.Record, p *auth.Principal) bool {
	for _, r := range batch {
		switch r.Event.Type {
		case gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED:
			if r.Event.SessionId == p.SessionID {
				return true
			}
		case gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, gatehousev1.EventType_EVENT_TYPE_USER_DISABLED,
			gatehousev1.EventType_EVENT_TYPE_USER_DELETED:
			return true
		}
	}
	return false
}
