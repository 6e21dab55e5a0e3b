package integration_test

import (
	"context"
	"slices"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// TestWatchSessionRoleChangeThenEndInOneBatch: a role change and the session's end that reach a
// WatchSession stream together (one tailer round settles both, as on a busy node) come out as
// roles_changed, then terminated. A transaction held open on the database holds the horizon back
// until both have committed.
func TestWatchSessionRoleChangeThenEndInOneBatch(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.Postgres)
	c := n.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, c)
	u := testnode.MustCall[gatehousev1.CreateUserResponse](t, c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "batched", Password: "batched-password"}).User
	testnode.MustCall[gatehousev1.CreateRoleResponse](t, c, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "batch_reader"})
	sess := testnode.Login(t, c, "batched", "batched-password")
	ch := liveWatch(t, n, "grpc", sess.Token)
	if liveNext(t, ch, "snapshot").resp.GetSnapshot() == nil {
		t.Fatal("the first message is not a snapshot")
	}

	// NOTE: a transaction with an id, open across both changes: no event after it settles until
	// it ends, so the stream receives the two changes in one batch.
	blocker, err := n.Store().DB.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback() }()
	if _, err := blocker.ExecContext(context.Background(), "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	testnode.MustCall[gatehousev1.GrantRoleResponse](t, c, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
		&gatehousev1.GrantRoleRequest{Role: "batch_reader", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
	testnode.MustCall[gatehousev1.TerminateSessionResponse](t, c, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
		&gatehousev1.TerminateSessionRequest{SessionId: sess.Session.Id})
	if err := blocker.Commit(); err != nil {
		t.Fatal(err)
	}

	m := liveNext(t, ch, "roles_changed")
	if rc := m.resp.GetRolesChanged(); rc == nil || !slices.Equal(rc.Added, []string{"batch_reader"}) {
		t.Fatalf("first message after the batch: %v (err %v), want roles_changed adding batch_reader", m.resp, m.err)
	}
	liveWantTerminated(t, ch, "terminated", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN)
}
