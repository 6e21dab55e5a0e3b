package integration_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/server/transport"
)

// TestStreamLimits: the streams open at once are bounded per session and per user, counted
// together over native gRPC and Connect, with RESOURCE_EXHAUSTED TOO_MANY_STREAMS past the bound
// and the slot given back when a stream ends; streams without a session (the health Watch) are
// bounded too.
func TestStreamLimits(t *testing.T) {
	t.Parallel()
	n := testnode.StartWith(t, server.Config{
		Database:             testnode.DatabaseURL(t, testnode.SQLite),
		MaxStreamsPerSession: 2,
		MaxStreamsPerUser:    3,
	})
	g := n.Client(testnode.GRPC)
	conn := dialGRPC(t, n.GRPCAddr()).conn
	s1 := testnode.Login(t, g, "admin", testnode.AdminPassword)
	s2 := testnode.Login(t, g, "admin", testnode.AdminPassword)

	// open starts a WatchSession stream of token over gRPC or Connect and reads its first message:
	// err is nil when the snapshot came (the stream is open).
	open := func(token string, connectFront bool) watched {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		if connectFront {
			c := connect.NewClient[gatehousev1.WatchSessionRequest, gatehousev1.WatchSessionResponse](testnode.HTTPClient(),
				n.BaseURL()+gatehousev1connect.SessionServiceWatchSessionProcedure)
			r := connect.NewRequest(&gatehousev1.WatchSessionRequest{})
			r.Header().Set("Authorization", "Bearer "+token)
			st, err := c.CallServerStream(ctx, r)
			if err == nil && !st.Receive() {
				err = st.Err()
			}
			if err != nil {
				return watched{err: authzConnectStatus(err)}
			}
			return watched{ended: func() {
				for st.Receive() {
				}
			}}
		}
		st, err := gatehousev1.NewSessionServiceClient(conn).WatchSession(
			metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &gatehousev1.WatchSessionRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		return watched{err: err, ended: func() {
			for {
				if _, err := st.Recv(); err != nil {
					return
				}
			}
		}}
	}
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || testnode.Reason(err) != transport.TooManyStreamsReason {
			t.Errorf("%s: %v, want RESOURCE_EXHAUSTED %s", what, err, transport.TooManyStreamsReason)
		}
	}
	mustOpen := func(what, token string, connectFront bool) watched {
		t.Helper()
		w := open(token, connectFront)
		if w.err != nil {
			t.Fatalf("%s: %v", what, w.err)
		}
		return w
	}

	first := mustOpen("the session's first stream (gRPC)", s1.Token, false)
	second := mustOpen("the session's second stream (Connect)", s1.Token, true)
	refused("the session's third stream", open(s1.Token, false).err)
	mustOpen("the user's third stream, of another session", s2.Token, true)
	refused("the user's fourth stream", open(s2.Token, false).err)

	// Streams that end give their places back. The node lets a stream go before its end reaches
	// the client, so once the client has seen both ends the user has room for one more.
	testnode.MustCall[gatehousev1.TerminateSessionResponse](t, g, gatehousev1.SessionService_TerminateSession_FullMethodName,
		s2.Token, &gatehousev1.TerminateSessionRequest{SessionId: s1.Session.Id})
	first.ended()
	second.ended()
	mustOpen("a stream once the ended session's were let go", s2.Token, false)

	// Health watches without a session, from one address.
	h := healthpb.NewHealthClient(conn)
	var watches []grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range transport.MaxAnonymousStreamsPerAddress + 1 {
		w, err := h.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		if i < transport.MaxAnonymousStreamsPerAddress {
			if err != nil {
				t.Fatalf("health watch %d: %v", i+1, err)
			}
			watches = append(watches, w)
			continue
		}
		refused("a health watch past the bound", err)
	}
}

// watched is a stream TestStreamLimits opened: the error of its first message, and ended, which
// returns once the stream has ended.
type watched struct {
	err   error
	ended func()
}
