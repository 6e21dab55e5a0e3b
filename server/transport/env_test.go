package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Fixed identities of the fake authenticator. The tokens are distinctive so that the tests can
// check that they never reach the log.
const (
	tokenAdmin  = "good"        // identity and session admin
	tokenReader = "reader-3f9a" // authenticated, no roles
	tokenDown   = "down-c41e"   // the session store is unavailable
	tokenStale  = "stale-77b0"  // unknown session

	adminID     = "0190a6c4-0000-7000-8000-000000000001"
	readerID    = "0190a6c4-0000-7000-8000-000000000002"
	missingID   = "0190a6c4-0000-7000-8000-0000000000ff"
	sessionID   = "0190a6c4-0000-7000-8000-0000000000aa"
	gwSecret    = "test-gateway-secret"
	panicText   = "secret panic text 5d2e"
	sqlText     = "pq: SELECT password_hash FROM users"
	passwordTxt = "hunter2-correct-horse"
)

// fakeAuthenticator knows a few fixed tokens.
type fakeAuthenticator struct{}

func (fakeAuthenticator) Authenticate(_ context.Context, token string) (*auth.Principal, error) {
	switch token {
	case tokenAdmin:
		return &auth.Principal{UserID: adminID, Username: "admin", SessionID: sessionID,
			Roles: []string{auth.RoleIdentityAdmin, auth.RoleSessionAdmin}}, nil
	case tokenReader:
		return &auth.Principal{UserID: readerID, Username: "reader", SessionID: sessionID}, nil
	case tokenDown:
		return nil, errs.Unavailable("SESSION_STORE_UNAVAILABLE", "the session store is unavailable")
	default:
		return nil, errs.Unauthenticated("SESSION_NOT_FOUND", "the session does not exist")
	}
}

// rules is the test rule set. ListUsers deliberately has no rule.
func rules(method string) (auth.Rule, bool) {
	const id = "/gatehouse.v1.IdentityService/"
	switch method {
	case id + "CreateUser":
		return auth.Rule{Allow: func(p *auth.Principal, _ any) bool { return p.Has(auth.RoleIdentityAdmin) }}, true
	case id + "GetUser":
		return auth.Rule{Allow: func(p *auth.Principal, req any) bool {
			return p.UserID == req.(*gatehousev1.GetUserRequest).GetUserId() ||
				p.HasAny(auth.RoleIdentityAdmin, auth.RoleAuditor)
		}}, true
	case id + "GetEffectiveRoles":
		return auth.Rule{Allow: func(p *auth.Principal, req any) bool {
			return p.UserID == req.(*gatehousev1.GetEffectiveRolesRequest).GetUserId() ||
				p.HasAny(auth.RoleIdentityAdmin, auth.RoleAuditor)
		}}, true
	case id + "LookupUser":
		return auth.Rule{Public: true}, true
	case id + "UpdateUser", id + "DeleteUser", id + "SetPassword":
		return auth.Rule{}, true
	case "/gatehouse.v1.SessionService/WatchEvents":
		return auth.Rule{Allow: func(p *auth.Principal, _ any) bool {
			return p.HasAny(auth.RoleSessionAdmin, auth.RoleAuditor)
		}}, true
	}
	return auth.Rule{}, false
}

// fakeIdentity implements both gatehousev1.IdentityServiceServer and, thanks to the connect
// "simple" option, gatehousev1connect.IdentityServiceHandler.
type fakeIdentity struct {
	gatehousev1.UnimplementedIdentityServiceServer
}

var (
	_ gatehousev1.IdentityServiceServer         = (*fakeIdentity)(nil)
	_ gatehousev1connect.IdentityServiceHandler = (*fakeIdentity)(nil)
)

func (*fakeIdentity) CreateUser(_ context.Context, req *gatehousev1.CreateUserRequest) (*gatehousev1.CreateUserResponse, error) {
	if req.GetUsername() == "taken" {
		return nil, errs.AlreadyExists("USERNAME_TAKEN", "username %q is taken", req.GetUsername())
	}
	return &gatehousev1.CreateUserResponse{User: &gatehousev1.User{Id: missingID, Username: req.GetUsername()}}, nil
}

func (*fakeIdentity) GetUser(_ context.Context, req *gatehousev1.GetUserRequest) (*gatehousev1.GetUserResponse, error) {
	if req.GetUserId() == missingID {
		return nil, errs.NotFound("USER_NOT_FOUND", "user %s does not exist", req.GetUserId()).
			WithMetadata("user_id", req.GetUserId())
	}
	return &gatehousev1.GetUserResponse{User: &gatehousev1.User{Id: req.GetUserId()}}, nil
}

// LookupUser echoes what the transport put into the context: the caller's username (or
// "anonymous") as id, the client IP as display name and the client's user agent as email.
func (*fakeIdentity) LookupUser(ctx context.Context, req *gatehousev1.LookupUserRequest) (*gatehousev1.LookupUserResponse, error) {
	who := "anonymous"
	if p := auth.PrincipalFrom(ctx); p != nil {
		who = p.Username
	}
	c := auth.ClientFrom(ctx)
	return &gatehousev1.LookupUserResponse{User: &gatehousev1.User{
		Id: who, Username: req.GetUsername(), DisplayName: c.IP, Email: c.UserAgent,
	}}, nil
}

func (*fakeIdentity) ListUsers(context.Context, *gatehousev1.ListUsersRequest) (*gatehousev1.ListUsersResponse, error) {
	return &gatehousev1.ListUsersResponse{}, nil // never reached: the method has no rule
}

func (*fakeIdentity) UpdateUser(context.Context, *gatehousev1.UpdateUserRequest) (*gatehousev1.UpdateUserResponse, error) {
	return nil, errs.Internal(errors.New(sqlText))
}

func (*fakeIdentity) DeleteUser(context.Context, *gatehousev1.DeleteUserRequest) (*gatehousev1.DeleteUserResponse, error) {
	panic(panicText)
}

func (*fakeIdentity) SetPassword(context.Context, *gatehousev1.SetPasswordRequest) (*gatehousev1.SetPasswordResponse, error) {
	return &gatehousev1.SetPasswordResponse{}, nil
}

func (*fakeIdentity) CreateGroup(context.Context, *gatehousev1.CreateGroupRequest) (*gatehousev1.CreateGroupResponse, error) {
	return nil, errs.Unimplemented("CreateGroup is not in this fake")
}

func (*fakeIdentity) GetGroup(context.Context, *gatehousev1.GetGroupRequest) (*gatehousev1.GetGroupResponse, error) {
	return nil, errs.Unimplemented("GetGroup is not in this fake")
}

func (*fakeIdentity) ListGroups(context.Context, *gatehousev1.ListGroupsRequest) (*gatehousev1.ListGroupsResponse, error) {
	return nil, errs.Unimplemented("ListGroups is not in this fake")
}

func (*fakeIdentity) DeleteGroup(context.Context, *gatehousev1.DeleteGroupRequest) (*gatehousev1.DeleteGroupResponse, error) {
	return nil, errs.Unimplemented("DeleteGroup is not in this fake")
}

func (*fakeIdentity) AddGroupMember(context.Context, *gatehousev1.AddGroupMemberRequest) (*gatehousev1.AddGroupMemberResponse, error) {
	return nil, errs.Unimplemented("AddGroupMember is not in this fake")
}

func (*fakeIdentity) RemoveGroupMember(context.Context, *gatehousev1.RemoveGroupMemberRequest) (*gatehousev1.RemoveGroupMemberResponse, error) {
	return nil, errs.Unimplemented("RemoveGroupMember is not in this fake")
}

func (*fakeIdentity) ListGroupMembers(context.Context, *gatehousev1.ListGroupMembersRequest) (*gatehousev1.ListGroupMembersResponse, error) {
	return nil, errs.Unimplemented("ListGroupMembers is not in this fake")
}

func (*fakeIdentity) ListUserGroups(context.Context, *gatehousev1.ListUserGroupsRequest) (*gatehousev1.ListUserGroupsResponse, error) {
	return nil, errs.Unimplemented("ListUserGroups is not in this fake")
}

func (*fakeIdentity) CreateRole(context.Context, *gatehousev1.CreateRoleRequest) (*gatehousev1.CreateRoleResponse, error) {
	return nil, errs.Unimplemented("CreateRole is not in this fake")
}

func (*fakeIdentity) GetRole(context.Context, *gatehousev1.GetRoleRequest) (*gatehousev1.GetRoleResponse, error) {
	return nil, errs.Unimplemented("GetRole is not in this fake")
}

func (*fakeIdentity) ListRoles(context.Context, *gatehousev1.ListRolesRequest) (*gatehousev1.ListRolesResponse, error) {
	return nil, errs.Unimplemented("ListRoles is not in this fake")
}

func (*fakeIdentity) DeleteRole(context.Context, *gatehousev1.DeleteRoleRequest) (*gatehousev1.DeleteRoleResponse, error) {
	return nil, errs.Unimplemented("DeleteRole is not in this fake")
}

func (*fakeIdentity) AddContainedRole(context.Context, *gatehousev1.AddContainedRoleRequest) (*gatehousev1.AddContainedRoleResponse, error) {
	return nil, errs.Unimplemented("AddContainedRole is not in this fake")
}

func (*fakeIdentity) RemoveContainedRole(context.Context, *gatehousev1.RemoveContainedRoleRequest) (*gatehousev1.RemoveContainedRoleResponse, error) {
	return nil, errs.Unimplemented("RemoveContainedRole is not in this fake")
}

func (*fakeIdentity) GrantRole(context.Context, *gatehousev1.GrantRoleRequest) (*gatehousev1.GrantRoleResponse, error) {
	return nil, errs.Unimplemented("GrantRole is not in this fake")
}

func (*fakeIdentity) RevokeRole(context.Context, *gatehousev1.RevokeRoleRequest) (*gatehousev1.RevokeRoleResponse, error) {
	return nil, errs.Unimplemented("RevokeRole is not in this fake")
}

func (*fakeIdentity) GetEffectiveRoles(context.Context, *gatehousev1.GetEffectiveRolesRequest) (*gatehousev1.GetEffectiveRolesResponse, error) {
	return nil, errs.Unimplemented("GetEffectiveRoles is not in this fake")
}

// watchEvents is the one streaming body shared by the grpc and connect session fakes: two events
// for a caller the transport authenticated, a panic for user_id == missingID.
func watchEvents(ctx context.Context, req *gatehousev1.WatchEventsRequest, send func(*gatehousev1.WatchEventsResponse) error) error {
	if auth.PrincipalFrom(ctx) == nil {
		return errs.Internal(errors.New("stream context has no principal"))
	}
	if req.GetUserId() == missingID {
		panic(panicText)
	}
	for i := range 2 {
		if err := send(&gatehousev1.WatchEventsResponse{Event: &gatehousev1.Event{Cursor: fmt.Sprint(i)}}); err != nil {
			return err
		}
	}
	return nil
}

type fakeSessionGRPC struct {
	gatehousev1.UnimplementedSessionServiceServer
}

func (*fakeSessionGRPC) WatchEvents(req *gatehousev1.WatchEventsRequest, stream grpc.ServerStreamingServer[gatehousev1.WatchEventsResponse]) error {
	return watchEvents(stream.Context(), req, stream.Send)
}

type fakeSessionConnect struct {
	gatehousev1connect.UnimplementedSessionServiceHandler
}

func (*fakeSessionConnect) WatchEvents(ctx context.Context, req *gatehousev1.WatchEventsRequest, stream *connect.ServerStream[gatehousev1.WatchEventsResponse]) error {
	return watchEvents(ctx, req, stream.Send)
}

// syncBuffer is a log sink safe for the concurrent server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is one node's worth of servers: a grpc server on a real loopback listener and the connect
// handlers on an httptest server speaking HTTP/1.1 and unencrypted HTTP/2.
type env struct {
	opts       transport.Options
	logs       *syncBuffer
	grpcAddr   string
	connectURL string
	httpClient *http.Client
}

func newEnv(t *testing.T, secret string) *env {
	t.Helper()
	logs := &syncBuffer{}
	e := &env{
		logs: logs,
		opts: transport.Options{
			Log:           slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Authenticator: fakeAuthenticator{},
			Rules:         rules,
			GatewaySecret: secret,
		},
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(transport.GRPCServerOptions(e.opts)...)
	gatehousev1.RegisterIdentityServiceServer(gs, &fakeIdentity{})
	gatehousev1.RegisterSessionServiceServer(gs, &fakeSessionGRPC{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	e.grpcAddr = lis.Addr().String()

	mux := http.NewServeMux()
	mux.Handle(gatehousev1connect.NewIdentityServiceHandler(&fakeIdentity{}, transport.ConnectHandlerOptions(e.opts)...))
	mux.Handle(gatehousev1connect.NewSessionServiceHandler(&fakeSessionConnect{}, transport.ConnectHandlerOptions(e.opts)...))
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	e.connectURL = hs.URL

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	e.httpClient = &http.Client{Transport: tr}
	return e
}

// client is one way of calling the services.
type client struct {
	name     string
	identity identityClient
	watch    func(ctx context.Context, req *gatehousev1.WatchEventsRequest) (received int, err error)
}

// identityClient is the part of the identity API the tests call; the connect "simple" client
// has exactly these methods, and grpcIdentity adapts the grpc client.
type identityClient interface {
	CreateUser(context.Context, *gatehousev1.CreateUserRequest) (*gatehousev1.CreateUserResponse, error)
	GetUser(context.Context, *gatehousev1.GetUserRequest) (*gatehousev1.GetUserResponse, error)
	LookupUser(context.Context, *gatehousev1.LookupUserRequest) (*gatehousev1.LookupUserResponse, error)
	ListUsers(context.Context, *gatehousev1.ListUsersRequest) (*gatehousev1.ListUsersResponse, error)
	UpdateUser(context.Context, *gatehousev1.UpdateUserRequest) (*gatehousev1.UpdateUserResponse, error)
	DeleteUser(context.Context, *gatehousev1.DeleteUserRequest) (*gatehousev1.DeleteUserResponse, error)
	SetPassword(context.Context, *gatehousev1.SetPasswordRequest) (*gatehousev1.SetPasswordResponse, error)
}

type grpcIdentity struct {
	c gatehousev1.IdentityServiceClient
}

func (g grpcIdentity) CreateUser(ctx context.Context, r *gatehousev1.CreateUserRequest) (*gatehousev1.CreateUserResponse, error) {
	return g.c.CreateUser(ctx, r)
}

func (g grpcIdentity) GetUser(ctx context.Context, r *gatehousev1.GetUserRequest) (*gatehousev1.GetUserResponse, error) {
	return g.c.GetUser(ctx, r)
}

func (g grpcIdentity) LookupUser(ctx context.Context, r *gatehousev1.LookupUserRequest) (*gatehousev1.LookupUserResponse, error) {
	return g.c.LookupUser(ctx, r)
}

func (g grpcIdentity) ListUsers(ctx context.Context, r *gatehousev1.ListUsersRequest) (*gatehousev1.ListUsersResponse, error) {
	return g.c.ListUsers(ctx, r)
}

func (g grpcIdentity) UpdateUser(ctx context.Context, r *gatehousev1.UpdateUserRequest) (*gatehousev1.UpdateUserResponse, error) {
	return g.c.UpdateUser(ctx, r)
}

func (g grpcIdentity) DeleteUser(ctx context.Context, r *gatehousev1.DeleteUserRequest) (*gatehousev1.DeleteUserResponse, error) {
	return g.c.DeleteUser(ctx, r)
}

func (g grpcIdentity) SetPassword(ctx context.Context, r *gatehousev1.SetPasswordRequest) (*gatehousev1.SetPasswordResponse, error) {
	return g.c.SetPassword(ctx, r)
}

// clients returns a grpc-go client of the grpc server and connect-go clients of the connect
// handlers speaking the Connect, gRPC and gRPC-Web protocols. Headers are set the same way for
// all of them: as outgoing grpc metadata in the context, which headersFromMetadata copies into
// the connect requests.
func (e *env) clients(t *testing.T) []client {
	t.Helper()
	conn, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	gi := gatehousev1.NewIdentityServiceClient(conn)
	gsess := gatehousev1.NewSessionServiceClient(conn)
	out := []client{{
		name:     "grpc",
		identity: grpcIdentity{gi},
		watch: func(ctx context.Context, req *gatehousev1.WatchEventsRequest) (int, error) {
			stream, err := gsess.WatchEvents(ctx, req)
			if err != nil {
				return 0, err
			}
			n := 0
			for {
				if _, err := stream.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return n, nil
					}
					return n, err
				}
				n++
			}
		},
	}}
	for _, proto := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"connect-grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"connect-grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		opts := append([]connect.ClientOption{connect.WithInterceptors(headersFromMetadata{})}, proto.opts...)
		ci := gatehousev1connect.NewIdentityServiceClient(e.httpClient, e.connectURL, opts...)
		cs := gatehousev1connect.NewSessionServiceClient(e.httpClient, e.connectURL, opts...)
		out = append(out, client{
			name:     proto.name,
			identity: ci,
			watch: func(ctx context.Context, req *gatehousev1.WatchEventsRequest) (int, error) {
				stream, err := cs.WatchEvents(ctx, req)
				if err != nil {
					return 0, err
				}
				defer stream.Close()
				n := 0
				for stream.Receive() {
					n++
				}
				return n, stream.Err()
			},
		})
	}
	return out
}

// headersFromMetadata copies the outgoing grpc metadata of the context into connect request
// headers.
type headersFromMetadata struct{}

func copyMetadata(ctx context.Context, h http.Header) {
	md, _ := metadata.FromOutgoingContext(ctx)
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

func (headersFromMetadata) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		copyMetadata(ctx, req.Header())
		return next(ctx, req)
	}
}

func (headersFromMetadata) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		copyMetadata(ctx, conn.RequestHeader())
		return conn
	}
}

func (headersFromMetadata) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
