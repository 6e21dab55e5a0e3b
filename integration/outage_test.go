package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/server"
)

// TestDatabaseOutage stops PostgreSQL under a running node: every call fails with UNAVAILABLE
// (HTTP 503 over REST), never INTERNAL, and within its own deadline rather than hanging;
// /readyz says 503; readiness logs one line for the outage, not one per probe; and once the
// server is back everything recovers by itself, with the sessions of before still valid.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	cluster := testpg.NewCluster(t)
	logs := &lockedBuffer{}
	n := testnode.StartWith(t, server.Config{
		Database: cluster.NewDatabase(t),
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	g := testnode.Invoker(dialGRPC(t, n.GRPCAddr()))
	r := n.Client(testnode.REST)
	admin := testnode.AdminToken(t, g)
	ready := func() int {
		resp, err := http.Get(n.BaseURL() + "/readyz")
		if err != nil {
			t.Fatalf("/readyz: %v", err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz before the outage: %d", code)
	}

	cluster.Halt(t)
	calls := map[string]func(c testnode.Invoker) error{
		"ValidateSession": func(c testnode.Invoker) error { _, err := validate(c, admin); return err },
		"CreateUser": func(c testnode.Invoker) error {
			_, err := testnode.Call[gatehousev1.CreateUserResponse](context.Background(), c, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
				&gatehousev1.CreateUserRequest{Username: fmt.Sprintf("u%d", time.Now().UnixNano())})
			return err
		},
		"CreateSession": func(c testnode.Invoker) error { _, err := login(c, "admin", testnode.AdminPassword); return err },
	}
	for name, call := range calls {
		for front, c := range map[string]testnode.Invoker{"grpc": g, "rest": r} {
			if err := call(c); status.Code(err) != codes.Unavailable {
				t.Errorf("%s over %s during the outage: %v, want UNAVAILABLE", name, front, err)
			}
		}
	}
	for range 5 {
		if code := ready(); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz during the outage: %d, want 503", code)
		}
	}
	if got := strings.Count(logs.String(), "readiness: the database does not answer"); got != 1 {
		t.Errorf("readiness logged the outage %d times over 5 probes, want once:\n%s", got, logs.String())
	}
	// The sweeper runs every 500 ms: wait until it has met the outage, then for two more rounds.
	waitFor(t, "the sweeper to meet the outage", func() bool { return strings.Contains(logs.String(), "sweeping expired sessions failed") })
	sweeps := n.SweepRounds()
	waitFor(t, "two more sweeper rounds", func() bool { return n.SweepRounds() >= sweeps+2 })
	if got := strings.Count(logs.String(), "sweeping expired sessions failed"); got != 1 {
		t.Errorf("the sweeper logged the outage %d times, want once:\n%s", got, logs.String())
	}

	cluster.Resume(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := validate(g, admin)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("after the outage the admin's session answers %v", err)
		}
		time.Sleep(50 * time.Millisecond) // NOTE: polling a recovery, not waiting out a race
	}
	if code := ready(); code != http.StatusOK {
		t.Errorf("/readyz after the outage: %d", code)
	}
	waitFor(t, "the sweeper to recover", func() bool { return strings.Contains(logs.String(), "sweeping expired sessions works again") })
	if !strings.Contains(logs.String(), "readiness: the database answers again") {
		t.Errorf("no recovery line in the log:\n%s", logs.String())
	}
	for name, call := range calls {
		if err := call(r); err != nil {
			t.Errorf("%s over REST after the outage: %v", name, err)
		}
	}
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // NOTE: polling for an event the node only logs
	}
}
