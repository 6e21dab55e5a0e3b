package auth

import (
	"github.com/gatehouse/gatehouse/server/errs"
)

// Rule says who may call one RPC. The transport applies it to every call, after authentication and
// validation and before the handler runs.
type Rule struct {
	// Public RPCs need no authentication. A bearer token that does not authenticate is ignored
	// (the call proceeds as anonymous) so that, for example, a stale token does not block a login.
	Public bool
	// Allow decides for an authenticated caller (p is never nil) and the validated request. A nil
	// Allow lets any authenticated caller through. Public rules may also set Allow; it is then also
	// called for anonymous callers, with p nil.
	Allow func(p *Principal, req any) bool
}

// Authorize applies r to the caller p (nil for anonymous) and the request. It returns an
// Unauthenticated error when a non-public RPC has no caller, and PermissionDenied when Allow says no.
func (r Rule) Authorize(p *Principal, req any) error {
	if p == nil && !r.Public {
		return errs.Unauthenticated("UNAUTHENTICATED", "this call needs an authorization: Bearer <session token> header")
	}
	if r.Allow == nil || r.Allow(p, req) {
		return nil
	}
	if p == nil {
		return errs.Unauthenticated("UNAUTHENTICATED", "this call needs an authorization: Bearer <session token> header")
	}
	return Denied()
}

// Denied is the error of a caller that may not make a call: PERMISSION_DENIED, saying no more (a
// denial names neither the rule nor what was missing).
func Denied() error {
	return errs.PermissionDenied("PERMISSION_DENIED", "the caller may not do this")
}

// RuleSet looks up the rule of a full gRPC method name ("/gatehouse.v1.IdentityService/GetUser").
// A method without a rule is denied to everyone.
type RuleSet func(fullMethod string) (Rule, bool)
