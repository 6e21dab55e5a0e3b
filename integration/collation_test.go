package integration_test

import (
	"slices"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/internal/testpg"
)

// TestRolesIndependentOfCollation runs on a PostgreSQL whose default collation is ICU en-US, where
// "app_admin" sorts before "app.viewer" (byte order puts "." first). Role sets are searched in byte
// order, so they must be sorted in byte order whatever the database's collation: a grant reports
// exactly the roles it added, and a custom role that sorts differently under the collation does not
// hide the holder's gatehouse.admin.
func TestRolesIndependentOfCollation(t *testing.T) {
	t.Parallel()
	cluster := testpg.NewClusterWith(t, testpg.Options{ICULocale: "en-US"})
	n := testnode.StartOn(t, cluster.NewDatabase(t))

	// The premise: this database does not sort in byte order.
	var underscoreFirst bool
	if err := n.Store().DB.QueryRow(`SELECT 'app_admin' < 'app.viewer'`).Scan(&underscoreFirst); err != nil {
		t.Fatal(err)
	}
	if !underscoreFirst {
		t.Fatal("the database sorts in byte order; the test needs an ICU en-US collation")
	}

	c := n.Client(testnode.GRPC)
	a := newIDAdmin(t, n, c)

	t.Run("grant reports only the added role", func(t *testing.T) {
		u := a.createUser("carol", "carol-password-1")
		for _, r := range []string{"app_admin", "app.viewer", "zeta"} {
			a.createRole(r)
		}
		a.grantUser("app_admin", u.Id)
		a.grantUser("app.viewer", u.Id)
		mark := lastEventID(t, n)
		a.grantUser("zeta", u.Id)
		wantRolesChanged(t, "granting zeta", eventsAfter(t, n, mark), map[string][2][]string{
			u.Id: {{"zeta"}, nil},
		})
		got := rolesChanged(t, eventsAfter(t, n, mark))[u.Id].GetRoles()
		if want := []string{"app.viewer", "app_admin", "zeta"}; !slices.Equal(got, want) {
			t.Errorf("ROLES_CHANGED roles = %q, want %q (byte order)", got, want)
		}
	})

	t.Run("admin with a custom role keeps admin rights", func(t *testing.T) {
		u := a.createUser("ops", "ops-password-12")
		a.createRole("gatehouse_ops")
		a.grantUser("gatehouse.admin", u.Id)
		a.grantUser("gatehouse_ops", u.Id)
		login := testnode.Login(t, c, "ops", "ops-password-12")
		if want := []string{"gatehouse.admin", "gatehouse_ops"}; !slices.Equal(login.Roles, want) {
			t.Errorf("login roles = %q, want %q (byte order)", login.Roles, want)
		}
		testnode.MustCall[gatehousev1.ListUsersResponse](t, c, gatehousev1.IdentityService_ListUsers_FullMethodName, login.Token,
			&gatehousev1.ListUsersRequest{})
		testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, login.Token,
			&gatehousev1.CreateUserRequest{Username: "made-by-ops"})
		testnode.MustCall[gatehousev1.GrantRoleResponse](t, c, gatehousev1.IdentityService_GrantRole_FullMethodName, login.Token,
			&gatehousev1.GrantRoleRequest{Role: "gatehouse.auditor", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
	})
}
