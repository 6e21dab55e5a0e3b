package integration_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server"
)

// stLogin opens a non-interactive session of username (not counted by any policy limit).
func stLogin(t *testing.T, c testnode.Invoker, username, password string) *gatehousev1.CreateSessionResponse {
	t.Helper()
	return testnode.MustCall[gatehousev1.CreateSessionResponse](t, c, gatehousev1.SessionService_CreateSession_FullMethodName, "",
		&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: username, Password: password}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_NON_INTERACTIVE,
		})
}

// stActive counts the active sessions of a user in the database.
func stActive(t *testing.T, n *testnode.Node, userID string) int {
	t.Helper()
	st := n.Store()
	var count int
	if err := st.DB.QueryRow(st.Rebind("SELECT COUNT(*) FROM sessions WHERE user_id = ? AND active"), userID).Scan(&count); err != nil {
		t.Fatal(err)
	}
	return count
}

// stAddSessions stores count active non-interactive sessions of a user straight into the database,
// as a database from before the cap on sessions per user may hold them.
func stAddSessions(t *testing.T, n *testnode.Node, userID string, count int) {
	t.Helper()
	now := time.Now()
	teststore.AddSessions(t, n.Store(), userID, count, now, now.Add(time.Hour))
}

// TestSessionCapPerUser checks the cap on one user's active sessions: past it, each login ends the
// user's oldest active session (CONCURRENT_LIMIT), whatever its type and whatever the policies say.
func TestSessionCapPerUser(t *testing.T) {
	const sessionCap = 50
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			n := testnode.StartWith(t, server.Config{Database: testnode.DatabaseURL(t, b), MaxSessionsPerUser: sessionCap})
			c := n.Client(testnode.GRPC)
			a := newIDAdmin(t, n, c)
			u := a.createUser("script", "script-password-1")
			var logins []*gatehousev1.CreateSessionResponse
			for i := range sessionCap + 10 {
				l := stLogin(t, c, "script", "script-password-1")
				var want []string
				if i >= sessionCap {
					want = []string{logins[i-sessionCap].Session.GetId()}
				}
				if !limSameSet(l.EvictedSessionIds, want) {
					t.Fatalf("login %d evicted %v, want %v", i, l.EvictedSessionIds, want)
				}
				logins = append(logins, l)
			}
			if got := stActive(t, n, u.Id); got != sessionCap {
				t.Errorf("%d active sessions, want the cap %d", got, sessionCap)
			}
			limWantEnded(t, c, "the oldest sessions", gatehousev1.TerminationReason_TERMINATION_REASON_CONCURRENT_LIMIT, logins[:10]...)
			limWantValid(t, c, "the newest sessions", logins[10:]...)
		})
	}
}

// TestManySessionsOfOneUser gives one user more live sessions than one statement could name (as a
// database from before the cap may hold, or a cap raised far): a global policy change, disabling
// that user and deleting another such user all still succeed and reach every session.
func TestManySessionsOfOneUser(t *testing.T) {
	for _, tc := range []struct {
		backend testnode.Backend
		// sessions exceeds what one expiry UPDATE, five parameters per session, can bind:
		// SQLite allows 32766 parameters, PostgreSQL 65535.
		sessions int
	}{{testnode.SQLite, 32766/5 + 200}, {testnode.Postgres, 65535/5 + 200}} {
		t.Run(string(tc.backend), func(t *testing.T) {
			t.Parallel()
			n := testnode.Start(t, tc.backend)
			c := n.Client(testnode.GRPC)
			a := newIDAdmin(t, n, c)
			flood := a.createUser("flood", "flood-password-1")
			other := a.createUser("flood2", "flood-password-2")
			stAddSessions(t, n, flood.Id, tc.sessions)
			stAddSessions(t, n, other.Id, 1000)

			polCreate(a, &gatehousev1.SessionPolicy{Scope: polGlobal(), IdleTimeout: durationpb.New(10 * time.Minute)})
			st := n.Store()
			var later int
			if err := st.DB.QueryRow(st.Rebind("SELECT COUNT(*) FROM sessions WHERE active AND idle_expire_time > ?"),
				time.Now().UTC().Add(15*time.Minute)).Scan(&later); err != nil {
				t.Fatal(err)
			}
			if later != 0 {
				t.Errorf("%d sessions kept an idle expiry past the new 10-minute timeout", later)
			}

			a.mustUpdateUser(&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: flood.Id, Disabled: true},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}}})
			if got := stActive(t, n, flood.Id); got != 0 {
				t.Errorf("%d sessions of the disabled user are active", got)
			}
			mutate[gatehousev1.DeleteUserResponse](a, gatehousev1.IdentityService_DeleteUser_FullMethodName,
				&gatehousev1.DeleteUserRequest{UserId: other.Id})
			if got := stActive(t, n, other.Id); got != 0 {
				t.Errorf("%d sessions of the deleted user are active", got)
			}
		})
	}
}

// TestPostgresSessionSettings checks the timeouts a node sets on its PostgreSQL connections: the
// defaults, the operator's own value in the URL (kept), and a negative setting (left to the server).
func TestPostgresSessionSettings(t *testing.T) {
	t.Parallel()
	show := func(t *testing.T, n *testnode.Node) map[string]string {
		t.Helper()
		out := map[string]string{}
		// NOTE: a pinned connection of the pool, so that each SHOW reads the same session.
		conn, err := n.Store().DB.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, name := range []string{"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"} {
			var v string
			if err := conn.QueryRowContext(context.Background(), "SHOW "+name).Scan(&v); err != nil {
				t.Fatal(err)
			}
			out[name] = v
		}
		return out
	}
	want := func(t *testing.T, got map[string]string, statement, lock, idle string) {
		t.Helper()
		if got["statement_timeout"] != statement || got["lock_timeout"] != lock || got["idle_in_transaction_session_timeout"] != idle {
			t.Errorf("settings = %v, want statement_timeout %s, lock_timeout %s, idle_in_transaction_session_timeout %s",
				got, statement, lock, idle)
		}
	}
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		want(t, show(t, testnode.Start(t, testnode.Postgres)), "30s", "10s", "30s")
	})
	t.Run("set by the URL", func(t *testing.T) {
		t.Parallel()
		u, err := url.Parse(testpg.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("statement_timeout", "5000")
		q.Set("options", "-c lock_timeout=2s")
		u.RawQuery = q.Encode()
		n := testnode.StartWith(t, server.Config{Database: u.String(), PGIdleInTransactionTimeout: time.Minute})
		want(t, show(t, n), "5s", "2s", "1min")
	})
	t.Run("left to the server", func(t *testing.T) {
		t.Parallel()
		n := testnode.StartWith(t, server.Config{Database: testpg.NewDatabase(t),
			PGStatementTimeout: -1, PGLockTimeout: -1, PGIdleInTransactionTimeout: -1})
		want(t, show(t, n), "0", "0", "0")
	})
}

// TestRetryableErrorsReachTheCaller checks, end to end, that a statement that runs out of the
// node's lock timeout answers ABORTED (retry), not INTERNAL, with no SQL in the message.
func TestRetryableErrorsReachTheCaller(t *testing.T) {
	t.Parallel()
	n := testnode.StartWith(t, server.Config{Database: testpg.NewDatabase(t), PGLockTimeout: 50 * time.Millisecond})
	c := n.Client(testnode.GRPC)
	a := newIDAdmin(t, n, c)
	u := a.createUser("locked", "locked-password-1")
	// Hold the user's row, as a long transaction of another node would.
	tx, err := n.Store().DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.Exec("SELECT * FROM users WHERE id = $1 FOR UPDATE", u.Id); err != nil {
		t.Fatal(err)
	}
	// NOTE: the deadline only keeps a lock timeout that is not in effect from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = testnode.Call[gatehousev1.UpdateUserResponse](ctx, c, gatehousev1.IdentityService_UpdateUser_FullMethodName, a.tok,
		&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: u.Id, DisplayName: "Locked"}})
	if status.Code(err) != codes.Aborted || testnode.Reason(err) != "CONCURRENT_CONFLICT" {
		t.Fatalf("UpdateUser on a locked row = %v (reason %q), want ABORTED CONCURRENT_CONFLICT", err, testnode.Reason(err))
	}
	if msg := status.Convert(err).Message(); msg != "the request conflicted with a concurrent one; retry it" {
		t.Errorf("message = %q", msg)
	}
}
