package identity_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestManagingAUserWaitsForARoleChange races an identity administrator's SetPassword, and
// UpdateUser renaming, against a grant of gatehouse.admin to the same user on PostgreSQL. The grant
// is held open inside its transaction (by its role-change hook) after it has written the grant:
// the call must wait for it rather than read the user's roles as they were before it, and once
// the grant commits it must refuse (PERMISSION_DENIED CALLER_LACKS_ROLE: the caller does not hold
// gatehouse.admin) and change nothing.
//
// NOTE: PostgreSQL only. SQLite serialises every write transaction (BEGIN IMMEDIATE), so there
// the call waits for the grant whatever locks it takes.
func TestManagingAUserWaitsForARoleChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, ids *identity.Service, userID string) error
	}{
		{"SetPassword", func(ctx context.Context, ids *identity.Service, userID string) error {
			_, err := ids.SetPassword(ctx, userID, "a new password", "")
			return err
		}},
		{"UpdateUser renaming", func(ctx context.Context, ids *identity.Service, userID string) error {
			_, _, err := ids.UpdateUser(ctx, &gatehousev1.User{Id: userID, Username: "renamed"}, []string{"username"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			st := teststore.Open(t, "postgres")
			// granting is closed by the role-change hook of the grant of gatehouse.admin, which
			// then keeps the grant's transaction open until release is closed.
			granting, release := make(chan struct{}), make(chan struct{})
			hold := func(ctx context.Context, _ *store.Tx, changes []identity.RoleChange) (policy.SessionEffect, error) {
				for _, c := range changes {
					if slices.Contains(c.Added, auth.RoleAdmin) {
						close(granting)
						<-release
					}
				}
				return policy.SessionEffect{}, nil
			}
			ids := identity.New(st, auth.NewHasher(1), slog.New(slog.NewTextHandler(io.Discard, nil)), hold)
			u, _, err := ids.CreateUser(ctx, identity.NewUser{Username: "target", Password: "the old password"})
			if err != nil {
				t.Fatal(err)
			}
			before, err := st.Client.User.Get(ctx, u.Id)
			if err != nil {
				t.Fatal(err)
			}

			// NOTE: no principal: a built-in role is granted as the bootstrap grants it.
			granted := make(chan error, 1)
			go func() {
				_, _, err := ids.GrantRole(ctx, auth.RoleAdmin, identity.Principal{UserID: u.Id}, store.Apply)
				granted <- err
			}()
			select {
			case <-granting:
			case err := <-granted:
				t.Fatalf("the grant ended before its hook ran: %v", err)
			}

			admin := auth.WithPrincipal(ctx, &auth.Principal{UserID: "identity-admin", Roles: []string{auth.RoleIdentityAdmin}})
			called := make(chan error, 1)
			go func() { called <- tc.call(admin, ids, u.Id) }()
			// NOTE: polls, with a deadline, until the call waits for a lock (the grant's is the
			// only other transaction open); a call that returns first did not wait. It must wait for
			// the role-graph lock, taken before the user's row in the one lock order: on the user's
			// row alone (which the grant's foreign-key checks hold, from effective_roles) it waits
			// only by the accident of how the grant writes.
			for waiting := false; !waiting; {
				events, err := st.Strings(ctx, st.DB, "SELECT wait_event FROM pg_stat_activity "+
					"WHERE datname = current_database() AND wait_event_type = 'Lock'")
				if err != nil {
					t.Fatal(err)
				}
				if len(events) > 0 && !slices.Equal(events, []string{"advisory"}) {
					close(release)
					t.Fatalf("%s waits for %v while the grant is being committed; want it to wait for the role-graph lock (advisory)", tc.name, events)
				}
				waiting = len(events) > 0
				select {
				case err := <-called:
					close(release)
					t.Fatalf("%s returned %v while a grant of gatehouse.admin to the user was being committed; want it to wait for the grant", tc.name, err)
				case <-ctx.Done():
					close(release)
					t.Fatalf("%s never waited for the grant", tc.name)
				case <-time.After(10 * time.Millisecond):
				}
			}
			close(release)
			if err := <-granted; err != nil {
				t.Fatal(err)
			}
			err = <-called
			if e, ok := errs.As(err); !ok || e.Kind != errs.KindPermissionDenied || e.Reason != "CALLER_LACKS_ROLE" {
				t.Errorf("%s after the grant committed: %v, want PERMISSION_DENIED CALLER_LACKS_ROLE", tc.name, err)
			}
			after, err := st.Client.User.Get(ctx, u.Id)
			if err != nil {
				t.Fatal(err)
			}
			if after.Username != before.Username || *after.PasswordHash != *before.PasswordHash {
				t.Errorf("the refused %s changed the user: username %q, password changed %v", tc.name, after.Username,
					*after.PasswordHash != *before.PasswordHash)
			}
		})
	}
}
