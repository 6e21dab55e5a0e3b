package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// The live layer end to end (ARCHITECTURE.md sections 5, 6 and 11): a change made through one node
// reaches WatchSession on another at once, over every front; consistency tokens; the log through
// ListEvents and WatchEvents.

// liveWait bounds how long a test waits for a pushed message.
const liveWait = 20 * time.Second

// liveFronts are the fronts a stream can be opened on.
var liveFronts = []string{"grpc", "connect", "grpc-web", "rest"}

// liveMsg is one message of a stream, or its end (err; nil err at the end means OK).
type liveMsg struct {
	resp *gatehousev1.WatchSessionResponse
	err  error
	end  bool
}

// liveWatch opens WatchSession on node n over front with token, and delivers its messages.
func liveWatch(t testing.TB, n *testnode.Node, front, token string) <-chan liveMsg {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := make(chan liveMsg, 64)
	deliver := func(recv func() (*gatehousev1.WatchSessionResponse, error)) {
		defer close(out)
		for {
			m, err := recv()
			if errors.Is(err, io.EOF) {
				out <- liveMsg{end: true}
				return
			}
			if err != nil {
				out <- liveMsg{err: err, end: true}
				return
			}
			out <- liveMsg{resp: m}
		}
	}
	switch front {
	case "grpc":
		conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		stream, err := gatehousev1.NewSessionServiceClient(conn).WatchSession(
			metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &gatehousev1.WatchSessionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		go deliver(stream.Recv)
	case "connect", "grpc-web":
		var opts []connect.ClientOption
		if front == "grpc-web" {
			opts = append(opts, connect.WithGRPCWeb())
		}
		hc := testnode.HTTPClient()
		hc.Transport = liveBearer{token: token, next: hc.Transport}
		c := gatehousev1connect.NewSessionServiceClient(hc, n.BaseURL(), opts...)
		stream, err := c.WatchSession(ctx, &gatehousev1.WatchSessionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		go deliver(func() (*gatehousev1.WatchSessionResponse, error) {
			if stream.Receive() {
				return stream.Msg(), nil
			}
			if err := stream.Err(); err != nil {
				return nil, err
			}
			return nil, io.EOF
		})
	case "rest":
		// NOTE: what `curl -N` sees: newline-delimited JSON, {"result": ...} per message, or
		// {"error": ...} last.
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, n.BaseURL()+"/v1/sessions:watch", nil)
		if err != nil {
			t.Fatal(err)
		}
		hreq.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		lines := bufio.NewScanner(resp.Body)
		lines.Buffer(make([]byte, 1<<20), 1<<20)
		go deliver(func() (*gatehousev1.WatchSessionResponse, error) {
			if !lines.Scan() {
				return nil, io.EOF
			}
			var wrapped struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(lines.Bytes(), &wrapped); err != nil {
				return nil, err
			}
			if wrapped.Error != nil {
				return nil, errors.New("stream error: " + string(wrapped.Error))
			}
			m := &gatehousev1.WatchSessionResponse{}
			if err := protojson.Unmarshal(wrapped.Result, m); err != nil {
				return nil, err
			}
			return m, nil
		})
	default:
		t.Fatalf("unknown front %q", front)
	}
	return out
}

// liveNext returns the next message that is not a heartbeat nor an expiry warning (short
// timeouts fall within --expiry-warning; integration/expiring_test.go tests those), failing the
// test after liveWait.
func liveNext(t testing.TB, ch <-chan liveMsg, what string) liveMsg {
	t.Helper()
	return nextWhere(t, ch, what, func(r *gatehousev1.WatchSessionResponse) bool {
		return r.GetHeartbeat() != nil || r.GetExpiring() != nil
	})
}

// nextWhere returns the next message of ch that skip does not pass over (a stream's end is never
// passed over), failing the test after liveWait.
func nextWhere(t testing.TB, ch <-chan liveMsg, what string, skip func(*gatehousev1.WatchSessionResponse) bool) liveMsg {
	t.Helper()
	deadline := time.After(liveWait)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the stream is closed", what)
			}
			if m.resp != nil && skip(m.resp) {
				continue
			}
			return m
		case <-deadline:
			t.Fatalf("%s: nothing arrived within %s", what, liveWait)
		}
	}
}

// liveWantTerminated expects the terminated message with reason, then the stream's OK end.
func liveWantTerminated(t *testing.T, ch <-chan liveMsg, what string, reason gatehousev1.TerminationReason) {
	t.Helper()
	m := liveNext(t, ch, what)
	if m.resp.GetTerminated() == nil || m.resp.GetTerminated().Reason != reason {
		t.Fatalf("%s: got %v (err %v), want terminated with %v", what, m.resp, m.err, reason)
	}
	if m.resp.ConsistencyToken == "" {
		t.Errorf("%s: terminated carries no consistency token", what)
	}
	if end := liveNext(t, ch, what+" (end)"); !end.end || end.err != nil {
		t.Fatalf("%s: after terminated the stream should end with OK, got %v %v", what, end.resp, end.err)
	}
}

func TestLiveStoryAcrossThreeNodes(t *testing.T) {
	t.Parallel()
	url := testnode.DatabaseURL(t, testnode.Postgres)
	a, b, c := testnode.StartOn(t, url), testnode.StartOn(t, url), testnode.StartOn(t, url)
	ga, gb, gc := a.Client(testnode.GRPC), b.Client(testnode.GRPC), c.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, ga)

	user := testnode.MustCall[gatehousev1.CreateUserResponse](t, ga, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "alice", Password: "alice-password-1"}).User
	group := testnode.MustCall[gatehousev1.CreateGroupResponse](t, ga, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
		&gatehousev1.CreateGroupRequest{Name: "ops"}).Group
	testnode.MustCall[gatehousev1.CreateRoleResponse](t, ga, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "ops_reader"})
	testnode.MustCall[gatehousev1.GrantRoleResponse](t, ga, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
		&gatehousev1.GrantRoleRequest{Role: "ops_reader", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: group.Id}})

	for _, front := range liveFronts {
		t.Run(front, func(t *testing.T) {
			sess := testnode.Login(t, gc, "alice", "alice-password-1")
			ch := liveWatch(t, c, front, sess.Token)
			snap := liveNext(t, ch, "snapshot").resp.GetSnapshot()
			if snap == nil || snap.Session.GetId() != sess.Session.Id || slices.Contains(snap.Roles, "ops_reader") {
				t.Fatalf("first message = %v, want a snapshot of session %s without ops_reader", snap, sess.Session.Id)
			}

			// A workflow on node A adds alice to the group; the watcher on node C hears of it.
			added := testnode.MustCall[gatehousev1.AddGroupMemberResponse](t, ga, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
				&gatehousev1.AddGroupMemberRequest{GroupId: group.Id, UserId: user.Id})
			rc := liveNext(t, ch, "roles_changed").resp.GetRolesChanged()
			if rc == nil || !slices.Equal(rc.Added, []string{"ops_reader"}) || !slices.Contains(rc.Roles, "ops_reader") {
				t.Fatalf("after AddGroupMember: %v, want roles_changed adding ops_reader", rc)
			}
			// Its consistency token, on node B, includes the role.
			v, err := testnode.Call[gatehousev1.ValidateSessionResponse](context.Background(), gb, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
				&gatehousev1.ValidateSessionRequest{Token: sess.Token, Consistency: &gatehousev1.Consistency{
					Requirement: &gatehousev1.Consistency_AtLeastAsFresh{AtLeastAsFresh: added.ConsistencyToken}}})
			if err != nil || !slices.Contains(v.Roles, "ops_reader") {
				t.Fatalf("ValidateSession on node B at least as fresh as the change: %v, %v", v.GetRoles(), err)
			}
			testnode.MustCall[gatehousev1.RemoveGroupMemberResponse](t, gb, gatehousev1.IdentityService_RemoveGroupMember_FullMethodName, admin,
				&gatehousev1.RemoveGroupMemberRequest{GroupId: group.Id, UserId: user.Id})
			rc = liveNext(t, ch, "roles_changed (removed)").resp.GetRolesChanged()
			if rc == nil || !slices.Equal(rc.Removed, []string{"ops_reader"}) {
				t.Fatalf("after RemoveGroupMember: %v, want roles_changed removing ops_reader", rc)
			}

			// An administrator on node A ends the session: the watcher is told, and no node
			// validates the token once the ending is acknowledged.
			testnode.MustCall[gatehousev1.TerminateSessionResponse](t, ga, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
				&gatehousev1.TerminateSessionRequest{SessionId: sess.Session.Id, Note: "bye"})
			for name, n := range map[string]testnode.Invoker{"A": ga, "B": gb, "C": gc} {
				if _, err := validate(n, sess.Token); testnode.Reason(err) != "SESSION_TERMINATED" {
					t.Errorf("node %s validates a session whose ending was acknowledged: %v", name, err)
				}
			}
			liveWantTerminated(t, ch, "terminated", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN)
		})
	}
}

// TestLiveSessionEndings: every way a session ends reaches its watcher on another node.
func TestLiveSessionEndings(t *testing.T) {
	t.Parallel()
	url := testnode.DatabaseURL(t, testnode.Postgres)
	a, b := testnode.StartOn(t, url), testnode.StartOn(t, url)
	ga, gb := a.Client(testnode.GRPC), b.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, ga)
	newUser := func(t *testing.T, name string) *gatehousev1.User {
		return testnode.MustCall[gatehousev1.CreateUserResponse](t, ga, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
			&gatehousev1.CreateUserRequest{Username: name, Password: name + "-password"}).User
	}
	policy := func(t *testing.T, p *gatehousev1.SessionPolicy) {
		testnode.MustCall[gatehousev1.CreateSessionPolicyResponse](t, ga, gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName, admin,
			&gatehousev1.CreateSessionPolicyRequest{Policy: p})
	}
	cases := []struct {
		name   string
		reason gatehousev1.TerminationReason
		setup  func(t *testing.T, u *gatehousev1.User)
		end    func(t *testing.T, u *gatehousev1.User, watched *gatehousev1.CreateSessionResponse)
	}{
		{"limit", gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT,
			func(t *testing.T, u *gatehousev1.User) {
				policy(t, &gatehousev1.SessionPolicy{Scope: &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: u.Id}},
					MaxSessions: ptr(int32(1)), OnLimit: gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST})
			},
			func(t *testing.T, u *gatehousev1.User, _ *gatehousev1.CreateSessionResponse) {
				testnode.Login(t, ga, u.Username, u.Username+"-password")
			}},
		{"role change", gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE,
			func(t *testing.T, u *gatehousev1.User) {
				testnode.MustCall[gatehousev1.CreateRoleResponse](t, ga, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
					&gatehousev1.CreateRoleRequest{Name: "secret"})
				policy(t, &gatehousev1.SessionPolicy{Scope: &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: "secret"}},
					OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE})
			},
			func(t *testing.T, u *gatehousev1.User, _ *gatehousev1.CreateSessionResponse) {
				testnode.MustCall[gatehousev1.GrantRoleResponse](t, ga, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
					&gatehousev1.GrantRoleRequest{Role: "secret", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
			}},
		{"disabled", gatehousev1.TerminationReason_TERMINATION_REASON_USER_DISABLED, nil,
			func(t *testing.T, u *gatehousev1.User, _ *gatehousev1.CreateSessionResponse) {
				testnode.MustCall[gatehousev1.UpdateUserResponse](t, ga, gatehousev1.IdentityService_UpdateUser_FullMethodName, admin,
					&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: u.Id, Disabled: true}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}}})
			}},
		{"password", gatehousev1.TerminationReason_TERMINATION_REASON_PASSWORD_CHANGED, nil,
			func(t *testing.T, u *gatehousev1.User, _ *gatehousev1.CreateSessionResponse) {
				testnode.MustCall[gatehousev1.SetPasswordResponse](t, ga, gatehousev1.IdentityService_SetPassword_FullMethodName, admin,
					&gatehousev1.SetPasswordRequest{UserId: u.Id, NewPassword: "another-password-2"})
			}},
		{"logout", gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT, nil,
			func(t *testing.T, _ *gatehousev1.User, watched *gatehousev1.CreateSessionResponse) {
				testnode.MustCall[gatehousev1.LogoutResponse](t, ga, gatehousev1.SessionService_Logout_FullMethodName, watched.Token, &gatehousev1.LogoutRequest{})
			}},
		{"idle timeout", gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT,
			func(t *testing.T, u *gatehousev1.User) {
				policy(t, &gatehousev1.SessionPolicy{Scope: &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: u.Id}},
					IdleTimeout: durationpb.New(time.Second)})
			}, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUser(t, "ending"+string(rune('a'+i)))
			if tc.setup != nil {
				tc.setup(t, u)
			}
			watched := testnode.Login(t, gb, u.Username, u.Username+"-password")
			ch := liveWatch(t, b, "grpc", watched.Token)
			if liveNext(t, ch, "snapshot").resp.GetSnapshot() == nil {
				t.Fatal("the first message is not a snapshot")
			}
			if tc.end != nil {
				tc.end(t, u, watched)
			}
			// NOTE: for the idle timeout nothing is done: the stream itself is not activity, so
			// the sweeper ends the session.
			liveWantTerminated(t, ch, tc.name, tc.reason)
		})
	}
}

// TestLiveWatchEndedSession: watching an ended session fails as ValidateSession does.
func TestLiveWatchEndedSession(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.SQLite)
	g := n.Client(testnode.GRPC)
	s := testnode.Login(t, g, "admin", testnode.AdminPassword)
	testnode.MustCall[gatehousev1.LogoutResponse](t, g, gatehousev1.SessionService_Logout_FullMethodName, s.Token, &gatehousev1.LogoutRequest{})
	m := liveNext(t, liveWatch(t, n, "grpc", s.Token), "the refusal")
	if status.Code(m.err) != codes.Unauthenticated {
		t.Fatalf("watching an ended session: %v %v, want UNAUTHENTICATED", m.resp, m.err)
	}
}

// liveBearer adds a bearer token to every request.
type liveBearer struct {
	token string
	next  http.RoundTripper
}

func (b liveBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func ptr[T any](v T) *T { return &v }

// TestLiveWatchEventsBadCursor: WatchEvents refuses a cursor that is not one (at and past the
// field's bound, and in multi-byte characters), of another database, and past the retention.
func TestLiveWatchEventsBadCursor(t *testing.T) {
	t.Parallel()
	n := testnode.StartWith(t, server.Config{Database: testnode.DatabaseURL(t, testnode.SQLite), EventRetention: time.Millisecond, PruneInterval: 20 * time.Millisecond})
	other := testnode.Start(t, testnode.SQLite)
	g := n.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, g)
	first := testnode.MustCall[gatehousev1.ListEventsResponse](t, g, gatehousev1.SessionService_ListEvents_FullMethodName, admin,
		&gatehousev1.ListEventsRequest{PageSize: 1}).Events[0].Cursor
	foreign := testnode.MustCall[gatehousev1.ListEventsResponse](t, other.Client(testnode.GRPC), gatehousev1.SessionService_ListEvents_FullMethodName,
		testnode.AdminToken(t, other.Client(testnode.GRPC)), &gatehousev1.ListEventsRequest{PageSize: 1}).Events[0].Cursor
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	watch := func(after string) error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+admin), liveWait)
		defer cancel()
		stream, err := gatehousev1.NewSessionServiceClient(conn).WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: after})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	for _, c := range []struct {
		what, after, reason string
		code                codes.Code
	}{
		{"256 multi-byte characters", strings.Repeat("é", 256), "INVALID_CURSOR", codes.InvalidArgument},
		{"257 characters", strings.Repeat("a", 257), "INVALID_ARGUMENT", codes.InvalidArgument},
		{"another database's cursor", foreign, "FOREIGN_CURSOR", codes.InvalidArgument},
	} {
		if err := watch(c.after); status.Code(err) != c.code || testnode.Reason(err) != c.reason {
			t.Errorf("%s: %v (reason %q), want %v %s", c.what, err, testnode.Reason(err), c.code, c.reason)
		}
	}
	// The sweeper prunes events older than a millisecond (keeping the newest), so the first
	// event's cursor goes out of range once the next prune has run.
	deadline := time.Now().Add(liveWait)
	for {
		testnode.MustCall[gatehousev1.CreateRoleResponse](t, g, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
			&gatehousev1.CreateRoleRequest{Name: fmt.Sprintf("r%d", time.Now().UnixNano())})
		_, lerr := testnode.Call[gatehousev1.ListEventsResponse](context.Background(), g, gatehousev1.SessionService_ListEvents_FullMethodName, admin,
			&gatehousev1.ListEventsRequest{After: first})
		if status.Code(lerr) == codes.OutOfRange {
			break
		}
		if lerr != nil || time.Now().After(deadline) {
			t.Fatalf("ListEvents after a pruned cursor: %v, want OUT_OF_RANGE in time", lerr)
		}
		rounds := n.SweepRounds()
		waitFor(t, "a sweeper round", func() bool { return n.SweepRounds() > rounds })
	}
	if err := watch(first); status.Code(err) != codes.OutOfRange {
		t.Fatalf("WatchEvents after a pruned cursor: %v, want OUT_OF_RANGE", err)
	}
}

// TestLiveWatchEventsEndsWithItsCallersStanding: a WatchEvents stream ends when its caller loses
// the role that let it watch, and when the caller's session ends.
func TestLiveWatchEventsEndsWithItsCallersStanding(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.SQLite)
	g := n.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, g)
	u := testnode.MustCall[gatehousev1.CreateUserResponse](t, g, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "watcher", Password: "watcher-password"}).User
	grant := &gatehousev1.GrantRoleRequest{Role: "gatehouse.auditor", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}}
	testnode.MustCall[gatehousev1.GrantRoleResponse](t, g, gatehousev1.IdentityService_GrantRole_FullMethodName, admin, grant)
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	open := func(token string) <-chan error {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token), liveWait)
		t.Cleanup(cancel)
		stream, err := gatehousev1.NewSessionServiceClient(conn).WatchEvents(ctx, &gatehousev1.WatchEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		done, got := make(chan error, 1), make(chan struct{}, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					done <- err
					return
				}
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}()
		// NOTE: a first event received proves the stream is open, and its guard in place,
		// before the caller's standing changes.
		// A stream with no cursor starts when the server subscribes it, so changes are made until
		// one arrives.
		deadline := time.After(liveWait)
		for {
			testnode.MustCall[gatehousev1.CreateRoleResponse](t, g, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: fmt.Sprintf("r%d", time.Now().UnixNano())})
			select {
			case <-got:
				return done
			case err := <-done:
				t.Fatalf("the stream ended before its first event: %v", err)
			case <-deadline:
				t.Fatal("no first event")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	first := open
	s1 := testnode.Login(t, g, "watcher", "watcher-password")
	done := first(s1.Token)
	testnode.MustCall[gatehousev1.RevokeRoleResponse](t, g, gatehousev1.IdentityService_RevokeRole_FullMethodName, admin,
		&gatehousev1.RevokeRoleRequest{Role: grant.Role, Principal: &gatehousev1.RevokeRoleRequest_UserId{UserId: u.Id}})
	if err := <-done; status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after the auditor role was revoked the stream ended with %v, want PERMISSION_DENIED", err)
	}
	testnode.MustCall[gatehousev1.GrantRoleResponse](t, g, gatehousev1.IdentityService_GrantRole_FullMethodName, admin, grant)
	s2 := testnode.Login(t, g, "watcher", "watcher-password")
	done = first(s2.Token)
	testnode.MustCall[gatehousev1.TerminateSessionResponse](t, g, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
		&gatehousev1.TerminateSessionRequest{SessionId: s2.Session.Id})
	if err := <-done; status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after the caller's session ended the stream ended with %v, want UNAUTHENTICATED", err)
	}
}
