package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server"
)

// propagationRate is the steady rate of changes of the propagation scenario, per second.
const propagationRate = 100

// propagationResult is the result of the propagation scenario for one kind of change.
type propagationResult struct {
	Scenario string `json:"scenario"`
	// Kind is grant (GrantRole, received as roles_changed) or terminate (TerminateSession,
	// received as terminated).
	Kind string `json:"kind"`
	// P50 and P99 are the medians over the runs of each run's percentiles of the delay from the
	// acknowledgement on node A to the receipt on node B; Max is the largest delay of any run.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	// Changes are the changes of all runs, Errors those whose call failed or whose push did not
	// arrive, and BeforeAck those whose push arrived before the acknowledgement (counted as 0 ms).
	Changes   int     `json:"changes"`
	Errors    int     `json:"errors"`
	BeforeAck int     `json:"before_ack"`
	Rate      int     `json:"rate"`
	Runs      int     `json:"runs"`
	Duration  float64 `json:"duration_s"`
	Database  string  `json:"database"`
	Nodes     int     `json:"nodes"`
}

// runPropagation measures the delay from the acknowledgement of a GrantRole and of a
// TerminateSession on node A to the receipt of its push by a WatchSession on node B, at a steady
// propagationRate changes a second, as integration's BenchmarkPropagation does.
//
// NOTE: PostgreSQL only. Across nodes is what it measures, and a SQLite file is opened by one node
// at a time; within one node it would measure the hub alone, a different figure under the same
// name, so on SQLite the scenario says so and prints nothing.
func runPropagation(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	b, err := e.second(ctx)
	if err != nil {
		return 0, err
	}
	if b == nil {
		e.progress("propagation: skipped on %s: it needs two nodes on one database (use PostgreSQL)", e.database)
		return 0, nil
	}
	admin, err := e.admin(ctx)
	if err != nil {
		return 0, err
	}
	connA, err := dial(e.node)
	if err != nil {
		return 0, err
	}
	defer connA.Close()
	ids := gatehousev1.NewIdentityServiceClient(connA)
	sessions := gatehousev1.NewSessionServiceClient(connA)
	role := e.prefix + "-propagation"
	if _, err := ids.CreateRole(withToken(ctx, admin), &gatehousev1.CreateRoleRequest{Name: role}); err != nil {
		return 0, fmt.Errorf("creating the role %s: %w", role, err)
	}
	changes := max(1, int(o.duration.Seconds()*propagationRate))
	bad := 0
	for _, kind := range []string{"grant", "terminate"} {
		var runs []sample
		var maxDelay time.Duration
		res := propagationResult{Scenario: "propagation", Kind: kind, Rate: propagationRate, Runs: o.runs,
			Duration: o.duration.Seconds(), Database: e.database, Nodes: 2}
		for run := range o.runs {
			change := func(ctx context.Context, user, session string) error {
				if kind == "grant" {
					_, err := ids.GrantRole(withToken(ctx, admin), &gatehousev1.GrantRoleRequest{
						Role: role, Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: user}})
					return err
				}
				_, err := sessions.TerminateSession(withToken(ctx, admin), &gatehousev1.TerminateSessionRequest{SessionId: session})
				return err
			}
			s, before, err := propagate(ctx, e, b, fmt.Sprintf("p%c%d-", kind[0], run), changes, kind, change)
			if err != nil {
				return 0, err
			}
			runs = append(runs, s)
			if len(s.latency) > 0 {
				maxDelay = max(maxDelay, s.latency[len(s.latency)-1])
			}
			res.Changes += s.ok + s.failed
			res.Errors += s.failed
			res.BeforeAck += before
			if s.failedTooOften() {
				bad++
			}
			e.progress("propagation/%s run %d/%d: %d changes, p50 %.2f ms, p99 %.2f ms%s", kind, run+1, o.runs,
				s.ok+s.failed, ms(s.percentile(0.5)), ms(s.percentile(0.99)), failures(sample{}, s))
		}
		var p50s, p99s []float64
		for _, s := range runs {
			p50s, p99s = append(p50s, ms(s.percentile(0.5))), append(p99s, ms(s.percentile(0.99)))
		}
		res.P50, res.P99, res.Max = round(median(p50s), 3), round(median(p99s), 3), round(ms(maxDelay), 3)
		if err := emit(res); err != nil {
			return 0, err
		}
	}
	return bad, nil
}

// propagate makes n changes on node A (change, given the user's id and the session's id) at
// propagationRate a second, each to a fresh user with one session watched on node b, and returns
// the delays from each change's acknowledgement to the receipt of its push (want: grant for
// roles_changed, terminate for terminated), and how many pushes came before their acknowledgement.
//
// NOTE: the watches are all open, past their snapshots, before the first change, and each change
// is made by a goroutine of its own on the tick, so that a slow acknowledgement delays no other
// change: the rate stays steady whatever the latency.
func propagate(ctx context.Context, e *env, b *server.Node, kind string, n int, want string,
	change func(ctx context.Context, user, session string) error) (sample, int, error) {
	users, tokens, err := seedSessions(ctx, e, kind, n)
	if err != nil {
		return sample{}, 0, err
	}
	cs, err := dialFor(b, n)
	if err != nil {
		return sample{}, 0, err
	}
	defer cs.close()
	// NOTE: a bound on a push that never comes, not a measure.
	wctx, cancel := context.WithTimeout(ctx, time.Duration(n)*time.Second/propagationRate+callGrace)
	defer cancel()
	watches, err := openWatches(wctx, cs, tokens)
	if err != nil {
		return sample{}, 0, err
	}
	acks, recvs := make([]time.Time, n), make([]time.Time, n)
	pushErrs, callErrs := make([]error, n), make([]error, n)
	var wg sync.WaitGroup
	for i, w := range watches {
		wg.Go(func() {
			m, err := w.next()
			recvs[i] = time.Now()
			switch {
			case err != nil:
				pushErrs[i] = fmt.Errorf("waiting for the push: %w", err)
			case want == "grant" && m.GetRolesChanged() == nil, want == "terminate" && m.GetTerminated() == nil:
				pushErrs[i] = fmt.Errorf("got %v, want %s", m, want)
			}
		})
	}
	tick := time.NewTicker(time.Second / propagationRate)
	defer tick.Stop()
	var calls sync.WaitGroup
	for i := range n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			calls.Wait()
			cancel()
			wg.Wait()
			return sample{}, 0, ctx.Err()
		}
		calls.Go(func() {
			err := change(wctx, users[i], watches[i].sessionID)
			acks[i] = time.Now()
			if err != nil {
				callErrs[i] = fmt.Errorf("the change: %w", err)
			}
		})
	}
	calls.Wait()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return sample{}, 0, err
	}
	var s sample
	before := 0
	for i := range n {
		if err := cmp.Or(callErrs[i], pushErrs[i]); err != nil {
			s.failed++
			if s.firstErr == nil {
				s.firstErr = err
			}
			continue
		}
		d := recvs[i].Sub(acks[i])
		if d < 0 {
			before++
			d = 0
		}
		s.ok++
		s.latency = append(s.latency, d)
	}
	slices.Sort(s.latency)
	return s, before, nil
}
