package session_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestStaleCallerRoles: an impersonation or a trusted login is decided on the caller's roles as
// the database holds them when the session opens, not as they were when the caller's token was
// authenticated. Each case authenticates a caller that may open the session (and opens one, to
// show it), revokes one of the caller's roles (committed, through the identity domain and the
// session hooks, as a server wires them), and then tries again with the principal authenticated
// before the revoke: the attempt is refused with the error of a caller that never held the role,
// and no session of the target is stored.
func TestStaleCallerRoles(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name string
				// trusted opens a trusted session (the caller is a session issuer), else an
				// impersonation.
				trusted bool
				// caller and target are the roles granted to each; revoked is taken from the caller.
				caller, target []string
				revoked        string
				// reason is the refusal's reason, with the kind PERMISSION_DENIED.
				reason string
			}{
				{"impersonator loses gatehouse.impersonator", false,
					[]string{auth.RoleImpersonator}, nil, auth.RoleImpersonator, "PERMISSION_DENIED"},
				{"impersonator loses a built-in role of the target", false,
					[]string{auth.RoleImpersonator, auth.RoleAuditor}, []string{auth.RoleAuditor}, auth.RoleAuditor, "CALLER_LACKS_ROLE"},
				{"issuer loses gatehouse.session_issuer", true,
					[]string{auth.RoleSessionIssuer}, nil, auth.RoleSessionIssuer, "PERMISSION_DENIED"},
				{"issuer loses a built-in role of the target", true,
					[]string{auth.RoleSessionIssuer, auth.RoleAuditor}, []string{auth.RoleAuditor}, auth.RoleAuditor, "CALLER_LACKS_ROLE"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ctx := context.Background()
					st, sessions := newService(t, backend)
					ids := identity.New(st, auth.NewHasher(1), slog.New(slog.NewTextHandler(io.Discard, nil)), sessions.RolesChanged,
						identity.WithPasswordVerifier(sessions))
					user := func(name string, roles []string) string {
						t.Helper()
						u, _, err := ids.CreateUser(ctx, identity.NewUser{Username: name, Password: "password of " + name})
						if err != nil {
							t.Fatal(err)
						}
						// NOTE: no principal: built-in roles are granted as the bootstrap grants them.
						for _, r := range roles {
							if _, _, err := ids.GrantRole(ctx, r, identity.Principal{UserID: u.Id}, store.Apply); err != nil {
								t.Fatalf("granting %s to %s: %v", r, name, err)
							}
						}
						return u.Id
					}
					callerID := user("caller", tc.caller)
					targetID := user("target", tc.target)

					login, err := sessions.CreateWithPassword(ctx, session.Login{Username: "caller", Password: "password of caller",
						Type: gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE})
					if err != nil {
						t.Fatal(err)
					}
					p, err := sessions.Authenticate(ctx, login.Token)
					if err != nil {
						t.Fatal(err)
					}
					open := func() error {
						as := auth.WithPrincipal(ctx, p)
						if tc.trusted {
							_, err := sessions.CreateTrusted(as, "target", gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE, nil)
							return err
						}
						_, err := sessions.CreateImpersonation(as, session.Impersonation{Username: "target", Reason: "ticket 7",
							Type: gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE})
						return err
					}
					targetSessions := func() int {
						t.Helper()
						n, err := st.Client.Session.Query().Where(entsession.UserID(targetID)).Count(ctx)
						if err != nil {
							t.Fatal(err)
						}
						return n
					}

					if err := open(); err != nil {
						t.Fatalf("before the revoke: %v, want a session", err)
					}
					if _, _, err := ids.RevokeRole(ctx, tc.revoked, identity.Principal{UserID: callerID}, store.Apply); err != nil {
						t.Fatal(err)
					}
					before := targetSessions()
					err = open()
					if e, ok := errs.As(err); !ok || e.Kind != errs.KindPermissionDenied || e.Reason != tc.reason {
						t.Errorf("with the roles read before %s was revoked: %v, want PERMISSION_DENIED %s", tc.revoked, err, tc.reason)
					}
					if after := targetSessions(); after != before {
						t.Errorf("the target has %d sessions after the refused attempt, %d before", after, before)
					}
				})
			}
		})
	}
}
