package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
)

// ReasonSubscriberTooSlow is the ErrorInfo reason of a stream the server cut off because its reader
// fell behind. The watches resume after it.
const ReasonSubscriberTooSlow = "SUBSCRIBER_TOO_SLOW"

var (
	errIdle  = errors.New("no message within the idle timeout")
	errEnded = errors.New("the server ended the stream early")
)

// WatchEvents streams the event log from req.After (empty: from now; see the package
// documentation), keeping only req.Types and req.UserId when set, and yields every event once, in
// log order, across reconnects. A terminal error is yielded once as (nil, err), and then the
// iteration ends; leaving the loop early ends the stream. Each range over the sequence starts a
// new watch from req; req itself is not modified.
func (c *Client) WatchEvents(ctx context.Context, req *gatehousev1.WatchEventsRequest) iter.Seq2[*gatehousev1.Event, error] {
	return func(yield func(*gatehousev1.Event, error) bool) {
		after := req.GetAfter()
		delivered := false
		open := func(ctx context.Context, svc gatehousev1connect.SessionServiceClient, retry bool) (*connect.ServerStreamForClient[gatehousev1.WatchEventsResponse], error) {
			if retry && !delivered && after == "" {
				c.log.WarnContext(ctx, "gatehouse: WatchEvents resumes from now: events committed while it was disconnected are missed")
			}
			r := &gatehousev1.WatchEventsRequest{}
			if req != nil {
				r = proto.CloneOf(req)
			}
			r.After = after
			return svc.WatchEvents(ctx, r)
		}
		// NOTE: no idle timeout: WatchEvents has no heartbeats, so a quiet log looks like a dead
		// stream. A dead connection is found by the HTTP/2 pings of the default HTTP client instead.
		err := watch(ctx, c, "WatchEvents", 0, open, func(m *gatehousev1.WatchEventsResponse) bool {
			ev := m.GetEvent()
			if ev == nil {
				return true
			}
			after, delivered = ev.GetCursor(), true
			return yield(ev, nil)
		})
		if err != nil {
			yield(nil, err)
		}
	}
}

// WatchSession streams what happens to the session of the client's token and yields every message
// across reconnects: after each (re)connect the server's fresh snapshot comes first. Heartbeats are
// not yielded unless WithHeartbeats was given. After a terminated message the iteration ends
// without error. A terminal error is yielded once as (nil, err), and then the iteration ends;
// leaving the loop early ends the stream.
func (c *Client) WatchSession(ctx context.Context) iter.Seq2[*gatehousev1.WatchSessionResponse, error] {
	return func(yield func(*gatehousev1.WatchSessionResponse, error) bool) {
		open := func(ctx context.Context, svc gatehousev1connect.SessionServiceClient, _ bool) (*connect.ServerStreamForClient[gatehousev1.WatchSessionResponse], error) {
			return svc.WatchSession(ctx, &gatehousev1.WatchSessionRequest{})
		}
		err := watch(ctx, c, "WatchSession", c.idleTimeout, open, func(m *gatehousev1.WatchSessionResponse) bool {
			if m.GetHeartbeat() != nil && !c.heartbeats {
				return true
			}
			// NOTE: the client stops at terminated rather than waiting for the server's OK: there
			// is nothing more to hear, and a cut in between must not reconnect.
			return yield(m, nil) && m.GetTerminated() == nil
		})
		if err != nil {
			yield(nil, err)
		}
	}
}

// opener starts one stream on a node; retry is false for the first stream of a watch.
type opener[T any] func(ctx context.Context, svc gatehousev1connect.SessionServiceClient, retry bool) (*connect.ServerStreamForClient[T], error)

// watch is the reconnect loop of both streams. handle gets each message and returns false to end
// the watch without error (the caller left its loop, or the stream is complete). watch returns the
// terminal error, nil when handle ended it.
func watch[T any](ctx context.Context, c *Client, method string, idle time.Duration, open opener[T], handle func(*T) bool) error {
	i := c.index()
	delay := c.minBackoff
	for retry := false; ; retry = true {
		progressed, done, err := attempt(ctx, c.nodes[i].svc, retry, idle, open, handle)
		switch {
		case done:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("client: %s: %w", method, context.Cause(ctx))
		case !retryable(err):
			return fmt.Errorf("client: %s on %s: %w", method, c.nodes[i].url, err)
		}
		if progressed {
			delay = c.minBackoff
		}
		// NOTE: equal jitter: the wait is between half the delay and the delay, so that clients
		// cut off together do not come back together, yet none comes back at once.
		wait := delay/2 + rand.N(delay/2+1)
		delay = min(2*delay, c.maxBackoff)
		next := (i + 1) % len(c.nodes)
		c.current.Store(int64(next))
		c.log.LogAttrs(ctx, slog.LevelWarn, "gatehouse: stream failed, reconnecting",
			slog.String("method", method), slog.String("node", c.nodes[i].url),
			slog.String("next", c.nodes[next].url), slog.Duration("wait", wait), slog.Any("error", err))
		i = next
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("client: %s: %w", method, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// attempt runs one stream until it fails or handle ends it. progressed says whether a message
// arrived, done whether handle ended the watch.
func attempt[T any](ctx context.Context, svc gatehousev1connect.SessionServiceClient, retry bool, idle time.Duration, open opener[T], handle func(*T) bool) (progressed, done bool, err error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var timer *time.Timer
	if idle > 0 {
		timer = time.AfterFunc(idle, func() { cancel(errIdle) })
		defer timer.Stop()
	}
	stream, err := open(actx, svc, retry)
	if err != nil {
		return false, false, err
	}
	defer func() {
		// NOTE: cancel first, so that closing never waits on a stream that is still open.
		cancel(nil)
		_ = stream.Close()
	}()
	for stream.Receive() {
		progressed = true
		// NOTE: the idle clock stops while the caller handles a message: a slow caller is not a
		// dead stream.
		if timer != nil {
			timer.Stop()
		}
		if !handle(stream.Msg()) {
			return true, true, nil
		}
		if timer != nil {
			timer.Reset(idle)
		}
	}
	err = stream.Err()
	switch {
	case errors.Is(context.Cause(actx), errIdle) && ctx.Err() == nil:
		err = connect.NewError(connect.CodeUnavailable, errIdle)
	case err == nil:
		// NOTE: neither stream ends with OK except after terminated, which handle has seen; an
		// early OK (a node shutting down) is retried like a cut.
		err = connect.NewError(connect.CodeUnavailable, errEnded)
	}
	return progressed, false, err
}

// retryable reports whether a watch resumes after err. Unknown and Internal are retried because a
// cut connection shows up as either; Canceled, when the caller's context is live (checked first),
// means the peer reset the stream.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded,
		connect.CodeAborted, connect.CodeInternal, connect.CodeCanceled:
		return true
	case connect.CodeResourceExhausted:
		return Reason(err) == ReasonSubscriberTooSlow
	default:
		return false
	}
}

// Reason returns the reason of the google.rpc.ErrorInfo detail of a Connect error in err's chain,
// such as CONCURRENT_SESSION_LIMIT or SUBSCRIBER_TOO_SLOW, or "" when there is none.
func Reason(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if info, ok := v.(*errdetails.ErrorInfo); derr == nil && ok {
			return info.GetReason()
		}
	}
	return ""
}
