package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/gatehouse/gatehouse/client"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/internal/testpg"
)

// The faults of issue 13 that the live layer must survive, each over real `gatehouse serve`
// processes on one PostgreSQL database, with the streams read through the public client package
// wherever it speaks the front: a change reaching watchers on another node over every front; a
// node killed under open streams; a reader resuming again and again under concurrent writers;
// PostgreSQL restarted under load; and a subscriber that stops reading.
//
// Every stream is compared with ListEvents paged over the same window: the same events, each
// once, in the same order.

// TestFaultThreeNodesEveryFront: three nodes; a change made through node A (a membership that
// brings a role, then an administrator ending the session) reaches the session's watchers on node
// C over native gRPC, the gRPC and Connect protocols of the client package, gRPC-Web and REST
// (newline-delimited JSON), and an auditor's WatchEvents on C sees the same events as ListEvents.
func TestFaultThreeNodesEveryFront(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, testpg.NewDatabase(t), []string{"A", "B", "C"})
	a, c := nodes[0], nodes[2]
	admin := faultLogin(t, a.grpc, "admin", faultAdminPassword).Token
	auditor := newAuditor(t, a.grpc, admin, "auditor")
	const password = "carol-password"
	carol := mustFaultCall[gatehousev1.CreateUserResponse](t, a.grpc, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "carol", Password: password}).User
	group := mustFaultCall[gatehousev1.CreateGroupResponse](t, a.grpc, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
		&gatehousev1.CreateGroupRequest{Name: "oncall"}).Group
	mustFaultCall[gatehousev1.CreateRoleResponse](t, a.grpc, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "pager"})
	mustFaultCall[gatehousev1.GrantRoleResponse](t, a.grpc, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
		&gatehousev1.GrantRoleRequest{Role: "pager", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: group.Id}})
	sess := faultLogin(t, c.grpc, "carol", password)

	start := markStart(t, c.grpc, admin, auditor)
	cl, err := client.New([]string{c.url()}, client.WithToken(auditor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.CloseIdleConnections)
	watched := collectEvents(t, "WatchEvents on C", func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error] {
		return cl.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: start})
	})

	fronts := []string{"grpc", "client-connect", "client-grpc", "grpc-web", "rest"}
	watches := map[string]<-chan liveMsg{}
	for _, front := range fronts {
		ch := procWatchSession(t, c, front, sess.Token)
		m := liveNext(t, ch, front+": the snapshot")
		snap := m.resp.GetSnapshot()
		if snap == nil || snap.Session.GetId() != sess.Session.Id || slices.Contains(snap.Roles, "pager") {
			t.Fatalf("%s: first message %v (err %v), want a snapshot of session %s without pager", front, m.resp, m.err, sess.Session.Id)
		}
		watches[front] = ch
	}

	mustFaultCall[gatehousev1.AddGroupMemberResponse](t, a.grpc, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
		&gatehousev1.AddGroupMemberRequest{GroupId: group.Id, UserId: carol.Id})
	for _, front := range fronts {
		m := liveNext(t, watches[front], front+": roles_changed")
		if rc := m.resp.GetRolesChanged(); rc == nil || !slices.Equal(rc.Added, []string{"pager"}) || !slices.Contains(rc.Roles, "pager") {
			t.Errorf("%s: after AddGroupMember on node A: %v (err %v), want roles_changed adding pager", front, m.resp, m.err)
		}
	}
	mustFaultCall[gatehousev1.TerminateSessionResponse](t, a.grpc, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
		&gatehousev1.TerminateSessionRequest{SessionId: sess.Session.Id, Note: "fault test"})
	for _, front := range fronts {
		liveWantTerminated(t, watches[front], front+": terminated", gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN)
	}

	want := markEnd(t, c.grpc, admin, auditor, start)
	last := want[len(want)-1].Cursor
	watched.waitKey(t, last)
	if d := diffLogs(upTo(watched.all(), last), want); d != "" {
		t.Errorf("WatchEvents on C against ListEvents:\n%s", d)
	}
	var added, changed, ended bool
	for _, ev := range want {
		switch {
		case ev.Type == gatehousev1.EventType_EVENT_TYPE_GROUP_MEMBER_ADDED && ev.UserId == carol.Id:
			added = true
		case ev.Type == gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED && ev.UserId == carol.Id && slices.Contains(ev.GetRolesChanged().Added, "pager"):
			changed = true
		case ev.Type == gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED && ev.SessionId == sess.Session.Id:
			ended = true
		}
	}
	if !added || !changed || !ended {
		t.Errorf("the log after the changes: member added %v, roles changed %v, session terminated %v; want all", added, changed, ended)
	}
}

// procWatchSession opens WatchSession on node n over front with token, and delivers its messages
// (heartbeats included) and its end: "grpc" is native gRPC on the node's gRPC port;
// "client-connect" and "client-grpc" are the client package with the Connect and the gRPC
// protocol on the HTTP port; "grpc-web" is connect-go with gRPC-Web; "rest" reads the
// newline-delimited JSON of GET /v1/sessions:watch as curl -N would.
func procWatchSession(t *testing.T, n *faultNode, front, token string) <-chan liveMsg {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan liveMsg, 64)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	deliver := func(recv func() (*gatehousev1.WatchSessionResponse, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(out)
			for {
				m, err := recv()
				var msg liveMsg
				switch {
				case errors.Is(err, io.EOF):
					msg = liveMsg{end: true}
				case err != nil:
					msg = liveMsg{err: err, end: true}
				default:
					msg = liveMsg{resp: m}
				}
				select {
				case out <- msg:
				case <-ctx.Done():
					return
				}
				if msg.end {
					return
				}
			}
		}()
	}
	switch front {
	case "grpc":
		conn, err := grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		stream, err := gatehousev1.NewSessionServiceClient(conn).WatchSession(
			metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &gatehousev1.WatchSessionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		deliver(stream.Recv)
	case "client-connect", "client-grpc":
		opts := []client.Option{client.WithToken(token)}
		if front == "client-grpc" {
			opts = append(opts, client.WithGRPC())
		}
		cl, err := client.New([]string{n.url()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.CloseIdleConnections)
		// NOTE: the client ends its iteration without an error after terminated, which the
		// other fronts show as the stream's OK end.
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(out)
			msg := liveMsg{end: true}
			for m, err := range cl.WatchSession(ctx) {
				if err != nil {
					msg = liveMsg{err: err, end: true}
					break
				}
				select {
				case out <- liveMsg{resp: m}:
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- msg:
			case <-ctx.Done():
			}
		}()
	case "grpc-web":
		hc := testnode.HTTPClient()
		hc.Transport = liveBearer{token: token, next: hc.Transport}
		stream, err := gatehousev1connect.NewSessionServiceClient(hc, n.url(), connect.WithGRPCWeb()).
			WatchSession(ctx, &gatehousev1.WatchSessionRequest{})
		if err != nil {
			t.Fatal(err)
		}
		deliver(func() (*gatehousev1.WatchSessionResponse, error) {
			if stream.Receive() {
				return stream.Msg(), nil
			}
			if err := stream.Err(); err != nil {
				return nil, err
			}
			return nil, io.EOF
		})
	case "rest":
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url()+"/v1/sessions:watch", nil)
		if err != nil {
			t.Fatal(err)
		}
		hreq.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/sessions:watch: HTTP %d", resp.StatusCode)
		}
		lines := bufio.NewScanner(resp.Body)
		lines.Buffer(make([]byte, 1<<20), 1<<20)
		deliver(func() (*gatehousev1.WatchSessionResponse, error) {
			if !lines.Scan() {
				return nil, io.EOF
			}
			var wrapped struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(lines.Bytes(), &wrapped); err != nil {
				return nil, fmt.Errorf("line %q: %w", lines.Text(), err)
			}
			if wrapped.Error != nil {
				return nil, errors.New("stream error: " + string(wrapped.Error))
			}
			m := &gatehousev1.WatchSessionResponse{}
			if err := protojson.Unmarshal(wrapped.Result, m); err != nil {
				return nil, err
			}
			return m, nil
		})
	default:
		t.Fatalf("unknown front %q", front)
	}
	return out
}

// TestFaultSIGKILLResume: auditors follow WatchEvents on node A through the client package,
// configured with nodes A and B, while writers make changes through both nodes; node A is
// killed with SIGKILL (its writer's calls then fail with UNAVAILABLE) and the writers on B go
// on; every client resumes on B from its last cursor, and what each streamed is exactly
// ListEvents over the same window.
func TestFaultSIGKILLResume(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, testpg.NewDatabase(t), []string{"A", "B"})
	a, b := nodes[0], nodes[1]
	admin := faultLogin(t, b.grpc, "admin", faultAdminPassword).Token
	auditor := newAuditor(t, b.grpc, admin, "auditor")
	start := markStart(t, b.grpc, admin, auditor)

	type watcher struct {
		c    *collector[*gatehousev1.Event]
		logs *lockedBuffer
	}
	var watchers []watcher
	for i, opts := range [][]client.Option{nil, {client.WithGRPC()}, nil} {
		logs, logger := lockedLog()
		cl, err := client.New([]string{a.url(), b.url()}, append(opts, client.WithToken(auditor),
			client.WithBackoff(20*time.Millisecond, 200*time.Millisecond), client.WithLogger(logger))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.CloseIdleConnections)
		c := collectEvents(t, fmt.Sprintf("watcher %d", i), func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error] {
			return cl.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: start})
		})
		watchers = append(watchers, watcher{c, logs})
	}

	change := func(n *faultNode) func(w, i int) (string, error) {
		return func(w, i int) (string, error) {
			if i%2 == 0 {
				r, err := faultCall[gatehousev1.CreateUserResponse](n.grpc, 10*time.Second, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: fmt.Sprintf("u%s%d_%d", strings.ToLower(n.name), w, i)})
				return r.GetUser().GetId(), err
			}
			_, err := faultCall[gatehousev1.CreateRoleResponse](n.grpc, 10*time.Second, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
				&gatehousev1.CreateRoleRequest{Name: fmt.Sprintf("r%s%d_%d", strings.ToLower(n.name), w, i)})
			return "", err
		}
	}
	onA, onB := startLoad(t, 1, change(a)), startLoad(t, 3, change(b))
	for _, w := range watchers {
		w.c.waitCount(t, 30) // the streams are open on A and busy
	}
	a.kill(t)
	onA.halt()
	for _, r := range onA.all() {
		if r.err != nil && codeOf(r.err) != codes.Unavailable {
			t.Errorf("a call on node A failed with %v, want UNAVAILABLE", r.err)
		}
	}
	killed := succeeded(onB.all())
	onB.waitUntil(t, "60 changes on B after the kill", func(rs []callResult) bool { return succeeded(rs) >= killed+60 })
	onB.halt()
	for _, r := range onB.all() {
		if r.err != nil {
			t.Errorf("a change on node B failed: %v", r.err)
		}
	}

	want := markEnd(t, b.grpc, admin, auditor, start)
	last := want[len(want)-1].Cursor
	for i, w := range watchers {
		w.c.waitKey(t, last)
		if d := diffLogs(upTo(w.c.all(), last), want); d != "" {
			t.Errorf("watcher %d against ListEvents:\n%s", i, d)
		}
		if logs := w.logs.String(); !strings.Contains(logs, "node="+a.url()) || !strings.Contains(logs, "next="+b.url()) {
			t.Errorf("watcher %d logged no reconnect from A to B:\n%s", i, logs)
		}
	}
}

// TestFaultResumingReaderUnderConcurrentWriters: writers on two nodes make changes concurrently,
// some of them long transactions (a grant to a group of many members, one event per member), so
// that transactions commit out of the order of their event ids; meanwhile a reader leaves its
// WatchEvents stream after a few events, again and again, and resumes from its last cursor on the
// other node. The concatenated stream is exactly ListEvents, in order. A reader of `id > cursor`
// loses the events of a transaction that commits after one with higher ids: build with
// -tags naivereader (server/store/log_naive.go) to see this test fail.
func TestFaultResumingReaderUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, testpg.NewDatabase(t), []string{"A", "B"})
	a, b := nodes[0], nodes[1]
	admin := faultLogin(t, a.grpc, "admin", faultAdminPassword).Token
	auditor := newAuditor(t, a.grpc, admin, "auditor")

	// Two crowds of the same 100 members, each with a role of its own: a grant of the role to the
	// crowd writes one event per member in one transaction.
	const members = 100
	var crowds []*gatehousev1.Group
	for i := range 2 {
		crowds = append(crowds, mustFaultCall[gatehousev1.CreateGroupResponse](t, a.grpc, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
			&gatehousev1.CreateGroupRequest{Name: fmt.Sprintf("crowd%d", i)}).Group)
		mustFaultCall[gatehousev1.CreateRoleResponse](t, a.grpc, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
			&gatehousev1.CreateRoleRequest{Name: fmt.Sprintf("crowd%d_role", i)})
	}
	setup := startLoad(t, 4, func(w, i int) (string, error) {
		if w+4*i >= members {
			return "", errDone
		}
		u, err := faultCall[gatehousev1.CreateUserResponse](nodes[w%2].grpc, faultWait, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
			&gatehousev1.CreateUserRequest{Username: fmt.Sprintf("m%d", w+4*i)})
		if err != nil {
			return "", err
		}
		for _, crowd := range crowds {
			_, err = faultCall[gatehousev1.AddGroupMemberResponse](nodes[w%2].grpc, faultWait, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
				&gatehousev1.AddGroupMemberRequest{GroupId: crowd.Id, UserId: u.User.Id})
			if err != nil {
				return "", err
			}
		}
		return u.User.Id, nil
	})
	setup.wait(t)
	for _, r := range setup.all() {
		if r.err != nil {
			t.Fatalf("making the crowds: %v", r.err)
		}
	}

	start := markStart(t, a.grpc, admin, auditor)
	var clients []*client.Client
	for _, n := range nodes {
		cl, err := client.New([]string{n.url()}, client.WithToken(auditor))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.CloseIdleConnections)
		clients = append(clients, cl)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("the reader's seed: %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	var resumes atomic.Int64
	// The reader: each round opens WatchEvents on the next node from the last cursor, takes
	// 1 to 40 events and leaves.
	reader := collectEvents(t, "the resuming reader", func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error] {
		return func(yield func(*gatehousev1.Event, error) bool) {
			after := start
			for round := 0; ; round++ {
				take := 1 + rng.IntN(40)
				for ev, err := range clients[round%2].WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: after}) {
					if err != nil {
						yield(nil, err)
						return
					}
					after = ev.Cursor
					if !yield(ev, nil) {
						return
					}
					if take--; take == 0 {
						break
					}
				}
				resumes.Add(1)
			}
		}
	})

	// Writer w < 2 grants crowd<w>_role to crowd<w> and revokes it, through both nodes in turn;
	// the twelve others make users, groups and memberships through both nodes.
	writers := startLoad(t, 14, func(w, i int) (string, error) {
		n := nodes[(w+i)%2]
		if w < 2 {
			if i >= 8 {
				return "", errDone
			}
			role, crowd := fmt.Sprintf("crowd%d_role", w), crowds[w].Id
			if i%2 == 0 {
				_, err := faultCall[gatehousev1.GrantRoleResponse](n.grpc, faultWait, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
					&gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: crowd}})
				return "", err
			}
			_, err := faultCall[gatehousev1.RevokeRoleResponse](n.grpc, faultWait, gatehousev1.IdentityService_RevokeRole_FullMethodName, admin,
				&gatehousev1.RevokeRoleRequest{Role: role, Principal: &gatehousev1.RevokeRoleRequest_GroupId{GroupId: crowd}})
			return "", err
		}
		if i >= 15 {
			return "", errDone
		}
		name := fmt.Sprintf("w%d_%d", w, i)
		u, err := faultCall[gatehousev1.CreateUserResponse](n.grpc, faultWait, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
			&gatehousev1.CreateUserRequest{Username: name})
		if err != nil {
			return "", err
		}
		g, err := faultCall[gatehousev1.CreateGroupResponse](nodes[(w+1)%2].grpc, faultWait, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
			&gatehousev1.CreateGroupRequest{Name: name})
		if err != nil {
			return "", err
		}
		_, err = faultCall[gatehousev1.AddGroupMemberResponse](n.grpc, faultWait, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
			&gatehousev1.AddGroupMemberRequest{GroupId: g.Group.Id, UserId: u.User.Id})
		return "", err
	})
	writers.wait(t)
	for _, r := range writers.all() {
		if r.err != nil {
			t.Errorf("writer %d: %v", r.worker, r.err)
		}
	}

	want := markEnd(t, b.grpc, admin, auditor, start)
	last := want[len(want)-1].Cursor
	reader.waitKey(t, last)
	got := upTo(reader.all(), last)
	t.Logf("%d events, read in %d resumptions", len(want), resumes.Load())
	if d := diffLogs(got, want); d != "" {
		t.Errorf("the resuming reader against ListEvents:\n%s", d)
	}
	if resumes.Load() < 20 {
		t.Errorf("the reader resumed only %d times", resumes.Load())
	}
}

// TestFaultPostgresRestart: two nodes under a steady load of changes and validations, with an
// auditor's WatchEvents and a user's WatchSession open through the client package; PostgreSQL is
// stopped (pg_ctl stop -m fast) and started again. During the outage every call fails with
// UNAVAILABLE before its deadline; afterwards everything recovers by itself, the streams go on,
// and no event is lost: the stream is exactly ListEvents, and every change acknowledged has its
// event.
func TestFaultPostgresRestart(t *testing.T) {
	t.Parallel()
	cluster := testpg.NewCluster(t)
	nodes := startNodes(t, cluster.NewDatabase(t), []string{"A", "B"})
	a, b := nodes[0], nodes[1]
	admin := faultLogin(t, a.grpc, "admin", faultAdminPassword).Token
	auditor := newAuditor(t, a.grpc, admin, "auditor")
	const password = "bob-password"
	bob := mustFaultCall[gatehousev1.CreateUserResponse](t, a.grpc, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
		&gatehousev1.CreateUserRequest{Username: "bob", Password: password}).User
	night := mustFaultCall[gatehousev1.CreateGroupResponse](t, a.grpc, gatehousev1.IdentityService_CreateGroup_FullMethodName, admin,
		&gatehousev1.CreateGroupRequest{Name: "night"}).Group
	mustFaultCall[gatehousev1.CreateRoleResponse](t, a.grpc, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "night_ops"})
	mustFaultCall[gatehousev1.GrantRoleResponse](t, a.grpc, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
		&gatehousev1.GrantRoleRequest{Role: "night_ops", Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: night.Id}})
	bobToken := faultLogin(t, b.grpc, "bob", password).Token

	start := markStart(t, a.grpc, admin, auditor)
	eventsClient, err := client.New([]string{a.url(), b.url()}, client.WithToken(auditor), client.WithBackoff(20*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eventsClient.CloseIdleConnections)
	watched := collectEvents(t, "WatchEvents", func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error] {
		return eventsClient.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: start})
	})
	sessionClient, err := client.New([]string{b.url(), a.url()}, client.WithToken(bobToken), client.WithBackoff(20*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sessionClient.CloseIdleConnections)
	bobWatch := collect(t, "bob's WatchSession", nil, sessionClient.WatchSession)
	bobWatch.waitCount(t, 1)

	// The load: on each node, two writers creating users and a validator, each call bounded.
	const callDeadline = 5 * time.Second
	const workers = 6
	ld := startLoad(t, workers, func(w, i int) (string, error) {
		n := nodes[w%2]
		if w >= 4 {
			_, err := faultCall[gatehousev1.ValidateSessionResponse](n.grpc, callDeadline, gatehousev1.SessionService_ValidateSession_FullMethodName, "",
				&gatehousev1.ValidateSessionRequest{Token: bobToken})
			return "", err
		}
		u, err := faultCall[gatehousev1.CreateUserResponse](n.grpc, callDeadline, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
			&gatehousev1.CreateUserRequest{Username: fmt.Sprintf("u%d_%d", w, i)})
		return u.GetUser().GetId(), err
	})
	// NOTE: 150 changes on each side of the outage: on a fresh cluster transaction ids start near
	// 750, so the window crosses 1000, where a sort of their text (ORDER BY of a column that the
	// select list also names as text) puts 1000 before 758.
	const changes = 150
	created := func(rs []callResult, after time.Time) int {
		n := 0
		for _, r := range rs {
			if r.err == nil && r.id != "" && r.start.After(after) {
				n++
			}
		}
		return n
	}
	ld.waitUntil(t, "5 successes of every worker", func(rs []callResult) bool {
		return perWorker(rs, workers, 5, func(r callResult) bool { return r.err == nil }) && created(rs, time.Time{}) >= changes
	})

	cluster.Halt(t)
	halted := time.Now()
	// The outage lasts until every worker has made 10 calls in it and both nodes' tailers have
	// met it.
	ld.waitUntil(t, "10 calls of every worker during the outage", func(rs []callResult) bool {
		return perWorker(rs, workers, 10, func(r callResult) bool { return r.start.After(halted) })
	})
	for _, n := range nodes {
		waitFor(t, "node "+n.name+"'s tailer to meet the outage", func() bool {
			return strings.Contains(n.p.out.String(), "event log: reading the log failed")
		})
		n.alive(t)
	}
	resuming := time.Now()
	cluster.Resume(t)
	resumed := time.Now()
	ld.waitUntil(t, "a success of every worker after the restart", func(rs []callResult) bool {
		return perWorker(rs, workers, 1, func(r callResult) bool { return r.start.After(resumed) && r.err == nil }) && created(rs, resumed) >= changes
	})
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" to be ready again", func() bool { return ready(n) })
	}

	// The streams go on: bob joins the night group through node A after the restart.
	before := len(bobWatch.all())
	mustFaultCall[gatehousev1.AddGroupMemberResponse](t, a.grpc, gatehousev1.IdentityService_AddGroupMember_FullMethodName, admin,
		&gatehousev1.AddGroupMemberRequest{GroupId: night.Id, UserId: bob.Id})
	bobWatch.waitUntil(t, "night_ops", func(msgs []*gatehousev1.WatchSessionResponse, _ map[string]bool) bool {
		for _, m := range msgs[before:] {
			if slices.Contains(m.GetRolesChanged().GetAdded(), "night_ops") || slices.Contains(m.GetSnapshot().GetRoles(), "night_ops") {
				return true
			}
		}
		return false
	})
	ld.halt()

	results := ld.all()
	var during, failed int
	for _, r := range results {
		inOutage := r.start.After(halted) && r.end.Before(resuming)
		if inOutage {
			during++
		}
		switch {
		case r.err == nil && inOutage:
			t.Errorf("worker %d: a call made during the outage succeeded", r.worker)
		case r.err == nil:
		case codeOf(r.err) != codes.Unavailable:
			t.Errorf("worker %d: a call failed with %v, want UNAVAILABLE (started %s after the stop began)", r.worker, r.err, r.start.Sub(halted))
		default:
			failed++
		}
	}
	var longest time.Duration
	for _, r := range results {
		if r.err != nil {
			longest = max(longest, r.end.Sub(r.start))
		}
	}
	t.Logf("%d calls, %d during the outage, %d failed with UNAVAILABLE, the longest failure in %s", len(results), during, failed, longest)

	want := markEnd(t, a.grpc, admin, auditor, start)
	last := want[len(want)-1].Cursor
	watched.waitKey(t, last)
	if d := diffLogs(upTo(watched.all(), last), want); d != "" {
		t.Errorf("WatchEvents across the restart against ListEvents:\n%s", d)

	}
	logged := map[string]bool{}
	for _, ev := range want {
		if ev.Type == gatehousev1.EventType_EVENT_TYPE_USER_CREATED {
			logged[ev.UserId] = true
		}
	}
	var unlogged []string
	for _, r := range results {
		if r.err == nil && r.id != "" && !logged[r.id] {
			unlogged = append(unlogged, r.id)
		}
	}
	if len(unlogged) > 0 {
		t.Errorf("%d users were created (the call succeeded) but ListEvents has no USER_CREATED for them, among them %v", len(unlogged), unlogged[:min(5, len(unlogged))])
	}
}

// TestFaultSlowSubscriber: two WatchEvents subscribers on a node stop reading, while a third
// keeps up and writers make changes. The one that keeps up receives every event; each of the
// stopped ones is cut off (the node's subscriber count drops) and, when it reads again, gets what
// was sent before the cut, in order, then RESOURCE_EXHAUSTED with reason SUBSCRIBER_TOO_SLOW: the
// native gRPC one sees the error, the client package resumes from its cursor and ends up with
// every event.
//
// NOTE: the node has no flag for the subscriber buffer (events.DefaultBuffer, 256 batches), so
// the writers make changes until the buffers overflow; the stopped readers use the smallest HTTP/2
// windows (64 KiB) so that little sits in transit.
func TestFaultSlowSubscriber(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, testpg.NewDatabase(t), []string{"A"})
	a := nodes[0]
	admin := faultLogin(t, a.grpc, "admin", faultAdminPassword).Token
	auditor := newAuditor(t, a.grpc, admin, "auditor")
	start := markStart(t, a.grpc, admin, auditor)
	base := subscribers(t, a)

	// The stalled native gRPC reader: it reads one event, then nothing until the end.
	conn, err := grpc.NewClient(a.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	sctx, scancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+auditor))
	t.Cleanup(scancel)
	stalled, err := gatehousev1.NewSessionServiceClient(conn).WatchEvents(sctx, &gatehousev1.WatchEventsRequest{After: start})
	if err != nil {
		t.Fatal(err)
	}

	// The stalled client: its loop blocks on its first event until released.
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	stalledLogs, stalledLogger := lockedLog()
	slowClient, err := client.New([]string{a.url()}, client.WithToken(auditor), client.WithHTTPClient(faultHTTPClient(true)),
		client.WithBackoff(20*time.Millisecond, 200*time.Millisecond), client.WithLogger(stalledLogger))
	if err != nil {
		t.Fatal(err)
	}
	stalledClient := collectEvents(t, "the stalled client", func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error] {
		return func(yield func(*gatehousev1.Event, error) bool) {
			first := true
			for ev, err := range slowClient.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: start}) {
				if !yield(ev, err) {
					return
				}
				if first {
					first = false
					select {
					case <-release:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	})

	fastLogs, fastLogger := lockedLog()
	fastClient, err := client.New([]string{a.url()}, client.WithToken(auditor), client.WithLogger(fastLogger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fastClient.CloseIdleConnections)
	fast := collectEvents(t, "the fast client", func(ctx context.Context) iter.Seq2[*gatehousev1.Event, error] {
		return fastClient.WatchEvents(ctx, &gatehousev1.WatchEventsRequest{After: start})
	})

	description := strings.Repeat("x", 1024)
	writers := startLoad(t, 4, func(w, i int) (string, error) {
		_, err := faultCall[gatehousev1.CreateRoleResponse](a.grpc, faultWait, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
			&gatehousev1.CreateRoleRequest{Name: fmt.Sprintf("r%d_%d", w, i), Description: description})
		return "", err
	})
	first, err := stalled.Recv()
	if err != nil {
		t.Fatalf("the stalled reader's first event: %v", err)
	}
	stalledClient.waitCount(t, 1)
	fast.waitCount(t, 1)
	// NOTE: each stream has had an event, so its subscriptions are in place; a stream cut off
	// loses its own (its caller's guard, if any, stays until the stream's handler returns).
	open := subscribers(t, a)
	if open < base+3 {
		t.Fatalf("%d subscribers with the three streams open, %d before", open, base)
	}
	// NOTE: polling a gauge: there is no event to wait on.
	waitFor(t, "both stalled readers to be cut off", func() bool { return subscribers(t, a) <= open-2 })
	writers.halt()
	for _, r := range writers.all() {
		if r.err != nil {
			t.Errorf("writer %d: %v", r.worker, r.err)
		}
	}

	want := markEnd(t, a.grpc, admin, auditor, start)
	last := want[len(want)-1].Cursor
	fast.waitKey(t, last)
	if d := diffLogs(upTo(fast.all(), last), want); d != "" {
		t.Errorf("the fast client against ListEvents:\n%s", d)
	}
	if logs := fastLogs.String(); logs != "" {
		t.Errorf("the fast client was cut off:\n%s", logs)
	}

	// The stalled gRPC reader reads again: what was sent before the cut, then the error.
	got := []*gatehousev1.Event{first.Event}
	for {
		m, err := stalled.Recv()
		if err != nil {
			if codeOf(err) != codes.ResourceExhausted || testnode.Reason(err) != client.ReasonSubscriberTooSlow {
				t.Errorf("the stalled reader ended with %v (reason %q), want RESOURCE_EXHAUSTED %s", err, testnode.Reason(err), client.ReasonSubscriberTooSlow)
			}
			break
		}
		got = append(got, m.Event)
	}
	if len(got) >= len(want) {
		t.Errorf("the stalled reader received all %d events: it was never behind", len(got))
	} else if d := diffLogs(got, want[:len(got)]); d != "" {
		t.Errorf("the stalled reader's events against ListEvents:\n%s", d)
	}
	t.Logf("%d events; the stalled reader had %d when it was cut off", len(want), len(got))

	// The stalled client reads again: it is cut off, resumes from its cursor, and misses nothing.
	releaseOnce.Do(func() { close(release) })
	stalledClient.waitKey(t, last)
	if d := diffLogs(upTo(stalledClient.all(), last), want); d != "" {
		t.Errorf("the stalled client against ListEvents:\n%s", d)
	}
	if logs := stalledLogs.String(); !strings.Contains(logs, "reconnecting") || !strings.Contains(logs, "resource_exhausted") {
		t.Errorf("the stalled client did not resume after being cut off:\n%s", logs)
	}
}

// ready reports whether the node's /readyz answers 200.
func ready(n *faultNode) bool {
	resp, err := http.Get(n.url() + "/readyz")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// subscribers reads the node's gatehouse_stream_subscribers gauge.
func subscribers(t *testing.T, n *faultNode) int {
	t.Helper()
	resp, err := http.Get(n.url() + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "gatehouse_stream_subscribers "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("gatehouse_stream_subscribers %q: %v", v, err)
			}
			return int(f)
		}
	}
	t.Fatalf("/metrics has no gatehouse_stream_subscribers:\n%s", body)
	return 0
}
