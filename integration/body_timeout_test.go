package integration_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// TestSlowRequestBodies: a client that stops sending its request body has its connection closed
// once --request-body-timeout passes (here 1 s), over REST and Connect, instead of holding it for
// as long as it likes; and a stream whose request was read lives on past that time, over HTTP/1.1
// (where a connection-wide read timeout would end it) and HTTP/2, as its heartbeats show.
func TestSlowRequestBodies(t *testing.T) {
	t.Parallel()
	n := testnode.StartWith(t, server.Config{
		Database:           testnode.DatabaseURL(t, testnode.SQLite),
		RequestBodyTimeout: time.Second,
		HeartbeatInterval:  300 * time.Millisecond,
	})

	for _, path := range []string{"/v1/sessions", gatehousev1connect.SessionServiceCreateSessionProcedure} {
		conn, err := net.Dial("tcp", n.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", path); err != nil {
			t.Fatal(err)
		}
		// NOTE: the test's own bound, far past the node's; the read ends when the node closes.
		if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, conn); err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				t.Errorf("POST %s with a body that never arrives: the connection is still open after 30 s", path)
			}
		}
	}

	s := testnode.Login(t, n.Client(testnode.GRPC), "admin", testnode.AdminPassword)
	for name, hc := range map[string]*http.Client{"HTTP/1.1": {Transport: &http.Transport{}}, "HTTP/2": testnode.HTTPClient()} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := connect.NewClient[gatehousev1.WatchSessionRequest, gatehousev1.WatchSessionResponse](hc,
			n.BaseURL()+gatehousev1connect.SessionServiceWatchSessionProcedure, connect.WithProtoJSON())
		r := connect.NewRequest(&gatehousev1.WatchSessionRequest{})
		r.Header().Set("Authorization", "Bearer "+s.Token)
		stream, err := c.CallServerStream(ctx, r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// Five heartbeats 300 ms apart come after the body's 1 s.
		for beats := 0; beats < 5; {
			if !stream.Receive() {
				t.Fatalf("%s: the stream ended after %d heartbeats: %v", name, beats, stream.Err())
			}
			if stream.Msg().GetHeartbeat() != nil {
				beats++
			}
		}
		_ = stream.Close()
	}
}
