package policy_test

import (
	"fmt"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/policy"
)

// TestImpactListsTheFirstUsersByID checks that a change's impact counts every user whose roles
// changed but lists only the first policy.MaxImpactUsers, by user id, whatever order the changes
// came in, and carries the session effect.
func TestImpactListsTheFirstUsersByID(t *testing.T) {
	var changes []policy.RoleChange
	for i := 250; i > 0; i-- {
		changes = append(changes, policy.RoleChange{UserID: fmt.Sprintf("u%03d", i), Added: []string{"r"}})
	}
	ended := gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE
	got := policy.Impact(changes, policy.SessionEffect{Refreshed: 3, Ended: 2, EndReason: ended})
	if got.UsersAffected != 250 || len(got.Users) != policy.MaxImpactUsers {
		t.Fatalf("impact of 250 changes: users_affected %d, %d users listed; want 250 and %d", got.UsersAffected, len(got.Users), policy.MaxImpactUsers)
	}
	for i, u := range got.Users {
		if want := fmt.Sprintf("u%03d", i+1); u.UserId != want {
			t.Fatalf("users[%d] = %s, want %s", i, u.UserId, want)
		}
	}
	if got.SessionsRefreshed != 3 || got.SessionsEnded != 2 || got.EndReason != ended {
		t.Errorf("sessions: refreshed %d, ended %d (%v); want 3, 2 (%v)", got.SessionsRefreshed, got.SessionsEnded, got.EndReason, ended)
	}
	if empty := policy.Impact(nil, policy.SessionEffect{}); empty.UsersAffected != 0 || len(empty.Users) != 0 {
		t.Errorf("the impact of no change is %v, want empty", empty)
	}
}
