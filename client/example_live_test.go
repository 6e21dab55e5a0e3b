package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse/gatehouse/client"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/server/auth"
)

// A user's page watches its session while an administrator grants the user a role and then ends
// the session; the watch yields the snapshot, the new role, and the end. This example starts a
// node of its own (SQLite, loopback ports) and runs against it.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gatehouse-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	node, err := server.Start(ctx, server.Config{
		Database: "sqlite://" + filepath.Join(dir, "gatehouse.db"),
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		AdminPassword:   "change-me-now",
		PasswordHashing: auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}, // cheap, for the example
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Shutdown(ctx)

	// The administrator, over native gRPC.
	conn, err := grpc.NewClient(node.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	sessions, ids := gatehousev1.NewSessionServiceClient(conn), gatehousev1.NewIdentityServiceClient(conn)
	login := func(user, password string) *gatehousev1.CreateSessionResponse {
		resp, err := sessions.CreateSession(ctx, &gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Password{Password: &gatehousev1.PasswordCredential{Username: user, Password: password}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		})
		if err != nil {
			log.Fatal(err)
		}
		return resp
	}
	admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login("admin", "change-me-now").Token)
	alice, err := ids.CreateUser(admin, &gatehousev1.CreateUserRequest{Username: "alice", Password: "alice-password"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ids.CreateRole(admin, &gatehousev1.CreateRoleRequest{Name: "reporter"}); err != nil {
		log.Fatal(err)
	}

	// Alice's page, through the client package (Connect on the HTTP port).
	page := login("alice", "alice-password")
	c, err := client.New([]string{"http://" + node.HTTPAddr()}, client.WithToken(page.Token))
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseIdleConnections()
	for msg, err := range c.WatchSession(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev := msg.GetEvent().(type) {
		case *gatehousev1.WatchSessionResponse_Snapshot_:
			fmt.Println("roles:", ev.Snapshot.GetRoles())
			_, err = ids.GrantRole(admin, &gatehousev1.GrantRoleRequest{Role: "reporter",
				Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: alice.User.Id}})
		case *gatehousev1.WatchSessionResponse_RolesChanged_:
			fmt.Println("added:", ev.RolesChanged.GetAdded())
			_, err = sessions.TerminateSession(admin, &gatehousev1.TerminateSessionRequest{SessionId: page.Session.Id})
		case *gatehousev1.WatchSessionResponse_Terminated_:
			fmt.Println("ended:", ev.Terminated.GetReason())
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// roles: []
	// added: [reporter]
	// ended: TERMINATION_REASON_REVOKED_BY_ADMIN
}
