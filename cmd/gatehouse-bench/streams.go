package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// streamSessionsPerUser is the number of watched sessions of one user in the stream-memory
// scenario, under the per-user cap (server.Config.MaxSessionsPerUser, 1000).
const streamSessionsPerUser = 100

// streamMemoryResult is the result of the stream-memory scenario.
type streamMemoryResult struct {
	Scenario string `json:"scenario"`
	Database string `json:"database"`
	Streams  int    `json:"streams"`
	// BytesPerStream is the growth of the process's resident memory per open stream;
	// HeapBytesPerStream that of its live heap, StackBytesPerStream that of its goroutine stacks,
	// and GoroutinesPerStream that of its goroutines.
	BytesPerStream      float64 `json:"bytes_per_stream"`
	HeapBytesPerStream  float64 `json:"heap_bytes_per_stream"`
	StackBytesPerStream float64 `json:"stack_bytes_per_stream"`
	GoroutinesPerStream float64 `json:"goroutines_per_stream"`
	// RSSBefore and RSSAfter are the process's resident memory without and with the streams.
	RSSBefore uint64 `json:"rss_before_bytes"`
	RSSAfter  uint64 `json:"rss_after_bytes"`
	// Measures says what the figure includes.
	Measures string `json:"measures"`
}

// runStreamMemory measures the resident memory o.streams idle WatchSession streams cost the node,
// over native gRPC, streamsPerConn streams a connection.
//
// NOTE: the clients run in a child process (a stream holder, see holdStreams), so that the figure,
// the growth of this process's VmRSS, is the node's end of the streams alone: its handler
// goroutines, hub subscriptions, HTTP/2 stream state, and the connections' buffers spread over
// their streams. Every session is validated once before the first measure, so that the figure
// leaves out the node's cache entries of the sessions and their users, which any use of a session
// makes. The bench's own heap (the tokens) is the same in both measures.
func runStreamMemory(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	n := o.streams
	e.progress("stream-memory: storing %d active sessions and validating each once", n)
	names := make([]string, (n+streamSessionsPerUser-1)/streamSessionsPerUser)
	for i := range names {
		names[i] = fmt.Sprintf("%s-s%06d", e.prefix, i)
	}
	st := e.node.Store()
	users, err := createUsers(ctx, st, names, nil)
	if err != nil {
		return 0, err
	}
	tokens, err := createSessions(ctx, st, users, n)
	if err != nil {
		return 0, err
	}
	failed, err := validateAll(ctx, e, tokens, o.concurrency)
	if err != nil {
		return 0, err
	}
	if failed > 0 {
		return 0, fmt.Errorf("%d sessions did not validate", failed)
	}
	before, err := measureMemory()
	if err != nil {
		return 0, err
	}
	e.progress("stream-memory: opening %d WatchSession streams from a child process", n)
	h, err := startHolder(ctx, e.node.GRPCAddr(), tokens, e.log)
	if err != nil {
		return 0, err
	}
	after, err := measureMemory()
	if err := errors.Join(err, h.stop()); err != nil {
		return 0, err
	}
	res := streamMemoryResult{
		Scenario:            "stream-memory",
		Database:            e.database,
		Streams:             n,
		BytesPerStream:      round(perItem(after.rss, before.rss, n), 0),
		HeapBytesPerStream:  round(perItem(after.heap, before.heap, n), 0),
		StackBytesPerStream: round(perItem(after.stacks, before.stacks, n), 0),
		GoroutinesPerStream: round(float64(after.goroutines-before.goroutines)/float64(n), 2),
		RSSBefore:           before.rss,
		RSSAfter:            after.rss,
		Measures:            "VmRSS delta of the node's process; the clients run in a child process; sessions cached before",
	}
	e.progress("stream-memory: %d streams: %.0f bytes a stream (heap %.0f, stacks %.0f, goroutines %.2f)", n,
		res.BytesPerStream, res.HeapBytesPerStream, res.StackBytesPerStream, res.GoroutinesPerStream)
	return 0, emit(res)
}

// groupFanoutResult is the result of the group-fanout scenario.
type groupFanoutResult struct {
	Scenario string `json:"scenario"`
	Database string `json:"database"`
	Members  int    `json:"members"`
	// Seconds is the median over the runs of the time from sending the change to the receipt of the
	// last member's roles_changed; MaxSeconds the longest; AckSeconds the median time to the
	// change's acknowledgement.
	Seconds    float64 `json:"seconds"`
	MaxSeconds float64 `json:"max_seconds"`
	AckSeconds float64 `json:"ack_seconds"`
	// Missing counts, over all runs, the watchers that received no roles_changed in time.
	Missing int `json:"missing"`
	Runs    int `json:"runs"`
}

// fanoutWait bounds the wait for the last roles_changed of one run: a bound, not a measure.
const fanoutWait = 2 * time.Minute

// runGroupFanout grants a role to a group of o.members users, each with one session watched over
// native gRPC, and measures the time until every watcher has its roles_changed; o.runs times,
// granting and revoking in turn (a revocation pushes roles_changed alike).
//
// NOTE: the memberships are written into the store, as the sessions are: the group holds no role
// then, so they change no one's roles, and through the API they would cost 10,000 transactions.
func runGroupFanout(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	m := o.members
	admin, err := e.admin(ctx)
	if err != nil {
		return 0, err
	}
	e.progress("group-fanout: storing %d users with one active session each, members of one group", m)
	users, tokens, err := seedSessions(ctx, e, "g", m)
	if err != nil {
		return 0, err
	}
	conn, err := dial(e.node)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ids := gatehousev1.NewIdentityServiceClient(conn)
	actx := withToken(ctx, admin)
	g, err := ids.CreateGroup(actx, &gatehousev1.CreateGroupRequest{Name: e.prefix + "-fanout"})
	if err != nil {
		return 0, fmt.Errorf("creating the group: %w", err)
	}
	group := g.GetGroup().GetId()
	st := e.node.Store()
	for start := 0; start < m; start += insertBatch {
		end := min(start+insertBatch, m)
		builders := make([]*ent.GroupMemberCreate, 0, end-start)
		for _, u := range users[start:end] {
			builders = append(builders, st.Client.GroupMember.Create().SetGroupID(group).SetUserID(u))
		}
		if err := st.Client.GroupMember.CreateBulk(builders...).Exec(ctx); err != nil {
			return 0, fmt.Errorf("storing members %d to %d: %w", start, end, err)
		}
	}
	role := e.prefix + "-fanout"
	if _, err := ids.CreateRole(actx, &gatehousev1.CreateRoleRequest{Name: role}); err != nil {
		return 0, fmt.Errorf("creating the role %s: %w", role, err)
	}
	cs, err := dialFor(e.node, m)
	if err != nil {
		return 0, err
	}
	defer cs.close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.progress("group-fanout: opening %d WatchSession streams", m)
	watches, err := openWatches(wctx, cs, tokens)
	if err != nil {
		return 0, err
	}
	res := groupFanoutResult{Scenario: "group-fanout", Database: e.database, Members: m, Runs: o.runs}
	var secs, acks []float64
	bad := 0
	for run := range o.runs {
		grant := run%2 == 0
		took, ack, missing, err := fanout(wctx, watches, func() error {
			if grant {
				_, err := ids.GrantRole(actx, &gatehousev1.GrantRoleRequest{Role: role, Principal: &gatehousev1.GrantRoleRequest_GroupId{GroupId: group}})
				return err
			}
			_, err := ids.RevokeRole(actx, &gatehousev1.RevokeRoleRequest{Role: role, Principal: &gatehousev1.RevokeRoleRequest_GroupId{GroupId: group}})
			return err
		})
		if err != nil {
			return 0, err
		}
		if missing > 0 {
			bad++
		}
		res.Missing += missing
		secs, acks = append(secs, took.Seconds()), append(acks, ack.Seconds())
		res.MaxSeconds = max(res.MaxSeconds, round(took.Seconds(), 3))
		e.progress("group-fanout run %d/%d (%s): %d members in %.3f s (acknowledged after %.3f s), %d missing", run+1, o.runs,
			map[bool]string{true: "grant", false: "revoke"}[grant], m, took.Seconds(), ack.Seconds(), missing)
	}
	res.Seconds, res.AckSeconds = round(median(secs), 3), round(median(acks), 3)
	return bad, emit(res)
}

// fanout makes change and waits until every watch has received roles_changed, and returns the time
// from the change's start to the last receipt and to its acknowledgement, and the watches that
// received none within fanoutWait.
func fanout(ctx context.Context, watches []watch, change func() error) (took, ack time.Duration, missing int, err error) {
	recvs := make([]time.Duration, len(watches))
	got := make([]bool, len(watches))
	wctx, cancel := context.WithTimeout(ctx, fanoutWait)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i, w := range watches {
		wg.Go(func() {
			// NOTE: Recv watches the streams' own context, not wctx: past fanoutWait, fanout
			// fails, and the scenario's return ends the streams and so these waits.
			m, err := w.next()
			if err == nil && m.GetRolesChanged() != nil && wctx.Err() == nil {
				recvs[i], got[i] = time.Since(start), true
			}
		})
	}
	if err := change(); err != nil {
		cancel()
		return 0, 0, 0, fmt.Errorf("changing the group's roles: %w", err)
	}
	ack = time.Since(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-wctx.Done():
		return 0, 0, 0, fmt.Errorf("not every watcher had roles_changed within %s (or interrupted)", fanoutWait)
	}
	for i := range watches {
		if !got[i] {
			missing++
			continue
		}
		took = max(took, recvs[i])
	}
	return took, ack, missing, nil
}
