package api

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/session"
)

// Session serves gatehouse.v1.SessionService over Connect and the REST gateway; its gRPC twin
// (grpcSession) differs only in the streaming methods' signatures.
type Session struct {
	svc  *session.Service
	live *events.Live
}

// NewSession returns the SessionService adapter; live serves the event log and the consistency
// requirements.
func NewSession(svc *session.Service, live *events.Live) *Session {
	return &Session{svc: svc, live: live}
}

// grpcSession is the native gRPC face of Session.
type grpcSession struct{ *Session }

var (
	_ gatehousev1.SessionServiceServer         = grpcSession{}
	_ gatehousev1connect.SessionServiceHandler = (*Session)(nil)
)

// RegisterGRPC registers the service on a gRPC server (or the gateway's transport.LocalConn).
func (h *Session) RegisterGRPC(s grpc.ServiceRegistrar) {
	gatehousev1.RegisterSessionServiceServer(s, grpcSession{h})
}

// RegisterConnect returns the Connect handler and its path prefix.
func (h *Session) RegisterConnect(opts ...connect.HandlerOption) (string, http.Handler) {
	return gatehousev1connect.NewSessionServiceHandler(h, opts...)
}

// RegisterGateway registers the REST routes, served through conn (a transport.LocalConn).
func (h *Session) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
	return gatehousev1.RegisterSessionServiceHandlerClient(ctx, mux, gatehousev1.NewSessionServiceClient(conn))
}

// CreateSession implements SessionService.CreateSession.
func (h *Session) CreateSession(ctx context.Context, req *gatehousev1.CreateSessionRequest) (*gatehousev1.CreateSessionResponse, error) {
	var c *session.Created
	var err error
	switch cred := req.Credential.(type) {
	case *gatehousev1.CreateSessionRequest_Password:
		pw := cred.Password
		c, err = h.svc.CreateWithPassword(ctx, session.Login{Username: pw.Username, Password: pw.Password, Type: req.Type, Client: req.Client})
	case *gatehousev1.CreateSessionRequest_Trusted:
		c, err = h.svc.CreateTrusted(ctx, cred.Trusted.GetUsername(), req.Type, req.Client)
	case *gatehousev1.CreateSessionRequest_Impersonate:
		c, err = h.svc.CreateImpersonation(ctx, session.Impersonation{
			Username: cred.Impersonate.GetUsername(), Reason: cred.Impersonate.GetReason(), Type: req.Type, Client: req.Client,
		})
	default:
		// NOTE: protovalidate requires the credential; this answers a credential added to the
		// proto but not here.
		err = errs.InvalidArgument("INVALID_ARGUMENT", "credential must be set",
			errs.FieldViolation{Field: "credential", Description: "must be one of password, trusted, impersonate"})
	}
	if err != nil {
		return nil, err
	}
	return &gatehousev1.CreateSessionResponse{
		Session: c.Session, Token: c.Token, User: c.User, Roles: c.Roles,
		EvictedSessionIds: c.Evicted, ConsistencyToken: c.Pos.Cursor(),
	}, nil
}

// ValidateSession implements SessionService.ValidateSession.
func (h *Session) ValidateSession(ctx context.Context, req *gatehousev1.ValidateSessionRequest) (*gatehousev1.ValidateSessionResponse, error) {
	fromDB, err := readDatabase(ctx, h.live, req.Consistency)
	if err != nil {
		return nil, err
	}
	v, err := h.svc.Validate(ctx, req.Token, fromDB)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ValidateSessionResponse{Session: v.Session, User: v.User, Roles: v.Roles}, nil
}

// GetSession implements SessionService.GetSession.
func (h *Session) GetSession(ctx context.Context, req *gatehousev1.GetSessionRequest) (*gatehousev1.GetSessionResponse, error) {
	sess, err := h.svc.Get(ctx, req.SessionId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GetSessionResponse{Session: sess}, nil
}

// ListSessions implements SessionService.ListSessions.
func (h *Session) ListSessions(ctx context.Context, req *gatehousev1.ListSessionsRequest) (*gatehousev1.ListSessionsResponse, error) {
	sessions, next, err := h.svc.List(ctx, session.ListFilter{
		UserID: req.UserId, Types: req.Types, IncludeInactive: req.IncludeInactive, PageSize: req.PageSize, PageToken: req.PageToken,
	})
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListSessionsResponse{Sessions: sessions, NextPageToken: next}, nil
}

// TerminateSession implements SessionService.TerminateSession.
func (h *Session) TerminateSession(ctx context.Context, req *gatehousev1.TerminateSessionRequest) (*gatehousev1.TerminateSessionResponse, error) {
	sess, pos, err := h.svc.Terminate(ctx, req.SessionId, req.Note)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.TerminateSessionResponse{Session: sess, ConsistencyToken: pos.Cursor()}, nil
}

// TerminateUserSessions implements SessionService.TerminateUserSessions.
func (h *Session) TerminateUserSessions(ctx context.Context, req *gatehousev1.TerminateUserSessionsRequest) (*gatehousev1.TerminateUserSessionsResponse, error) {
	ids, pos, err := h.svc.TerminateUser(ctx, req.UserId, req.ExceptSessionId, req.Note)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.TerminateUserSessionsResponse{TerminatedSessionIds: ids, ConsistencyToken: pos.Cursor()}, nil
}

// Logout implements SessionService.Logout.
func (h *Session) Logout(ctx context.Context, _ *gatehousev1.LogoutRequest) (*gatehousev1.LogoutResponse, error) {
	pos, err := h.svc.Logout(ctx)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.LogoutResponse{ConsistencyToken: pos.Cursor()}, nil
}
