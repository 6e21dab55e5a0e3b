package auth

import (
	"context"
	"slices"
	"strings"
)

// Built-in roles. The gatehouse. prefix is reserved for them; they cannot be deleted.
const (
	RoleAdmin          = "gatehouse.admin"
	RoleIdentityAdmin  = "gatehouse.identity_admin"
	RoleSessionAdmin   = "gatehouse.session_admin"
	RolePolicyAdmin    = "gatehouse.policy_admin"
	RoleAuditor        = "gatehouse.auditor"
	RoleIntrospector   = "gatehouse.introspector"
	RoleSessionIssuer  = "gatehouse.session_issuer"
	RoleImpersonator   = "gatehouse.impersonator"
	ReservedRolePrefix = "gatehouse."
)

// BuiltInRole describes one built-in role.
type BuiltInRole struct {
	Name        string
	Description string
}

// BuiltInRoles lists the roles every database has.
var BuiltInRoles = []BuiltInRole{
	{RoleAdmin, "Everything."},
	{RoleIdentityAdmin, "Manage users, groups, roles and grants."},
	{RoleSessionAdmin, "List, watch and end any user's sessions."},
	{RolePolicyAdmin, "Manage session policies."},
	{RoleAuditor, "Read everything; watch and list events."},
	{RoleIntrospector, "Validate sessions and check access for any subject."},
	{RoleSessionIssuer, "Create sessions for users authenticated elsewhere (single sign-on)."},
	{RoleImpersonator, "Open an audited session as another user (never one holding a built-in role the caller lacks)."},
}

// Principal is an authenticated caller: a session and its user's effective roles.
type Principal struct {
	UserID    string
	Username  string
	SessionID string
	// Roles are the user's effective role names, sorted.
	Roles []string
	// ImpersonatorUserID and ImpersonatorSessionID are set when the session is an impersonation:
	// the user who opened it as UserID, and that user's own session. Roles are still UserID's.
	ImpersonatorUserID, ImpersonatorSessionID string
}

// Impersonated reports whether the principal's session is an impersonation.
func (p *Principal) Impersonated() bool { return p != nil && p.ImpersonatorSessionID != "" }

// Has reports whether the principal holds role, or gatehouse.admin, which implies every role.
func (p *Principal) Has(role string) bool {
	if p == nil {
		return false
	}
	_, admin := slices.BinarySearch(p.Roles, RoleAdmin)
	if admin {
		return true
	}
	_, ok := slices.BinarySearch(p.Roles, role)
	return ok
}

// IsBuiltIn reports whether role is a built-in role's name (it has the reserved prefix).
func IsBuiltIn(role string) bool { return strings.HasPrefix(role, ReservedRolePrefix) }

// MissingBuiltIn returns the first built-in role among roles that the principal does not hold, or
// "" when it holds them all (gatehouse.admin holds every role). A caller acting on someone (setting
// their password, opening a session for them) must hold every built-in role they hold, or it could
// act with powers it does not have.
func (p *Principal) MissingBuiltIn(roles []string) string {
	for _, r := range roles {
		if IsBuiltIn(r) && !p.Has(r) {
			return r
		}
	}
	return ""
}

// HasAny reports whether the principal holds any of roles (gatehouse.admin implies all).
func (p *Principal) HasAny(roles ...string) bool {
	for _, r := range roles {
		if p.Has(r) {
			return true
		}
	}
	return false
}

// Client describes the network client of a call, filled in by the transport.
type Client struct {
	IP        string
	UserAgent string
}

type principalKey struct{}
type clientKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller's principal, nil for anonymous calls.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// WithClient returns ctx carrying c.
func WithClient(ctx context.Context, c Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientFrom returns the network client of the call.
func ClientFrom(ctx context.Context) Client {
	c, _ := ctx.Value(clientKey{}).(Client)
	return c
}

// Authenticator turns a bearer token into a principal. It returns an errs.Error of kind
// Unauthenticated for unknown, ended or expired sessions.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Principal, error)
}

type passiveKey struct{}

// Passive marks ctx as a call that is not the session's activity: authenticating it does not
// extend the session's idle timeout. Streams are passive: a browser tab left open on
// WatchSession must not keep its session alive forever.
func Passive(ctx context.Context) context.Context { return context.WithValue(ctx, passiveKey{}, true) }

// IsPassive reports whether ctx was marked by Passive.
func IsPassive(ctx context.Context) bool { v, _ := ctx.Value(passiveKey{}).(bool); return v }
