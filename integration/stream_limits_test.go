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

	// open starts a WatchSession stream of token over gRPC or Connect and returns its first
	// message's error (nil: the snapshot came, the stream is open) and a cancel that ends it.
	open := func(token string, connectFront bool) (error, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
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
				return authzConnectStatus(err), cancel
			}
			return nil, cancel
		}
		st, err := gatehousev1.NewSessionServiceClient(conn).WatchSession(
			metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &gatehousev1.WatchSessionRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		return err, cancel
	}
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || testnode.Reason(err) != transport.TooManyStreamsReason {
			t.Errorf("%s: %v, want RESOURCE_EXHAUSTED %s", what, err, transport.TooManyStreamsReason)
		}
	}

	err, stop1 := open(s1.Token, false)
	if err != nil {
		t.Fatalf("the session's first stream (gRPC): %v", err)
	}
	defer stop1()
	err, stop2 := open(s1.Token, true)
	if err != nil {
		t.Fatalf("the session's second stream (Connect): %v", err)
	}
	defer stop2()
	err, stop := open(s1.Token, false)
	stop()
	refused("the session's third stream", err)

	err, stop3 := open(s2.Token, true)
	if err != nil {
		t.Fatalf("the user's third stream, of another session: %v", err)
	}
	defer stop3()
	err, stop = open(s2.Token, false)
	stop()
	refused("the user's fourth stream", err)

	// A stream that ends gives its slot back, once the node has seen it end.
	// NOTE: polled, with a deadline: the client has no event for the node letting a stream go.
	stop2()
	deadline := time.Now().Add(time.Minute)
	for {
		err, stop := open(s1.Token, false)
		defer stop()
		if err == nil {
			break
		}
		refused("a stream while the ended one is let go", err)
		if time.Now().After(deadline) {
			t.Fatal("the ended stream's slot never came back")
		}
		time.Sleep(10 * time.Millisecond)
	}

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
