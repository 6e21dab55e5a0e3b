package api

import (
	"strings"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
)

// public needs no authentication.
var public = auth.Rule{Public: true}

// authenticated lets any authenticated caller through.
var authenticated = auth.Rule{}

// roles lets through callers holding any of rs (gatehouse.admin holds every role).
func roles(rs ...string) auth.Rule {
	return auth.Rule{Allow: func(p *auth.Principal, _ any) bool { return p.HasAny(rs...) }}
}

// selfOr lets through the user the request names, and callers holding any of rs.
func selfOr(userID func(req any) string, rs ...string) auth.Rule {
	return auth.Rule{Allow: func(p *auth.Principal, req any) bool {
		return p.UserID == userID(req) || p.HasAny(rs...)
	}}
}

type userIDGetter interface{ GetUserId() string }

// requestUserID returns the user_id field of a request.
func requestUserID(req any) string {
	if r, ok := req.(userIDGetter); ok {
		return r.GetUserId()
	}
	return ""
}

const (
	identityAdmin = auth.RoleIdentityAdmin
	sessionAdmin  = auth.RoleSessionAdmin
	policyAdmin   = auth.RolePolicyAdmin
	auditor       = auth.RoleAuditor
	introspector  = auth.RoleIntrospector
	sessionIssuer = auth.RoleSessionIssuer
	impersonator  = auth.RoleImpersonator
)

// rules is the authorisation table of every RPC (API.md). Rules that depend on a stored resource
// (the owner of a session) are completed by the domain.
var rules = map[string]auth.Rule{
	gatehousev1.IdentityService_CreateUser_FullMethodName:          roles(identityAdmin),
	gatehousev1.IdentityService_GetUser_FullMethodName:             selfOr(requestUserID, identityAdmin, auditor),
	gatehousev1.IdentityService_LookupUser_FullMethodName:          roles(identityAdmin, auditor, introspector),
	gatehousev1.IdentityService_ListUsers_FullMethodName:           roles(identityAdmin, auditor),
	gatehousev1.IdentityService_UpdateUser_FullMethodName:          roles(identityAdmin),
	gatehousev1.IdentityService_DeleteUser_FullMethodName:          roles(identityAdmin),
	gatehousev1.IdentityService_SetPassword_FullMethodName:         selfOr(requestUserID, identityAdmin),
	gatehousev1.IdentityService_CreateGroup_FullMethodName:         roles(identityAdmin),
	gatehousev1.IdentityService_GetGroup_FullMethodName:            roles(identityAdmin, auditor),
	gatehousev1.IdentityService_ListGroups_FullMethodName:          roles(identityAdmin, auditor),
	gatehousev1.IdentityService_DeleteGroup_FullMethodName:         roles(identityAdmin),
	gatehousev1.IdentityService_AddGroupMember_FullMethodName:      roles(identityAdmin),
	gatehousev1.IdentityService_RemoveGroupMember_FullMethodName:   roles(identityAdmin),
	gatehousev1.IdentityService_ListGroupMembers_FullMethodName:    roles(identityAdmin, auditor),
	gatehousev1.IdentityService_ListUserGroups_FullMethodName:      selfOr(requestUserID, identityAdmin, auditor),
	gatehousev1.IdentityService_CreateRole_FullMethodName:          roles(identityAdmin),
	gatehousev1.IdentityService_GetRole_FullMethodName:             authenticated,
	gatehousev1.IdentityService_ListRoles_FullMethodName:           authenticated,
	gatehousev1.IdentityService_DeleteRole_FullMethodName:          roles(identityAdmin),
	gatehousev1.IdentityService_AddContainedRole_FullMethodName:    roles(identityAdmin),
	gatehousev1.IdentityService_RemoveContainedRole_FullMethodName: roles(identityAdmin),
	gatehousev1.IdentityService_GrantRole_FullMethodName:           roles(identityAdmin),
	gatehousev1.IdentityService_RevokeRole_FullMethodName:          roles(identityAdmin),
	gatehousev1.IdentityService_GetEffectiveRoles_FullMethodName:   selfOr(requestUserID, identityAdmin, auditor, introspector),

	gatehousev1.SessionService_CreateSession_FullMethodName: {Public: true, Allow: func(p *auth.Principal, req any) bool {
		// A password proves itself; a trusted credential needs a session issuer; impersonation
		// needs an impersonator's own session (p is nil for an anonymous caller, and Has is then
		// false). The domain refuses an impersonation session that tries to impersonate.
		if r, ok := req.(*gatehousev1.CreateSessionRequest); ok {
			switch {
			case r.GetTrusted() != nil:
				return p.Has(sessionIssuer)
			case r.GetImpersonate() != nil:
				return p.Has(impersonator)
			}
		}
		return true
	}},
	gatehousev1.SessionService_ValidateSession_FullMethodName: public,
	// GetSession, TerminateSession: the session's own user is checked by the domain.
	gatehousev1.SessionService_GetSession_FullMethodName: authenticated,
	gatehousev1.SessionService_ListSessions_FullMethodName: {Allow: func(p *auth.Principal, req any) bool {
		u := requestUserID(req)
		return u == "" || u == p.UserID || p.HasAny(sessionAdmin, auditor)
	}},
	gatehousev1.SessionService_TerminateSession_FullMethodName:      authenticated,
	gatehousev1.SessionService_TerminateUserSessions_FullMethodName: selfOr(requestUserID, sessionAdmin),
	gatehousev1.SessionService_Logout_FullMethodName:                authenticated,
	gatehousev1.SessionService_WatchSession_FullMethodName:          authenticated,
	gatehousev1.SessionService_WatchEvents_FullMethodName:           roles(sessionAdmin, auditor),
	gatehousev1.SessionService_ListEvents_FullMethodName:            roles(auditor),

	gatehousev1.PolicyService_CreateSessionPolicy_FullMethodName:  roles(policyAdmin),
	gatehousev1.PolicyService_GetSessionPolicy_FullMethodName:     roles(policyAdmin, auditor),
	gatehousev1.PolicyService_ListSessionPolicies_FullMethodName:  roles(policyAdmin, auditor),
	gatehousev1.PolicyService_UpdateSessionPolicy_FullMethodName:  roles(policyAdmin),
	gatehousev1.PolicyService_DeleteSessionPolicy_FullMethodName:  roles(policyAdmin),
	gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName: selfOr(requestUserID, policyAdmin, auditor),
	gatehousev1.PolicyService_Check_FullMethodName: {Public: true, Allow: func(p *auth.Principal, req any) bool {
		// Holding a token is enough to check it; checking a user by id needs an introspector.
		if r, ok := req.(*gatehousev1.CheckRequest); ok && r.GetToken() != "" {
			return true
		}
		return p.Has(introspector)
	}},
}

// publicServices are infrastructure services that anyone may call: health checks and server
// reflection (which describes the public contract and nothing else).
var publicServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Rules is the auth.RuleSet of the API.
func Rules(fullMethod string) (auth.Rule, bool) {
	if r, ok := rules[fullMethod]; ok {
		return r, true
	}
	for _, prefix := range publicServices {
		if strings.HasPrefix(fullMethod, prefix) {
			return public, true
		}
	}
	return auth.Rule{}, false
}
