package identity_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestBuiltInRoleChangesNeedAdmin checks the guard on built-in roles in the domain: a caller
// without gatehouse.admin may not give anyone a gatehouse. role, gatehouse.admin may, and so may a
// call without a principal (the bootstrap); custom roles are not affected.
func TestBuiltInRoleChangesNeedAdmin(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, databaseURL(t, "sqlite"))
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	svc := identity.New(st, auth.NewHasher(0), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	u, _, err := svc.CreateUser(ctx, identity.NewUser{Username: "u"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateRole(ctx, "custom", "", nil); err != nil {
		t.Fatal(err)
	}
	as := func(roles ...string) context.Context {
		return auth.WithPrincipal(ctx, &auth.Principal{UserID: "caller", Roles: roles})
	}
	to := identity.Principal{UserID: u.Id}

	for _, tc := range []struct {
		name   string
		ctx    context.Context
		role   string
		denied bool
	}{
		{"identity admin, built-in role", as(auth.RoleIdentityAdmin), auth.RoleAuditor, true},
		{"identity admin, custom role", as(auth.RoleIdentityAdmin), "custom", false},
		{"gatehouse.admin, built-in role", as(auth.RoleAdmin), auth.RoleAuditor, false},
		{"no principal, built-in role", ctx, auth.RoleSessionIssuer, false},
	} {
		_, _, err := svc.GrantRole(tc.ctx, tc.role, to, store.Apply)
		if tc.denied {
			if e, ok := errs.As(err); !ok || e.Kind != errs.KindPermissionDenied || e.Reason != "BUILT_IN_ROLE_CHANGE" {
				t.Errorf("%s: GrantRole = %v, want PERMISSION_DENIED BUILT_IN_ROLE_CHANGE", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: GrantRole = %v, want success", tc.name, err)
		}
	}
	// Revoking is a change too.
	if _, _, err := svc.RevokeRole(as(auth.RoleIdentityAdmin), auth.RoleAuditor, to, store.Apply); errs.KindOf(err) != errs.KindPermissionDenied {
		t.Errorf("identity admin revoking a built-in role: %v, want PERMISSION_DENIED", err)
	}
	roles, err := svc.GetEffectiveRoles(ctx, u.Id)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range roles {
		names = append(names, r.Role)
	}
	if want := []string{"custom", auth.RoleAuditor, auth.RoleSessionIssuer}; !slices.Equal(names, want) {
		t.Errorf("effective roles %v, want %v", names, want)
	}
}
