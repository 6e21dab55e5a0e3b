package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

const (
	// raceLogins are the parallel logins of one user in the limit-race scenario.
	raceLogins = 200
	// raceLimit is that user's max_sessions.
	raceLimit = 3
)

// limitRaceResult is the result of the limit-race scenario.
type limitRaceResult struct {
	Scenario string `json:"scenario"`
	// P50 and P99 are the medians over the runs of each run's login latency percentiles.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	// ActiveAfter is the most active WEB_BROWSER sessions the user had after any run (the goal:
	// raceLimit), ActiveAfterMin the fewest.
	ActiveAfter    int `json:"active_after"`
	ActiveAfterMin int `json:"active_after_min"`
	Logins         int `json:"logins"`
	Limit          int `json:"limit"`
	// OnLimit is the policy's on_limit.
	OnLimit  string `json:"on_limit"`
	Errors   int    `json:"errors"`
	Runs     int    `json:"runs"`
	Database string `json:"database"`
	Nodes    int    `json:"nodes"`
}

// runLimitRace makes raceLogins parallel logins of one user whose policy allows raceLimit
// WEB_BROWSER sessions and evicts the oldest past it, alternately on the two nodes, and then counts
// the user's active WEB_BROWSER sessions with ListSessions, o.runs times with a fresh user.
//
// NOTE: EVICT_OLDEST, so that every login succeeds and the race is between 200 transactions that
// each insert a session and end the oldest: with DENY_NEW, 197 would fail, a figure about refusals.
// The logins are trusted logins by the administrator (a session issuer), not password logins: 200
// argon2id hashes would queue past the node's hash queue (64) and measure the hash, which the
// login scenario measures; the limit is enforced the same in both. On SQLite there is one node.
func runLimitRace(ctx context.Context, e *env, o options, emit func(any) error) (int, error) {
	b, err := e.second(ctx)
	if err != nil {
		return 0, err
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
	clients := []gatehousev1.SessionServiceClient{gatehousev1.NewSessionServiceClient(connA)}
	if b != nil {
		connB, err := dial(b)
		if err != nil {
			return 0, err
		}
		defer connB.Close()
		clients = append(clients, gatehousev1.NewSessionServiceClient(connB))
	} else {
		e.progress("limit-race: one node on %s (a second needs PostgreSQL)", e.database)
	}
	policies := gatehousev1.NewPolicyServiceClient(connA)
	actx := withToken(ctx, admin)
	res := limitRaceResult{Scenario: "limit-race", Logins: raceLogins, Limit: raceLimit, OnLimit: "EVICT_OLDEST",
		Runs: o.runs, Database: e.database, Nodes: len(clients), ActiveAfterMin: raceLogins}
	bad := 0
	var p50s, p99s []float64
	for run := range o.runs {
		name := fmt.Sprintf("%s-race%d", e.prefix, run)
		users, err := createUsers(ctx, e.node.Store(), []string{name}, nil)
		if err != nil {
			return 0, err
		}
		if _, err := policies.CreateSessionPolicy(actx, &gatehousev1.CreateSessionPolicyRequest{Policy: &gatehousev1.SessionPolicy{
			Scope:        &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_UserId{UserId: users[0]}},
			MaxSessions:  new(int32(raceLimit)),
			CountedTypes: []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER},
			OnLimit:      gatehousev1.LimitAction_LIMIT_ACTION_EVICT_OLDEST,
		}}); err != nil {
			return 0, fmt.Errorf("creating the user's session policy: %w", err)
		}
		s, err := raceLogin(actx, clients, name)
		if err != nil {
			return 0, err
		}
		active, err := countActive(actx, clients[0], users[0])
		if err != nil {
			return 0, err
		}
		res.ActiveAfter, res.ActiveAfterMin = max(res.ActiveAfter, active), min(res.ActiveAfterMin, active)
		res.Errors += s.failed
		if s.failedTooOften() {
			bad++
		}
		p50s, p99s = append(p50s, ms(s.percentile(0.5))), append(p99s, ms(s.percentile(0.99)))
		e.progress("limit-race run %d/%d: %d logins, p99 %.2f ms, %d active after%s", run+1, o.runs, s.ok, ms(s.percentile(0.99)), active, failures(sample{}, s))
	}
	res.P50, res.P99 = round(median(p50s), 3), round(median(p99s), 3)
	return bad, emit(res)
}

// raceLogin starts raceLogins trusted WEB_BROWSER logins of username at once, the ith on
// clients[i%len(clients)], and returns their latencies.
func raceLogin(ctx context.Context, clients []gatehousev1.SessionServiceClient, username string) (sample, error) {
	lat := make([]time.Duration, raceLogins)
	errs := make([]error, raceLogins)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range raceLogins {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			resp, err := clients[i%len(clients)].CreateSession(ctx, &gatehousev1.CreateSessionRequest{
				Credential: &gatehousev1.CreateSessionRequest_Trusted{Trusted: &gatehousev1.TrustedCredential{Username: username}},
				Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
			})
			lat[i] = time.Since(t0)
			if err == nil && resp.GetToken() == "" {
				err = fmt.Errorf("CreateSession answered without a token")
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return sample{}, err
	}
	var s sample
	for i, err := range errs {
		if err != nil {
			s.failed++
			if s.firstErr == nil {
				s.firstErr = err
			}
			continue
		}
		s.ok++
		s.latency = append(s.latency, lat[i])
	}
	slices.Sort(s.latency)
	return s, nil
}

// countActive returns the active WEB_BROWSER sessions of the user, as ListSessions lists them.
func countActive(ctx context.Context, c gatehousev1.SessionServiceClient, user string) (int, error) {
	n, page := 0, ""
	for {
		resp, err := c.ListSessions(ctx, &gatehousev1.ListSessionsRequest{UserId: user, PageSize: 1000, PageToken: page,
			Types: []gatehousev1.SessionType{gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER}})
		if err != nil {
			return 0, fmt.Errorf("listing the user's sessions: %w", err)
		}
		n += len(resp.GetSessions())
		if page = resp.GetNextPageToken(); page == "" {
			return n, nil
		}
	}
}
