package integration_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server"
)

// How the tailers of a PostgreSQL cluster wake (ARCHITECTURE.md section 5): a payload-free NOTIFY
// after commit, on exactly one LISTEN connection per node, and a polling fallback, so that a lost
// notification costs latency, never data.

// noPolling is a poll interval no test outlives: a node configured with it hears of other nodes'
// commits only through their notifications.
const noPolling = time.Hour

// TestNotifyWakesTheOtherNodes: with polling out of the way, a watcher on node B hears at once of
// a session ended through node A; only A's NOTIFY can have woken B's tailer.
func TestNotifyWakesTheOtherNodes(t *testing.T) {
	t.Parallel()
	url := testnode.DatabaseURL(t, testnode.Postgres)
	a := testnode.StartWith(t, server.Config{Database: url, EventPollInterval: noPolling})
	b := testnode.StartWith(t, server.Config{Database: url, EventPollInterval: noPolling})
	ga, gb := a.Client(testnode.GRPC), b.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, ga)
	testnode.MustCall[gatehousev1.CreateUserResponse](t, ga, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "dora", Password: "dora-password-1"})
	for round := range 3 {
		sess := testnode.Login(t, gb, "dora", "dora-password-1")
		ch := liveWatch(t, b, "grpc", sess.Token)
		if snap := liveNext(t, ch, "snapshot").resp.GetSnapshot(); snap == nil {
			t.Fatalf("round %d: the first message is not a snapshot", round)
		}
		testnode.MustCall[gatehousev1.TerminateSessionResponse](t, ga, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
			&gatehousev1.TerminateSessionRequest{SessionId: sess.Session.Id})
		liveWantTerminated(t, ch, "terminated through node A", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN)
	}
}

// TestOneListenConnectionPerNode: three nodes on one database hold three LISTEN connections, one
// each, however much they write.
func TestOneListenConnectionPerNode(t *testing.T) {
	t.Parallel()
	url := testnode.DatabaseURL(t, testnode.Postgres)
	nodes := []*testnode.Node{testnode.StartOn(t, url), testnode.StartOn(t, url), testnode.StartOn(t, url)}
	admin := testnode.AdminToken(t, nodes[0].Client(testnode.GRPC))
	for i, n := range nodes {
		for j := range 5 {
			testnode.MustCall[gatehousev1.CreateRoleResponse](t, n.Client(testnode.GRPC), gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: "role_" + string(rune('a'+i)) + string(rune('a'+j))})
		}
	}
	db := nodes[0].Store().DB
	listeners := func() int {
		var n int
		err := db.QueryRowContext(context.Background(),
			"SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN %'").Scan(&n)
		if err != nil {
			t.Fatalf("counting listeners: %v", err)
		}
		return n
	}
	// NOTE: each node's listener connects in the background; wait until all three have, then
	// check that none has more than one.
	waitFor(t, "three LISTEN connections", func() bool { return listeners() >= len(nodes) })
	if got := listeners(); got != len(nodes) {
		t.Errorf("%d LISTEN connections for %d nodes, want one each", got, len(nodes))
	}
}

// TestLostNotificationCostsOnlyLatency: an event committed with no notification at all (as if its
// NOTIFY was lost) still reaches a WatchEvents stream, through the tailer's polling; with polling
// out of the way it would not.
func TestLostNotificationCostsOnlyLatency(t *testing.T) {
	t.Parallel()
	n := testnode.StartWith(t, server.Config{Database: testnode.DatabaseURL(t, testnode.Postgres), EventPollInterval: 20 * time.Millisecond})
	g := n.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, g)
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+admin), liveWait)
	defer cancel()
	// NOTE: a change through the node first, received, so that the stream is known to be open
	// and following before the silent write. The stream starts after a known cursor, not "from
	// now": the server may open it after the change has committed.
	start := testnode.MustCall[gatehousev1.CreateRoleResponse](t, g, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "start"}).GetConsistencyToken()
	stream, err := gatehousev1.NewSessionServiceClient(conn).WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: start})
	if err != nil {
		t.Fatal(err)
	}
	testnode.MustCall[gatehousev1.CreateRoleResponse](t, g, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "loud"})
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for the node's own event: %v", err)
		}
		if m.Event.GetType() == gatehousev1.EventType_EVENT_TYPE_ROLE_CREATED {
			break
		}
	}

	// A writer that sends no NOTIFY: a plain INSERT of a LOGIN_FAILED event, outside the node.
	marker := &gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_LOGIN_FAILED, UserId: "silent-writer"}
	payload, err := proto.Marshal(marker)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Store().DB.ExecContext(context.Background(),
		"INSERT INTO events (time, type, actor_user_id, actor_session_id, user_id, session_id, payload) VALUES (now(), $1, '', '', $2, '', $3)",
		marker.Type.String(), marker.UserId, payload); err != nil {
		t.Fatalf("writing an event without a notification: %v", err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for the silently written event: %v", err)
		}
		if m.Event.GetUserId() == marker.UserId {
			return
		}
	}
}
