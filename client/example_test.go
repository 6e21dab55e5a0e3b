package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/client"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// Follow the log of session events from a stored cursor, across node failures, and store each
// cursor once the event is processed, so that a restart resumes where this run stopped.
func ExampleClient_WatchEvents() {
	c, err := client.New(
		[]string{"http://gatehouse-1:8080", "http://gatehouse-2:8080"},
		client.WithToken("auditor-token"),
		client.WithBackoff(50*time.Millisecond, 5*time.Second),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseIdleConnections()

	cursor := loadCursor() // "" would start from now, without the no-miss guarantee before the first event
	req := &gatehousev1.WatchEventsRequest{
		After: cursor,
		Types: []gatehousev1.EventType{gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED},
	}
	for ev, err := range c.WatchEvents(context.Background(), req) {
		if err != nil {
			if connect.CodeOf(err) == connect.CodeOutOfRange {
				log.Fatal("the stored cursor is past retention: catch up from a full scan first")
			}
			log.Fatal(err)
		}
		fmt.Println(ev.GetSessionId(), ev.GetSessionTerminated().GetReason())
		storeCursor(ev.GetCursor())
	}
}

// Follow the caller's own session: rebuild state from each snapshot, apply role changes, and stop
// when the session ends.
func ExampleClient_WatchSession() {
	c, err := client.New([]string{"http://gatehouse-1:8080", "http://gatehouse-2:8080"},
		client.WithToken("session-token"), client.WithGRPC())
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseIdleConnections()

	for msg, err := range c.WatchSession(context.Background()) {
		if err != nil {
			log.Fatalf("watch ended: %v (reason %s)", err, client.Reason(err))
		}
		switch ev := msg.GetEvent().(type) {
		case *gatehousev1.WatchSessionResponse_Snapshot_:
			fmt.Println("roles:", ev.Snapshot.GetRoles())
		case *gatehousev1.WatchSessionResponse_RolesChanged_:
			fmt.Println("roles now:", ev.RolesChanged.GetRoles())
		case *gatehousev1.WatchSessionResponse_Terminated_:
			fmt.Println("session ended:", ev.Terminated.GetReason())
		}
	}
}

func loadCursor() string { return "" }

func storeCursor(string) {}
