// Package api adapts the domain to the wire: one struct per service, each serving native gRPC,
// Connect (and gRPC-Web) and the REST gateway from the same methods. A handler unpacks the request,
// calls one domain method and builds the response; it never touches the database.
//
// The mutations that take validate_only (AIP-163) pass it to the domain as store.ModeOf: a preview
// runs the change in a transaction that is rolled back and answers its ChangeImpact with an empty
// consistency token, since it wrote nothing that a read could wait for.
package api

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/store"
)

// Identity serves gatehouse.v1.IdentityService.
type Identity struct {
	svc  *identity.Service
	live *events.Live
}

// NewIdentity returns the IdentityService adapter; live answers consistency requirements.
func NewIdentity(svc *identity.Service, live *events.Live) *Identity {
	return &Identity{svc: svc, live: live}
}

var (
	_ gatehousev1.IdentityServiceServer         = (*Identity)(nil)
	_ gatehousev1connect.IdentityServiceHandler = (*Identity)(nil)
)

// RegisterGRPC registers the service on a gRPC server (or the gateway's transport.LocalConn).
func (h *Identity) RegisterGRPC(s grpc.ServiceRegistrar) {
	gatehousev1.RegisterIdentityServiceServer(s, h)
}

// RegisterConnect returns the Connect handler and its path prefix.
func (h *Identity) RegisterConnect(opts ...connect.HandlerOption) (string, http.Handler) {
	return gatehousev1connect.NewIdentityServiceHandler(h, opts...)
}

// RegisterGateway registers the REST routes, served through conn (a transport.LocalConn).
func (h *Identity) RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
	return gatehousev1.RegisterIdentityServiceHandlerClient(ctx, mux, gatehousev1.NewIdentityServiceClient(conn))
}

// CreateUser implements IdentityService.CreateUser.
func (h *Identity) CreateUser(ctx context.Context, req *gatehousev1.CreateUserRequest) (*gatehousev1.CreateUserResponse, error) {
	u, pos, err := h.svc.CreateUser(ctx, identity.NewUser{
		Username: req.Username, Email: req.Email, DisplayName: req.DisplayName, Password: req.Password, Disabled: req.Disabled,
	})
	if err != nil {
		return nil, err
	}
	return &gatehousev1.CreateUserResponse{User: u, ConsistencyToken: pos.Cursor()}, nil
}

// GetUser implements IdentityService.GetUser.
func (h *Identity) GetUser(ctx context.Context, req *gatehousev1.GetUserRequest) (*gatehousev1.GetUserResponse, error) {
	u, err := h.svc.GetUser(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GetUserResponse{User: u}, nil
}

// LookupUser implements IdentityService.LookupUser.
func (h *Identity) LookupUser(ctx context.Context, req *gatehousev1.LookupUserRequest) (*gatehousev1.LookupUserResponse, error) {
	u, err := h.svc.LookupUser(ctx, req.Username)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.LookupUserResponse{User: u}, nil
}

// ListUsers implements IdentityService.ListUsers.
func (h *Identity) ListUsers(ctx context.Context, req *gatehousev1.ListUsersRequest) (*gatehousev1.ListUsersResponse, error) {
	users, next, err := h.svc.ListUsers(ctx, identity.UserFilter{
		PageSize: req.PageSize, PageToken: req.PageToken, UsernamePrefix: req.UsernamePrefix, GroupID: req.GroupId, Disabled: req.Disabled,
	})
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListUsersResponse{Users: users, NextPageToken: next}, nil
}

// UpdateUser implements IdentityService.UpdateUser.
func (h *Identity) UpdateUser(ctx context.Context, req *gatehousev1.UpdateUserRequest) (*gatehousev1.UpdateUserResponse, error) {
	var mask []string // nil: no mask, update the fields req.User populates (AIP-134)
	if req.UpdateMask != nil {
		mask = append([]string{}, req.UpdateMask.Paths...)
	}
	u, pos, err := h.svc.UpdateUser(ctx, req.User, mask)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.UpdateUserResponse{User: u, ConsistencyToken: pos.Cursor()}, nil
}

// DeleteUser implements IdentityService.DeleteUser.
func (h *Identity) DeleteUser(ctx context.Context, req *gatehousev1.DeleteUserRequest) (*gatehousev1.DeleteUserResponse, error) {
	pos, err := h.svc.DeleteUser(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.DeleteUserResponse{ConsistencyToken: pos.Cursor()}, nil
}

// SetPassword implements IdentityService.SetPassword.
func (h *Identity) SetPassword(ctx context.Context, req *gatehousev1.SetPasswordRequest) (*gatehousev1.SetPasswordResponse, error) {
	pos, err := h.svc.SetPassword(ctx, req.UserId, req.NewPassword, req.CurrentPassword)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.SetPasswordResponse{ConsistencyToken: pos.Cursor()}, nil
}

// CreateGroup implements IdentityService.CreateGroup.
func (h *Identity) CreateGroup(ctx context.Context, req *gatehousev1.CreateGroupRequest) (*gatehousev1.CreateGroupResponse, error) {
	g, pos, err := h.svc.CreateGroup(ctx, req.Name, req.Description)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.CreateGroupResponse{Group: g, ConsistencyToken: pos.Cursor()}, nil
}

// GetGroup implements IdentityService.GetGroup.
func (h *Identity) GetGroup(ctx context.Context, req *gatehousev1.GetGroupRequest) (*gatehousev1.GetGroupResponse, error) {
	g, err := h.svc.GetGroup(ctx, req.GroupId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GetGroupResponse{Group: g}, nil
}

// ListGroups implements IdentityService.ListGroups.
func (h *Identity) ListGroups(ctx context.Context, req *gatehousev1.ListGroupsRequest) (*gatehousev1.ListGroupsResponse, error) {
	groups, next, err := h.svc.ListGroups(ctx, req.PageSize, req.PageToken, req.NamePrefix)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListGroupsResponse{Groups: groups, NextPageToken: next}, nil
}

// DeleteGroup implements IdentityService.DeleteGroup.
func (h *Identity) DeleteGroup(ctx context.Context, req *gatehousev1.DeleteGroupRequest) (*gatehousev1.DeleteGroupResponse, error) {
	impact, pos, err := h.svc.DeleteGroup(ctx, req.GroupId, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.DeleteGroupResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// AddGroupMember implements IdentityService.AddGroupMember.
func (h *Identity) AddGroupMember(ctx context.Context, req *gatehousev1.AddGroupMemberRequest) (*gatehousev1.AddGroupMemberResponse, error) {
	impact, pos, err := h.svc.AddGroupMember(ctx, req.GroupId, req.UserId, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.AddGroupMemberResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// RemoveGroupMember implements IdentityService.RemoveGroupMember.
func (h *Identity) RemoveGroupMember(ctx context.Context, req *gatehousev1.RemoveGroupMemberRequest) (*gatehousev1.RemoveGroupMemberResponse, error) {
	impact, pos, err := h.svc.RemoveGroupMember(ctx, req.GroupId, req.UserId, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.RemoveGroupMemberResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// ListGroupMembers implements IdentityService.ListGroupMembers.
func (h *Identity) ListGroupMembers(ctx context.Context, req *gatehousev1.ListGroupMembersRequest) (*gatehousev1.ListGroupMembersResponse, error) {
	users, next, err := h.svc.ListGroupMembers(ctx, req.GroupId, req.PageSize, req.PageToken)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListGroupMembersResponse{Users: users, NextPageToken: next}, nil
}

// ListUserGroups implements IdentityService.ListUserGroups.
func (h *Identity) ListUserGroups(ctx context.Context, req *gatehousev1.ListUserGroupsRequest) (*gatehousev1.ListUserGroupsResponse, error) {
	groups, err := h.svc.ListUserGroups(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListUserGroupsResponse{Groups: groups}, nil
}

// CreateRole implements IdentityService.CreateRole.
func (h *Identity) CreateRole(ctx context.Context, req *gatehousev1.CreateRoleRequest) (*gatehousev1.CreateRoleResponse, error) {
	r, pos, err := h.svc.CreateRole(ctx, req.Name, req.Description, req.Contains)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.CreateRoleResponse{Role: r, ConsistencyToken: pos.Cursor()}, nil
}

// GetRole implements IdentityService.GetRole.
func (h *Identity) GetRole(ctx context.Context, req *gatehousev1.GetRoleRequest) (*gatehousev1.GetRoleResponse, error) {
	r, err := h.svc.GetRole(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GetRoleResponse{Role: r}, nil
}

// ListRoles implements IdentityService.ListRoles.
func (h *Identity) ListRoles(ctx context.Context, req *gatehousev1.ListRolesRequest) (*gatehousev1.ListRolesResponse, error) {
	roles, next, err := h.svc.ListRoles(ctx, req.PageSize, req.PageToken)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.ListRolesResponse{Roles: roles, NextPageToken: next}, nil
}

// DeleteRole implements IdentityService.DeleteRole.
func (h *Identity) DeleteRole(ctx context.Context, req *gatehousev1.DeleteRoleRequest) (*gatehousev1.DeleteRoleResponse, error) {
	impact, pos, err := h.svc.DeleteRole(ctx, req.Name, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.DeleteRoleResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// AddContainedRole implements IdentityService.AddContainedRole.
func (h *Identity) AddContainedRole(ctx context.Context, req *gatehousev1.AddContainedRoleRequest) (*gatehousev1.AddContainedRoleResponse, error) {
	impact, pos, err := h.svc.AddContainedRole(ctx, req.Role, req.ContainedRole, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.AddContainedRoleResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// RemoveContainedRole implements IdentityService.RemoveContainedRole.
func (h *Identity) RemoveContainedRole(ctx context.Context, req *gatehousev1.RemoveContainedRoleRequest) (*gatehousev1.RemoveContainedRoleResponse, error) {
	impact, pos, err := h.svc.RemoveContainedRole(ctx, req.Role, req.ContainedRole, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.RemoveContainedRoleResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// GrantRole implements IdentityService.GrantRole.
func (h *Identity) GrantRole(ctx context.Context, req *gatehousev1.GrantRoleRequest) (*gatehousev1.GrantRoleResponse, error) {
	impact, pos, err := h.svc.GrantRole(ctx, req.Role, identity.Principal{UserID: req.GetUserId(), GroupID: req.GetGroupId()}, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GrantRoleResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// RevokeRole implements IdentityService.RevokeRole.
func (h *Identity) RevokeRole(ctx context.Context, req *gatehousev1.RevokeRoleRequest) (*gatehousev1.RevokeRoleResponse, error) {
	impact, pos, err := h.svc.RevokeRole(ctx, req.Role, identity.Principal{UserID: req.GetUserId(), GroupID: req.GetGroupId()}, store.ModeOf(req.ValidateOnly))
	if err != nil {
		return nil, err
	}
	return &gatehousev1.RevokeRoleResponse{Impact: impact, ConsistencyToken: pos.Cursor()}, nil
}

// GetEffectiveRoles implements IdentityService.GetEffectiveRoles.
func (h *Identity) GetEffectiveRoles(ctx context.Context, req *gatehousev1.GetEffectiveRolesRequest) (*gatehousev1.GetEffectiveRolesResponse, error) {
	// NOTE: effective roles with their provenance are read from the database, which is at least
	// as fresh as any token: the requirement is only checked.
	if _, err := readDatabase(ctx, h.live, req.Consistency); err != nil {
		return nil, err
	}
	roles, err := h.svc.GetEffectiveRoles(ctx, req.UserId)
	if err != nil {
		return nil, err
	}
	return &gatehousev1.GetEffectiveRolesResponse{Roles: roles}, nil
}
