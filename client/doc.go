// Package client is a Go client for Gatehouse's streams that survives disconnects and node
// failures: WatchEvents (the event log) and WatchSession (the caller's own session).
//
// # Nodes and protocols
//
// New takes the base URLs of one or more nodes, all serving the same cluster. Calls use the
// Connect protocol, or gRPC with WithGRPC, on the node's HTTP port; for http:// URLs the default
// HTTP client speaks unencrypted HTTP/2 (h2c), which both protocols accept. WithToken sends the
// bearer token on every call. Session gives plain, unretried calls against the current node.
//
// # Streams as iterators
//
// WatchEvents and WatchSession return an iter.Seq2 of (message, error). A range over it opens a
// stream, reconnects it as needed, and yields messages until one of:
//   - the caller leaves the loop: the stream is cancelled and closed before the range statement
//     returns, and nothing of the watch keeps running (the HTTP client may keep the connection
//     for reuse; CloseIdleConnections releases it);
//   - a terminal error: it is yielded once as (nil, err) and the iteration ends;
//   - for WatchSession, a terminated message: it is yielded, and the iteration ends without error.
//
// Cancelling ctx ends the watch with a terminal error wrapping the context's error.
//
// # Reconnects
//
// A stream that fails with a retryable error is reopened on the next node in the list, round
// robin, after an exponential backoff with jitter (WithBackoff; 50 ms doubling up to 5 s, back to
// the start once a stream delivers a message). It retries forever; bound it with ctx. Retryable
// are the codes of a lost node or connection: Unavailable, Unknown, Internal, DeadlineExceeded,
// Aborted, Canceled (when ctx is live, the peer reset the stream), a stream ending with OK where
// the contract does not end it, and ResourceExhausted with reason SUBSCRIBER_TOO_SLOW (the server
// cut off a reader that fell behind). Every other error is terminal and returned, among them
// Unauthenticated, PermissionDenied, InvalidArgument, NotFound, FailedPrecondition, Unimplemented,
// other ResourceExhausted reasons, and OutOfRange (a WatchEvents cursor past retention: the events
// after it are gone, and the caller must decide how to catch up). Reason returns an error's
// ErrorInfo reason.
//
// # WatchEvents: exactly once, and starting from now
//
// Each reconnect asks for the events after the cursor of the last event yielded, so from a cursor
// every event is yielded exactly once, in log order, across any number of reconnects.
//
// An empty req.After means "from now": the server starts at its position when the first stream
// opens. The guarantee then starts at the first event received. If the stream fails before any
// event has arrived, the client has no cursor and can only ask for "now" again, so events committed
// while it was disconnected are missed (it logs a warning when that happens). Callers that must not
// miss anything start from a cursor they hold, such as the last one they processed and stored. The
// client does not look for a cursor by itself: ListEvents starts at the oldest kept event, and
// walking the whole retention period to reach the end would cost more than the gap it closes.
//
// WatchEvents has no heartbeats, so the idle timeout does not apply to it; a node that vanishes
// without closing the connection is detected by the HTTP/2 pings of the default HTTP client.
//
// # WatchSession
//
// The session is the one of the client's token. After every (re)connect the server sends a fresh
// snapshot first, and the client yields it, so a caller always rebuilds its state from the latest
// snapshot. Heartbeats are not yielded unless WithHeartbeats is given, but any message resets the
// idle timer: a stream silent for the idle timeout (WithIdleTimeout, default 45 s, three heartbeat
// intervals) is taken for dead and reconnected. A session that ended while the client was
// disconnected is reported as the terminal Unauthenticated error the server answers (reason
// SESSION_TERMINATED or SESSION_EXPIRED), not as a terminated message.
package client
