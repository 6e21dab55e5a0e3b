package identity_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/policy"
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

// TestRolePoliciesMoveOnlyWithStanding: a role change that makes a role's session policy apply to
// a user holding a built-in role the caller lacks, or stop applying to one, is refused
// (CALLER_LACKS_ROLE), by every path that changes effective roles and in preview alike; without
// this an identity administrator could grant gatehouse.admin a custom role whose policy ends every
// session after a second. Changes that move no such user, or no policy, pass, and gatehouse.admin
// may make them all.
func TestRolePoliciesMoveOnlyWithStanding(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st := teststore.Open(t, backend)
			svc := identity.New(st, auth.NewHasher(0), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			user := func(name string) identity.Principal {
				t.Helper()
				u, _, err := svc.CreateUser(ctx, identity.NewUser{Username: name})
				if err != nil {
					t.Fatal(err)
				}
				return identity.Principal{UserID: u.Id}
			}
			boss, plain := user("boss"), user("plain")
			for _, r := range []string{"trap", "harmless"} {
				if _, _, err := svc.CreateRole(ctx, r, "", nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := svc.GrantRole(ctx, auth.RoleAdmin, boss, store.Apply); err != nil {
				t.Fatal(err)
			}
			if _, _, err := svc.GrantRole(ctx, "harmless", boss, store.Apply); err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := policy.New(st, nil).Create(ctx, &gatehousev1.SessionPolicy{
				Scope:           &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: "trap"}},
				AbsoluteTimeout: durationpb.New(time.Second),
			}, store.Apply); err != nil {
				t.Fatal(err)
			}
			g, _, err := svc.CreateGroup(ctx, "crew", "")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := svc.AddGroupMember(ctx, g.Id, boss.UserID, store.Apply); err != nil {
				t.Fatal(err)
			}
			idAdmin := auth.WithPrincipal(ctx, &auth.Principal{UserID: "caller", Roles: []string{auth.RoleIdentityAdmin}})
			admin := auth.WithPrincipal(ctx, &auth.Principal{UserID: "caller", Roles: []string{auth.RoleAdmin}})
			refused := func(what string, change func(ctx context.Context, mode store.Mode) error) {
				t.Helper()
				for _, mode := range []store.Mode{store.Preview, store.Apply} {
					err := change(idAdmin, mode)
					if e, ok := errs.As(err); !ok || e.Kind != errs.KindPermissionDenied || e.Reason != "CALLER_LACKS_ROLE" {
						t.Errorf("%s (mode %v) by an identity admin: %v, want PERMISSION_DENIED CALLER_LACKS_ROLE", what, mode, err)
					}
				}
			}
			grant := func(role string, to identity.Principal) func(context.Context, store.Mode) error {
				return func(ctx context.Context, mode store.Mode) error {
					_, _, err := svc.GrantRole(ctx, role, to, mode)
					return err
				}
			}
			revoke := func(role string, from identity.Principal) func(context.Context, store.Mode) error {
				return func(ctx context.Context, mode store.Mode) error {
					_, _, err := svc.RevokeRole(ctx, role, from, mode)
					return err
				}
			}
			refused("granting the role with a policy to gatehouse.admin", grant("trap", boss))
			refused("granting it to a group gatehouse.admin belongs to", grant("trap", identity.Principal{GroupID: g.Id}))
			refused("making a role gatehouse.admin holds contain it", func(ctx context.Context, mode store.Mode) error {
				_, _, err := svc.AddContainedRole(ctx, "harmless", "trap", mode)
				return err
			})
			if err := grant("trap", plain)(idAdmin, store.Apply); err != nil {
				t.Errorf("granting the role with a policy to a user without built-in roles: %v", err)
			}
			if err := revoke("harmless", boss)(idAdmin, store.Apply); err != nil {
				t.Errorf("revoking a role without a policy from gatehouse.admin: %v", err)
			}

			// Held already, the policy may not be taken away by an identity admin either.
			if err := grant("trap", boss)(admin, store.Apply); err != nil {
				t.Fatalf("gatehouse.admin granting the role with a policy: %v", err)
			}
			refused("revoking the role with a policy from gatehouse.admin", revoke("trap", boss))
			refused("deleting the role with a policy gatehouse.admin holds", func(ctx context.Context, mode store.Mode) error {
				_, _, err := svc.DeleteRole(ctx, "trap", mode)
				return err
			})
			if _, _, err := svc.DeleteRole(admin, "trap", store.Apply); err != nil {
				t.Errorf("gatehouse.admin deleting the role with a policy: %v", err)
			}
		})
	}
}
