package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/gatehouse/gatehouse/client"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
)

// TestMain fails the package when a test leaves a goroutine behind: every stream, handler and
// connection must have ended.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "tok"

// eventLog is the log every fake node serves; "" is before its first event.
var eventLog = []string{"c1", "c2", "c3", "c4", "c5", "c6"}

// logAfter returns the cursors of eventLog after after.
func logAfter(after string) []string {
	return eventLog[slices.Index(eventLog, after)+1:]
}

// call is one stream or unary call a fake node received.
type call struct {
	node, after, auth string
}

// fakeNode is a scripted SessionService on a real h2c listener.
type fakeNode struct {
	gatehousev1connect.UnimplementedSessionServiceHandler
	name    string
	calls   chan<- call
	srv     *httptest.Server
	events  func(ctx context.Context, req *gatehousev1.WatchEventsRequest, s *connect.ServerStream[gatehousev1.WatchEventsResponse]) error
	session func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error
}

func startNode(t *testing.T, name string, calls chan<- call) *fakeNode {
	t.Helper()
	n := &fakeNode{name: name, calls: calls}
	mux := http.NewServeMux()
	mux.Handle(gatehousev1connect.NewSessionServiceHandler(n))
	n.srv = httptest.NewUnstartedServer(mux)
	n.srv.Config.Protocols = new(http.Protocols)
	n.srv.Config.Protocols.SetHTTP1(true)
	n.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	n.srv.Start()
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNode) record(ctx context.Context, after string) {
	auth := ""
	if info, ok := connect.CallInfoForHandlerContext(ctx); ok {
		auth = info.RequestHeader().Get("Authorization")
	}
	select {
	case n.calls <- call{node: n.name, after: after, auth: auth}:
	case <-ctx.Done():
	}
}

func (n *fakeNode) WatchEvents(ctx context.Context, req *gatehousev1.WatchEventsRequest, s *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
	n.record(ctx, req.GetAfter())
	if n.events == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("no script"))
	}
	return n.events(ctx, req, s)
}

func (n *fakeNode) WatchSession(ctx context.Context, _ *gatehousev1.WatchSessionRequest, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
	n.record(ctx, "")
	if n.session == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("no script"))
	}
	return n.session(ctx, s)
}

func (n *fakeNode) ListEvents(ctx context.Context, req *gatehousev1.ListEventsRequest) (*gatehousev1.ListEventsResponse, error) {
	n.record(ctx, req.GetAfter())
	return &gatehousev1.ListEventsResponse{}, nil
}

// sendEvents sends the events of cursors, then returns nil.
func sendEvents(s *connect.ServerStream[gatehousev1.WatchEventsResponse], cursors []string) error {
	for _, c := range cursors {
		if err := s.Send(&gatehousev1.WatchEventsResponse{Event: &gatehousev1.Event{Cursor: c}}); err != nil {
			return err
		}
	}
	return nil
}

// serveLog sends the rest of the log and then keeps the stream open until the client leaves.
func serveLog(ctx context.Context, req *gatehousev1.WatchEventsRequest, s *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
	if err := sendEvents(s, logAfter(req.GetAfter())); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func withReason(code connect.Code, reason string) error {
	err := connect.NewError(code, fmt.Errorf("scripted %s", reason))
	if d, derr := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: reason, Domain: "gatehouse.dev"}); derr == nil {
		err.AddDetail(d)
	}
	return err
}

var protocols = []struct {
	name string
	opts []client.Option
}{
	{"connect", nil},
	{"grpc", []client.Option{client.WithGRPC()}},
}

func newClient(t *testing.T, urls []string, opts ...client.Option) *client.Client {
	t.Helper()
	base := []client.Option{client.WithToken(token), client.WithBackoff(time.Millisecond, 4*time.Millisecond)}
	c, err := client.New(urls, append(base, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// takeCalls waits for n calls, failing the test if they do not come, and checks that no more
// are waiting.
func takeCalls(t *testing.T, ctx context.Context, calls <-chan call, n int) []call {
	t.Helper()
	var got []call
	for range n {
		select {
		case c := <-calls:
			got = append(got, c)
		case <-ctx.Done():
			t.Fatalf("got calls %v, waiting for %d", got, n)
		}
	}
	if len(calls) > 0 {
		t.Errorf("unexpected further call %v", <-calls)
	}
	return got
}

func TestWatchEventsResumesOnNextNode(t *testing.T) {
	cut := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	tests := []struct {
		name  string
		start string
		sends int                         // events node 1 sends before failing
		fail  func(context.Context) error // what node 1 does then
		cutAt string                      // the client-side cut of node 1's connections on this event
	}{
		{name: "unavailable", sends: 3, fail: func(context.Context) error {
			return connect.NewError(connect.CodeUnavailable, errors.New("node shutting down"))
		}},
		{name: "subscriber too slow", sends: 3, fail: func(context.Context) error {
			return withReason(connect.CodeResourceExhausted, client.ReasonSubscriberTooSlow)
		}},
		{name: "internal", sends: 1, fail: func(context.Context) error {
			return connect.NewError(connect.CodeInternal, errors.New("stream reset"))
		}},
		{name: "aborted", sends: 2, fail: func(context.Context) error {
			return connect.NewError(connect.CodeAborted, errors.New("aborted"))
		}},
		{name: "early OK", sends: 3, fail: func(context.Context) error { return nil }},
		{name: "connection closed", sends: 3, fail: cut, cutAt: "c3"},
		{name: "from a cursor", start: "c1", sends: 2, fail: func(context.Context) error {
			return connect.NewError(connect.CodeUnavailable, errors.New("gone"))
		}},
		{name: "before the first event", sends: 0, fail: func(context.Context) error {
			return connect.NewError(connect.CodeUnavailable, errors.New("gone"))
		}},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				ctx := testContext(t)
				calls := make(chan call, 16)
				n1, n2 := startNode(t, "n1", calls), startNode(t, "n2", calls)
				n1.events = func(ctx context.Context, req *gatehousev1.WatchEventsRequest, s *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
					if err := sendEvents(s, logAfter(req.GetAfter())[:tt.sends]); err != nil {
						return err
					}
					return tt.fail(ctx)
				}
				n2.events = serveLog
				c := newClient(t, []string{n1.srv.URL, n2.srv.URL}, p.opts...)

				var got []string
				for ev, err := range c.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: tt.start}) {
					if err != nil {
						t.Fatalf("after %v: %v", got, err)
					}
					got = append(got, ev.GetCursor())
					if ev.GetCursor() == tt.cutAt {
						n1.srv.CloseClientConnections()
					}
					if ev.GetCursor() == eventLog[len(eventLog)-1] {
						break
					}
				}
				if diff := cmp.Diff(logAfter(tt.start), got); diff != "" {
					t.Errorf("delivered (-want +got):\n%s", diff)
				}
				resumeAt := tt.start
				if tt.sends > 0 {
					resumeAt = logAfter(tt.start)[tt.sends-1]
				}
				want := []call{{"n1", tt.start, "Bearer " + token}, {"n2", resumeAt, "Bearer " + token}}
				if diff := cmp.Diff(want, takeCalls(t, ctx, calls, 2), cmp.AllowUnexported(call{})); diff != "" {
					t.Errorf("calls (-want +got):\n%s", diff)
				}

				// Plain calls go to the node the watch moved to, with the token.
				if _, err := c.Session().ListEvents(ctx, &gatehousev1.ListEventsRequest{}); err != nil {
					t.Fatalf("ListEvents: %v", err)
				}
				if diff := cmp.Diff([]call{{"n2", "", "Bearer " + token}}, takeCalls(t, ctx, calls, 1), cmp.AllowUnexported(call{})); diff != "" {
					t.Errorf("unary call (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestWatchEventsSkipsDeadNode(t *testing.T) {
	ctx := testContext(t)
	calls := make(chan call, 16)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	n2 := startNode(t, "n2", calls)
	n2.events = serveLog
	c := newClient(t, []string{dead.URL, n2.srv.URL})

	var got []string
	for ev, err := range c.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: "c2"}) {
		if err != nil {
			t.Fatal(err)
		}
		if got = append(got, ev.GetCursor()); len(got) == 4 {
			break
		}
	}
	if diff := cmp.Diff([]string{"c3", "c4", "c5", "c6"}, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]call{{"n2", "c2", "Bearer " + token}}, takeCalls(t, ctx, calls, 1), cmp.AllowUnexported(call{})); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestWatchEventsTerminalErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   connect.Code
		wantReason string
	}{
		{"unauthenticated", withReason(connect.CodeUnauthenticated, "SESSION_EXPIRED"), connect.CodeUnauthenticated, "SESSION_EXPIRED"},
		{"permission denied", connect.NewError(connect.CodePermissionDenied, errors.New("no")), connect.CodePermissionDenied, ""},
		{"invalid argument", connect.NewError(connect.CodeInvalidArgument, errors.New("bad")), connect.CodeInvalidArgument, ""},
		{"cursor past retention", withReason(connect.CodeOutOfRange, "CURSOR_EXPIRED"), connect.CodeOutOfRange, "CURSOR_EXPIRED"},
		{"not found", connect.NewError(connect.CodeNotFound, errors.New("none")), connect.CodeNotFound, ""},
		{"failed precondition", connect.NewError(connect.CodeFailedPrecondition, errors.New("no")), connect.CodeFailedPrecondition, ""},
		{"unimplemented", connect.NewError(connect.CodeUnimplemented, errors.New("later")), connect.CodeUnimplemented, ""},
		{"other resource exhausted", withReason(connect.CodeResourceExhausted, "CONCURRENT_SESSION_LIMIT"), connect.CodeResourceExhausted, "CONCURRENT_SESSION_LIMIT"},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				ctx := testContext(t)
				calls := make(chan call, 16)
				n1, n2 := startNode(t, "n1", calls), startNode(t, "n2", calls)
				n1.events = func(context.Context, *gatehousev1.WatchEventsRequest, *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
					return tt.err
				}
				n2.events = serveLog
				c := newClient(t, []string{n1.srv.URL, n2.srv.URL}, p.opts...)

				var errs []error
				for ev, err := range c.WatchEvents(ctx, nil) {
					if err == nil {
						t.Fatalf("delivered %v, want an error", ev)
					}
					errs = append(errs, err)
				}
				if len(errs) != 1 {
					t.Fatalf("got errors %v, want one", errs)
				}
				if got := connect.CodeOf(errs[0]); got != tt.wantCode {
					t.Errorf("code = %v, want %v (%v)", got, tt.wantCode, errs[0])
				}
				if got := client.Reason(errs[0]); got != tt.wantReason {
					t.Errorf("Reason = %q, want %q", got, tt.wantReason)
				}
				takeCalls(t, ctx, calls, 1)
			})
		}
	}
}

func TestWatchEventsContextCancelled(t *testing.T) {
	ctx := testContext(t)
	calls := make(chan call, 16)
	n1 := startNode(t, "n1", calls)
	n1.events = serveLog
	c := newClient(t, []string{n1.srv.URL})

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last error
	for ev, err := range c.WatchEvents(wctx, nil) {
		if err != nil {
			last = err
			continue
		}
		if ev.GetCursor() == "c2" {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", last)
	}
	takeCalls(t, ctx, calls, 1)
}

// TestBreakReleasesStream checks that leaving the loop ends the server's stream; TestMain checks
// that no goroutine is left.
func TestBreakReleasesStream(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			calls := make(chan call, 16)
			released := make(chan struct{})
			n1 := startNode(t, "n1", calls)
			n1.events = func(ctx context.Context, req *gatehousev1.WatchEventsRequest, s *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
				defer close(released)
				return serveLog(ctx, req, s)
			}
			c := newClient(t, []string{n1.srv.URL}, p.opts...)
			for _, err := range c.WatchEvents(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				break
			}
			select {
			case <-released:
			case <-ctx.Done():
				t.Fatal("the server's stream is still open after the loop ended")
			}
		})
	}
}

func snapshot(id string) *gatehousev1.WatchSessionResponse {
	return &gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Snapshot_{
		Snapshot: &gatehousev1.WatchSessionResponse_Snapshot{Session: &gatehousev1.Session{Id: id}}}}
}

var (
	heartbeat = &gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Heartbeat_{
		Heartbeat: &gatehousev1.WatchSessionResponse_Heartbeat{}}}
	rolesChanged = &gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_RolesChanged_{
		RolesChanged: &gatehousev1.WatchSessionResponse_RolesChanged{Roles: []string{"r"}}}}
	terminated = &gatehousev1.WatchSessionResponse{Event: &gatehousev1.WatchSessionResponse_Terminated_{
		Terminated: &gatehousev1.WatchSessionResponse_Terminated{Reason: gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT}}}
)

// kind names a WatchSession message for comparisons.
func kind(m *gatehousev1.WatchSessionResponse) string {
	switch m.GetEvent().(type) {
	case *gatehousev1.WatchSessionResponse_Snapshot_:
		return "snapshot " + m.GetSnapshot().GetSession().GetId()
	case *gatehousev1.WatchSessionResponse_RolesChanged_:
		return "roles"
	case *gatehousev1.WatchSessionResponse_Terminated_:
		return "terminated"
	case *gatehousev1.WatchSessionResponse_Heartbeat_:
		return "heartbeat"
	default:
		return "?"
	}
}

func sendSession(s *connect.ServerStream[gatehousev1.WatchSessionResponse], msgs ...*gatehousev1.WatchSessionResponse) error {
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func TestWatchSession(t *testing.T) {
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("node down"))
	tests := []struct {
		name       string
		heartbeats bool
		n1, n2     func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error
		want       []string
		wantCalls  int
	}{
		{
			name: "terminated ends the watch",
			n1: func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
				if err := sendSession(s, snapshot("n1"), heartbeat, rolesChanged, terminated); err != nil {
					return err
				}
				// The client must stop by itself, not wait for the end of the stream.
				<-ctx.Done()
				return unavailable
			},
			want:      []string{"snapshot n1", "roles", "terminated"},
			wantCalls: 1,
		},
		{
			name:       "heartbeats delivered",
			heartbeats: true,
			n1: func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
				return sendSession(s, snapshot("n1"), heartbeat, terminated)
			},
			want:      []string{"snapshot n1", "heartbeat", "terminated"},
			wantCalls: 1,
		},
		{
			name: "reconnect delivers the fresh snapshot",
			n1: func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
				if err := sendSession(s, snapshot("n1"), rolesChanged); err != nil {
					return err
				}
				return unavailable
			},
			n2: func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
				return sendSession(s, snapshot("n2"), terminated)
			},
			want:      []string{"snapshot n1", "roles", "snapshot n2", "terminated"},
			wantCalls: 2,
		},
	}
	for _, p := range protocols {
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				ctx := testContext(t)
				calls := make(chan call, 16)
				n1, n2 := startNode(t, "n1", calls), startNode(t, "n2", calls)
				n1.session, n2.session = tt.n1, tt.n2
				opts := slices.Clone(p.opts)
				if tt.heartbeats {
					opts = append(opts, client.WithHeartbeats())
				}
				c := newClient(t, []string{n1.srv.URL, n2.srv.URL}, opts...)

				var got []string
				for m, err := range c.WatchSession(ctx) {
					if err != nil {
						t.Fatalf("after %v: %v", got, err)
					}
					got = append(got, kind(m))
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("delivered (-want +got):\n%s", diff)
				}
				for _, c := range takeCalls(t, ctx, calls, tt.wantCalls) {
					if c.auth != "Bearer "+token {
						t.Errorf("%s got authorization %q", c.node, c.auth)
					}
				}
			})
		}
	}
}

func TestWatchSessionIdleTimeout(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testContext(t)
			calls := make(chan call, 64)
			released := make(chan struct{}, 1)
			n1, n2 := startNode(t, "n1", calls), startNode(t, "n2", calls)
			silent := func(name string) func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
				return func(ctx context.Context, s *connect.ServerStream[gatehousev1.WatchSessionResponse]) error {
					if err := s.Send(snapshot(name)); err != nil {
						return err
					}
					<-ctx.Done() // no heartbeats: only the client's idle timeout ends this
					if name == "n1" {
						select {
						case released <- struct{}{}:
						default:
						}
					}
					return ctx.Err()
				}
			}
			n1.session, n2.session = silent("n1"), silent("n2")
			opts := append(slices.Clone(p.opts), client.WithIdleTimeout(50*time.Millisecond))
			c := newClient(t, []string{n1.srv.URL, n2.srv.URL}, opts...)

			var got []string
			for m, err := range c.WatchSession(ctx) {
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				// NOTE: a slow machine may time out on node 2 as well and come back to node 1; what
				// matters is that the silent stream is given up and node 2's snapshot arrives.
				if got = append(got, kind(m)); kind(m) == "snapshot n2" {
					break
				}
			}
			if got[0] != "snapshot n1" {
				t.Errorf("first message %q, want node 1's snapshot", got[0])
			}
			select {
			case <-released:
			case <-ctx.Done():
				t.Fatal("node 1's silent stream was not closed")
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name  string
		nodes []string
		opts  []client.Option
	}{
		{"no nodes", nil, nil},
		{"not http", []string{"ftp://node:21"}, nil},
		{"no scheme", []string{"node:8080"}, nil},
		{"no host", []string{"http://"}, nil},
		{"zero backoff", []string{"http://node"}, []client.Option{client.WithBackoff(0, time.Second)}},
		{"max below min", []string{"http://node"}, []client.Option{client.WithBackoff(time.Second, time.Millisecond)}},
		{"negative idle timeout", []string{"http://node"}, []client.Option{client.WithIdleTimeout(-time.Second)}},
		{"nil logger", []string{"http://node"}, []client.Option{client.WithLogger(nil)}},
		{"token with line break", []string{"http://node"}, []client.Option{client.WithToken("a\nb")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := client.New(tt.nodes, tt.opts...); err == nil {
				c.CloseIdleConnections()
				t.Error("New succeeded, want an error")
			}
		})
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"not a connect error", errors.New("x"), ""},
		{"no details", connect.NewError(connect.CodeInternal, errors.New("x")), ""},
		{"error info", withReason(connect.CodeResourceExhausted, "CONCURRENT_SESSION_LIMIT"), "CONCURRENT_SESSION_LIMIT"},
		{"wrapped", fmt.Errorf("ctx: %w", withReason(connect.CodeResourceExhausted, "SUBSCRIBER_TOO_SLOW")), "SUBSCRIBER_TOO_SLOW"},
	}
	for _, tt := range tests {
		if got := client.Reason(tt.err); got != tt.want {
			t.Errorf("%s: Reason = %q, want %q", tt.name, got, tt.want)
		}
	}
}
