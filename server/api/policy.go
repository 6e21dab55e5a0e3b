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
)

// Policy serves gatehouse.v1.PolicyService.
type Policy struct{}

// NewPolicy returns the PolicyService adapter.
func NewPolicy() *Policy { return &Policy{} }

var (
	_ gatehousev1.PolicyServiceServer         = (*Policy)(nil)
	_ gatehousev1connect.PolicyServiceHandler = (*Policy)(nil)
)

// RegisterGRPC registers the service on a gRPC server.
func (h *Policy) RegisterGRPC(s *grpc.Server) { gatehousev1.RegisterPolicyServiceServer(s, h) }

// RegisterConnect returns the Connect handler and its path prefix.
func (h *Policy) RegisterConnect(opts ...connect.HandlerOption) (string, http.Handler) {
	return gatehousev1connect.NewPolicyServiceHandler(h, opts...)
}

// RegisterGateway registers the REST routes, served through conn.
func (h *Policy) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	return gatehousev1.RegisterPolicyServiceHandler(ctx, mux, conn)
}

func notYet(rpc string) error { return errs.Unimplemented("%s is not implemented yet", rpc) }

// CreateSessionPolicy implements PolicyService.CreateSessionPolicy.
func (h *Policy) CreateSessionPolicy(context.Context, *gatehousev1.CreateSessionPolicyRequest) (*gatehousev1.CreateSessionPolicyResponse, error) {
	return nil, notYet("CreateSessionPolicy")
}

// GetSessionPolicy implements PolicyService.GetSessionPolicy.
func (h *Policy) GetSessionPolicy(context.Context, *gatehousev1.GetSessionPolicyRequest) (*gatehousev1.GetSessionPolicyResponse, error) {
	return nil, notYet("GetSessionPolicy")
}

// ListSessionPolicies implements PolicyService.ListSessionPolicies.
func (h *Policy) ListSessionPolicies(context.Context, *gatehousev1.ListSessionPoliciesRequest) (*gatehousev1.ListSessionPoliciesResponse, error) {
	return nil, notYet("ListSessionPolicies")
}

// UpdateSessionPolicy implements PolicyService.UpdateSessionPolicy.
func (h *Policy) UpdateSessionPolicy(context.Context, *gatehousev1.UpdateSessionPolicyRequest) (*gatehousev1.UpdateSessionPolicyResponse, error) {
	return nil, notYet("UpdateSessionPolicy")
}

// DeleteSessionPolicy implements PolicyService.DeleteSessionPolicy.
func (h *Policy) DeleteSessionPolicy(context.Context, *gatehousev1.DeleteSessionPolicyRequest) (*gatehousev1.DeleteSessionPolicyResponse, error) {
	return nil, notYet("DeleteSessionPolicy")
}

// ResolveSessionPolicy implements PolicyService.ResolveSessionPolicy.
func (h *Policy) ResolveSessionPolicy(context.Context, *gatehousev1.ResolveSessionPolicyRequest) (*gatehousev1.ResolveSessionPolicyResponse, error) {
	return nil, notYet("ResolveSessionPolicy")
}

// Check implements PolicyService.Check.
func (h *Policy) Check(context.Context, *gatehousev1.CheckRequest) (*gatehousev1.CheckResponse, error) {
	return nil, notYet("Check")
}
