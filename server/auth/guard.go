package auth

import "github.com/gatehouse/gatehouse/server/errs"

// MayActOn refuses (PERMISSION_DENIED, reason CALLER_LACKS_ROLE) a change that acts on users
// holding roles (updating, deleting or setting the password of one of them, opening a session for
// them, or a session policy that applies to them) when the principal lacks a built-in role among
// roles. A nil principal (the node itself: the bootstrap, the admin commands) may do anything.
//
// NOTE: without it a lesser administrator would hold a greater one's powers in disguise: an
// identity admin could set gatehouse.admin's password and log in as it, a policy admin could give
// gatehouse.admin a one-second absolute timeout.
func (p *Principal) MayActOn(roles []string) error {
	if p == nil {
		return nil
	}
	if r := p.MissingBuiltIn(roles); r != "" {
		return errs.PermissionDenied("CALLER_LACKS_ROLE", "only a caller holding %s may act on a user who holds it", r).
			WithMetadata("role", r)
	}
	return nil
}
