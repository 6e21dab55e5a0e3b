package api

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// Policy serves gatehouse.v1.PolicyService.
type Policy struct {
	svc      *policy.Service
	sessions *session.Service
	live     *events.Live
}

// NewPolicy returns the PolicyService adapter; Check is answered by the session domain, and live
// answers consistency requirements.
func NewPolicy(svc *policy.Service, sessions *session.Service, live *events.Live) *Policy {
	return &Policy{svc: svc, sessions: sessions, live: live}
}

var (
	_ gatehousev1.PolicyServiceServer         = (*Policy)(nil)
	_ gatehousev1connect.PolicyServiceHandler = (*Policy)(nil)
)

// RegisterGRPC registers the service on a gRPC server (or the gateway's transport.LocalConn).
func (h *Policy) RegisterGRPC(s grpc.ServiceRegistrar) { gatehousev1.RegisterPolicyServiceServer(s, h) }

// RegisterConnect returns the Connect handler and its path prefix.
func (h *Policy) RegisterConnect(opts ...connect.HandlerOption) (string, http.Handler) {
	return gatehousev1connect.NewPolicyServiceHandler(h, opts...)
}

// RegisterGateway registers the REST routes, served through conn (a transport.LocalConn).
func (h *Policy) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
	return gatehousev1.RegisterPolicyServiceHandlerClient(ctx, mux, gatehousev1.NewPolicyServiceClient(conn))
}

// CreateSessionPolicy implements PolicyService.CreateSessionPolicy.
func (h *Policy) CreateSessionPolicy(ctx context.Context, req *gatehousev1.CreateSessionPolicyRequest) (*gatehousev1.CreateSessionPolicyResponse, error) {
	p, impact, pos, err := h.svc.Create(ctx, req.Policy, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.CreateSessionPolicyResponse{Policy: p, Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// GetSessionPolicy implements PolicyService.GetSessionPolicy.
func (h *Policy) GetSessionPolicy(ctx context.Context, req *gatehousev1.GetSessionPolicyRequest) (*gatehousev1.GetSessionPolicyResponse, error) {
	p, err := h.svc.Get(ctx, req.PolicyId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GetSessionPolicyResponse{Policy: p}, nil
}

// ListSessionPolicies implements PolicyService.ListSessionPolicies.
func (h *Policy) ListSessionPolicies(ctx context.Context, req *gatehousev1.ListSessionPoliciesRequest) (*gatehousev1.ListSessionPoliciesResponse, error) {
	ps, next, err := h.svc.List(ctx, req.PageSize, req.PageToken)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListSessionPoliciesResponse{Policies: ps, NextPageToken: next}, nil
}

// UpdateSessionPolicy implements PolicyService.UpdateSessionPolicy.
func (h *Policy) UpdateSessionPolicy(ctx context.Context, req *gatehousev1.UpdateSessionPolicyRequest) (*gatehousev1.UpdateSessionPolicyResponse, error) {
	// NOTE: nil means no mask (the fields populated in the policy); an empty mask that was sent
	// (or that grpc-gateway derived from an empty body) names nothing and changes nothing.
	var mask []string
	if req.UpdateMask != nil {
		mask = append([]string{}, req.UpdateMask.Paths...)
	}
	p, impact, pos, err := h.svc.Update(ctx, req.Policy, mask, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.UpdateSessionPolicyResponse{Policy: p, Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// DeleteSessionPolicy implements PolicyService.DeleteSessionPolicy.
func (h *Policy) DeleteSessionPolicy(ctx context.Context, req *gatehousev1.DeleteSessionPolicyRequest) (*gatehousev1.DeleteSessionPolicyResponse, error) {
	impact, pos, err := h.svc.Delete(ctx, req.PolicyId, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.DeleteSessionPolicyResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// ResolveSessionPolicy implements PolicyService.ResolveSessionPolicy.
func (h *Policy) ResolveSessionPolicy(ctx context.Context, req *gatehousev1.ResolveSessionPolicyRequest) (*gatehousev1.ResolveSessionPolicyResponse, error) {
	// NOTE: the policy is resolved from the database, which is at least as fresh as any token:
	// the requirement is only checked.
	if _, err := readDatabase(ctx, h.live, req.Consistency); err != nil {
		return nil, err
	}
	r, err := h.svc.Resolve(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ResolveSessionPolicyResponse{
		MaxSessions:           r.MaxSessions,
		CountedTypes:          r.CountedTypes,
		OnLimit:               r.OnLimit,
		IdleTimeout:           durationpb.New(r.IdleTimeout),
		AbsoluteTimeout:       durationpb.New(r.AbsoluteTimeout),
		OnRoleChange:          r.OnRoleChange,
		MaxSessionsSource:     r.MaxSessionsSource,
		CountedTypesSource:    r.CountedTypesSource,
		OnLimitSource:         r.OnLimitSource,
		IdleTimeoutSource:     r.IdleTimeoutSource,
		AbsoluteTimeoutSource: r.AbsoluteTimeoutSource,
		OnRoleChangeSource:    r.OnRoleChangeSource,
		Limits:                limitConstraints(r.Limits),
	}, nil
}

// limitConstraints converts resolved limits for ResolveSessionPolicy.
func limitConstraints(ls []policy.Limit) []*gatehousev1.LimitConstraint {
	out := make([]*gatehousev1.LimitConstraint, 0, len(ls))
	for _, l := range ls {
		out = append(out, &gatehousev1.LimitConstraint{
			MaxSessions: l.Max, CountedTypes: l.CountedTypes, OnLimit: l.OnLimit, Source: l.Source,
		})
	}
	return out
}

// Check implements PolicyService.Check.
func (h *Policy) Check(ctx context.Context, req *gatehousev1.CheckRequest) (*gatehousev1.CheckResponse, error) {
	fromDB, err := readDatabase(ctx, h.live, req.Consistency)
	if err != nil {
		return nil, err
	}
	c, err := h.sessions.Check(ctx, session.CheckRequest{
		Token: req.GetToken(), UserID: req.GetUserId(), Role: req.GetRole(), GroupID: req.GetGroupId(), FromDatabase: fromDB,
	})
	if err != nil {
		return nil, err
	}
	return &gatehousev1.CheckResponse{
		Allowed: c.Allowed, ImpersonatorUserId: c.ImpersonatorUserID, ImpersonatorSessionId: c.ImpersonatorSessionID,
	}, nil
}
