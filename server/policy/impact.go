package policy

import (
	"cmp"
	"slices"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// SessionEffect is what a change did to live sessions inside its transaction: the session hooks
// (the role-change and policy hooks of the session domain) report it, so that the change's
// ChangeImpact can count it.
type SessionEffect struct {
	// Refreshed counts live sessions that carry new roles or new timeouts in place.
	Refreshed int
	// Ended counts live sessions the change ended, with EndReason.
	Ended int
	// EndReason is why they ended (unspecified when none did).
	EndReason gatehousev1.TerminationReason
}

// Add adds o to e. The first reason given wins (the hooks end sessions for one reason only).
func (e *SessionEffect) Add(o SessionEffect) {
	e.Refreshed += o.Refreshed
	e.Ended += o.Ended
	if e.EndReason == gatehousev1.TerminationReason_TERMINATION_REASON_UNSPECIFIED {
		e.EndReason = o.EndReason
	}
}

// MaxImpactUsers bounds ChangeImpact.users.
const MaxImpactUsers = 100

// Impact builds the ChangeImpact of a change that made changes to effective roles and had effect on
// sessions. Users are listed by user id (byte order), the first MaxImpactUsers of them, so that a
// preview and the change it previews list the same users.
func Impact(changes []RoleChange, effect SessionEffect) *gatehousev1.ChangeImpact {
	sorted := slices.SortedFunc(slices.Values(changes), func(a, b RoleChange) int { return cmp.Compare(a.UserID, b.UserID) })
	out := &gatehousev1.ChangeImpact{
		UsersAffected:     int32(len(changes)),
		SessionsRefreshed: int32(effect.Refreshed),
		SessionsEnded:     int32(effect.Ended),
		EndReason:         effect.EndReason,
	}
	for _, c := range sorted[:min(len(sorted), MaxImpactUsers)] {
		out.Users = append(out.Users, &gatehousev1.UserImpact{UserId: c.UserID, Added: c.Added, Removed: c.Removed})
	}
	return out
}
