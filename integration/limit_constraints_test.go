package integration_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// Every limit its own constraint (issue 15 part 1; ARCHITECTURE.md section 8): the limits of
// several role policies are not merged, each counts its own types with its own action, through
// REST and native gRPC on SQLite and PostgreSQL, and on two PostgreSQL nodes under racing logins.

// lcConstraint is a limit constraint as ResolveSessionPolicy lists it, written
// "source:max:action:[types]" with the source as limSources writes it.
func lcConstraint(c *gatehousev1.LimitConstraint) string {
	src := limSources(&gatehousev1.PolicySource{Scopes: []*gatehousev1.PolicyScope{c.Source}})
	return fmt.Sprintf("%s:%d:%s:%v", src[0], c.MaxSessions, c.OnLimit, c.CountedTypes)
}

// lcWantLimits checks the user's resolved limit constraints, in order.
func lcWantLimits(t testing.TB, e *limEnv, what, userID string, want ...string) {
	t.Helper()
	r := limMust[gatehousev1.ResolveSessionPolicyResponse](t, e.c, gatehousev1.PolicyService_ResolveSessionPolicy_FullMethodName, e.admin,
		&gatehousev1.ResolveSessionPolicyRequest{UserId: userID,
			Consistency: &gatehousev1.Consistency{Requirement: &gatehousev1.Consistency_FullyConsistent{FullyConsistent: true}}})
	var got []string
	for _, c := range r.Limits {
		got = append(got, lcConstraint(c))
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: resolved limits = %q, want %q", what, got, want)
	}
}

// lcWantDeniedBy logs in and expects the deny-new answer naming the constraint's source in the
// ErrorInfo metadata.
func lcWantDeniedBy(t testing.TB, c testnode.Invoker, what, username string, typ gatehousev1.SessionType, maxSessions int32, source map[string]string) {
	t.Helper()
	resp, err := limLogin(t, c, username, typ)
	if err == nil {
		t.Errorf("%s: CreateSession succeeded (session %s, evicted %v), want RESOURCE_EXHAUSTED CONCURRENT_SESSION_LIMIT",
			what, resp.Session.GetId(), resp.EvictedSessionIds)
		return
	}
	if status.Code(err) != codes.ResourceExhausted || testnode.Reason(err) != "CONCURRENT_SESSION_LIMIT" {
		t.Errorf("%s: CreateSession = %v (reason %q), want RESOURCE_EXHAUSTED CONCURRENT_SESSION_LIMIT", what, err, testnode.Reason(err))
		return
	}
	want := maps.Clone(source)
	want["max_sessions"] = fmt.Sprint(maxSessions)
	if got := testnode.Metadata(err); !maps.Equal(got, want) {
		t.Errorf("%s: CONCURRENT_SESSION_LIMIT metadata = %v, want %v", what, got, want)
	}
}

// TestLimitConstraintsContractorAndStaff is the example: contractor {1, mobile app} beside
// staff {10, web browser}. A second web login evicts nothing; a second mobile app login ends the
// first mobile app session only; under deny-new the contractor's limit refuses the login, naming
// its source, and changes nothing; ResolveSessionPolicy lists both constraints with their sources.
func TestLimitConstraintsContractorAndStaff(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		u := limNewUser(t, e.c, e.admin, "cora")
		limNewRole(t, e, "contractor", u)
		limNewRole(t, e, "staff", u)
		contractor := limCreatePolicy(t, e.c, e.admin, limRoleScope("contractor"), 1, limUnspecified, limMobileApp)
		limCreatePolicy(t, e.c, e.admin, limRoleScope("staff"), 10, limEvict, limWeb)
		// The global limit applies only when no role policy sets one.
		limCreatePolicy(t, e.c, e.admin, &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}}, 1, limDeny)

		lcWantLimits(t, e, "contractor and staff", u.Id,
			"role:contractor:1:LIMIT_ACTION_EVICT_OLDEST:[SESSION_TYPE_MOBILE_APP]",
			"role:staff:10:LIMIT_ACTION_EVICT_OLDEST:[SESSION_TYPE_WEB_BROWSER]")
		// The older fields describe the most restrictive constraint.
		limWantResolved(t, e, "contractor and staff", u.Id, limResolved{
			Max: 1, MaxFrom: []string{"role:contractor"}, OnLimit: limEvict, OnLimitFrom: []string{"default"},
			Counted: []gatehousev1.SessionType{limMobileApp}, CountedFrom: []string{"role:contractor"},
		})

		web1 := limMustLogin(t, e.c, "first web", "cora", limWeb)
		web2 := limMustLogin(t, e.c, "second web (staff allows 10)", "cora", limWeb)
		app1 := limMustLogin(t, e.c, "first mobile app", "cora", limMobileApp)
		limWantValid(t, e.c, "before the second mobile app", web1, web2, app1)
		app2 := limMustLogin(t, e.c, "second mobile app", "cora", limMobileApp, app1.Session.Id)
		limWantEnded(t, e.c, "first mobile app", limConcurrent, app1)
		// A type neither constraint counts is not limited (and the global deny-new does not apply).
		mb := limMustLogin(t, e.c, "mobile browser", "cora", limMobileBrowser)
		limWantValid(t, e.c, "after the second mobile app", web1, web2, app2, mb)
		limActive(t, e, "after the second mobile app", u.Id, web1, web2, app2, mb)

		// Under deny-new the contractor's limit refuses the third mobile app, naming its source,
		// and nothing changes; web logins still pass.
		limSetAction(t, e.c, e.admin, contractor, limDeny)
		lcWantLimits(t, e, "contractor under deny-new", u.Id,
			"role:contractor:1:LIMIT_ACTION_DENY_NEW:[SESSION_TYPE_MOBILE_APP]",
			"role:staff:10:LIMIT_ACTION_EVICT_OLDEST:[SESSION_TYPE_WEB_BROWSER]")
		before := limSessionCount(t, e, u.Id)
		lcWantDeniedBy(t, e.c, "third mobile app under deny-new", "cora", limMobileApp, 1,
			map[string]string{"source_scope": "role", "source_role": "contractor"})
		if after := limSessionCount(t, e, u.Id); after != before {
			t.Errorf("the denied login changed the user's session count from %d to %d", before, after)
		}
		limWantValid(t, e.c, "after the denied login", web1, web2, app2, mb)
		web3 := limMustLogin(t, e.c, "third web under the contractor's deny-new", "cora", limWeb)
		limActive(t, e, "at the end", u.Id, web1, web2, web3, app2, mb)

		ends := limTerminations(t, e.n, u.Id)
		limWantTerminations(t, "events", ends, limConcurrent, app1)
		limWantNoTermination(t, "events", ends, web1, web2, web3, app2, mb)
		if len(ends) != 1 {
			t.Errorf("SESSION_TERMINATED events name sessions %v, want only the first mobile app's", ends)
		}
	})
}

// TestLimitConstraintsOverlapping covers constraints that count some of the same types: a login
// that exceeds two of them ends one session when that frees both; deny-new on any exceeded
// constraint wins over evict-oldest on another, and then nothing ends; the user's own limit
// replaces the roles'; the global limit applies to a user without role limits, naming its source.
func TestLimitConstraintsOverlapping(t *testing.T) {
	limForEach(t, func(t *testing.T, e *limEnv) {
		u := limNewUser(t, e.c, e.admin, "olga")
		other := limNewUser(t, e.c, e.admin, "gus")
		limNewRole(t, e, "everyone", u)
		limNewRole(t, e, "apps", u)
		everyone := limCreatePolicy(t, e.c, e.admin, limRoleScope("everyone"), 2, limUnspecified) // interactive types
		limCreatePolicy(t, e.c, e.admin, limRoleScope("apps"), 1, limEvict, limMobileApp)
		limCreatePolicy(t, e.c, e.admin, &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Global{Global: true}}, 1, limDeny)
		lcWantLimits(t, e, "two overlapping role limits", u.Id,
			"role:apps:1:LIMIT_ACTION_EVICT_OLDEST:[SESSION_TYPE_MOBILE_APP]",
			"role:everyone:2:LIMIT_ACTION_EVICT_OLDEST:[SESSION_TYPE_WEB_BROWSER SESSION_TYPE_MOBILE_BROWSER SESSION_TYPE_MOBILE_APP]")

		// web (oldest), then an app: both constraints are full. A second app exceeds both; ending
		// the first app frees both, so the web session (the oldest that everyone counts) stays.
		web := limMustLogin(t, e.c, "web", "olga", limWeb)
		app1 := limMustLogin(t, e.c, "first app", "olga", limMobileApp)
		app2 := limMustLogin(t, e.c, "second app", "olga", limMobileApp, app1.Session.Id)
		limWantEnded(t, e.c, "first app", limConcurrent, app1)
		limWantValid(t, e.c, "after the second app", web, app2)
		// A mobile browser exceeds only everyone's limit: the oldest it counts (web) ends.
		mb := limMustLogin(t, e.c, "mobile browser", "olga", limMobileBrowser, web.Session.Id)
		limActive(t, e, "after the mobile browser", u.Id, app2, mb)

		// everyone says deny-new: an app login exceeds both, deny wins, nothing ends.
		limSetAction(t, e.c, e.admin, everyone, limDeny)
		before := limSessionCount(t, e, u.Id)
		lcWantDeniedBy(t, e.c, "app under everyone's deny-new", "olga", limMobileApp, 2,
			map[string]string{"source_scope": "role", "source_role": "everyone"})
		if after := limSessionCount(t, e, u.Id); after != before {
			t.Errorf("the denied login changed the user's session count from %d to %d", before, after)
		}
		limActive(t, e, "after the denied login", u.Id, app2, mb)

		// The user's own limit is the one limit: the roles' no longer apply.
		limCreatePolicy(t, e.c, e.admin, limUserScope(u.Id), 5, limUnspecified, limMobileApp, limWeb)
		lcWantLimits(t, e, "the user's own limit", u.Id,
			"user:"+u.Id+":5:LIMIT_ACTION_EVICT_OLDEST:[SESSION_TYPE_WEB_BROWSER SESSION_TYPE_MOBILE_APP]")
		app3 := limMustLogin(t, e.c, "app under the user's limit", "olga", limMobileApp)
		limActive(t, e, "under the user's limit", u.Id, app2, mb, app3)

		// gus holds no role with a limit: the global one applies, and names its source.
		lcWantLimits(t, e, "the global limit", other.Id,
			"global:1:LIMIT_ACTION_DENY_NEW:[SESSION_TYPE_WEB_BROWSER SESSION_TYPE_MOBILE_BROWSER SESSION_TYPE_MOBILE_APP]")
		limMustLogin(t, e.c, "gus's first", "gus", limWeb)
		lcWantDeniedBy(t, e.c, "gus's second under the global deny-new", "gus", limMobileApp, 1,
			map[string]string{"source_scope": "global"})

		// And a user's own deny-new names the user.
		limCreatePolicy(t, e.c, e.admin, limUserScope(other.Id), 1, limDeny, limWeb)
		lcWantDeniedBy(t, e.c, "gus's second under his own deny-new", "gus", limWeb, 1,
			map[string]string{"source_scope": "user", "source_user_id": other.Id})

		ends := limTerminations(t, e.n, u.Id)
		limWantTerminations(t, "events", ends, limConcurrent, app1, web)
		limWantNoTermination(t, "events", ends, app2, mb, app3)
	})
}

// TestConcurrentLoginsTwoNodesTwoConstraints races logins of one user, split across two nodes,
// against two overlapping role limits (everyone {3, interactive types} and apps {1, mobile app}),
// under evict-oldest in even rounds and deny-new in odd ones. After each round no constraint is
// exceeded; every successful login's session is active or was evicted exactly once; under
// deny-new nothing is evicted and every denial names a constraint that is full and counts the
// denied type.
func TestConcurrentLoginsTwoNodesTwoConstraints(t *testing.T) {
	t.Parallel()
	const (
		rounds = 8
		logins = 30
	)
	a, _, ca, cb := mnTwoNodes(t)
	clients := []testnode.Invoker{ca, cb}
	admin := testnode.AdminToken(t, ca)
	e := &limEnv{n: a, c: ca, admin: admin}
	u := limNewUser(t, ca, admin, "racer2")
	limNewRole(t, e, "everyone", u)
	limNewRole(t, e, "apps", u)
	everyone := limCreatePolicy(t, cb, admin, limRoleScope("everyone"), 3, limEvict)
	apps := limCreatePolicy(t, cb, admin, limRoleScope("apps"), 1, limEvict, limMobileApp)
	limits := map[string]struct {
		max   int
		count func(string) bool
	}{
		"everyone": {3, mnCounted},
		"apps":     {1, func(typ string) bool { return entsession.Type(typ) == entsession.TypeMobileApp }},
	}
	types := []gatehousev1.SessionType{limWeb, limMobileApp, limMobileBrowser}

	prevRows := 0
	for round := range rounds {
		action := limEvict
		if round%2 == 1 {
			action = limDeny
		}
		what := fmt.Sprintf("round %d (%s)", round, action)
		everyone = limSetAction(t, clients[round%2], admin, everyone, action)
		apps = limSetAction(t, clients[(round+1)%2], admin, apps, action)

		results := make([]mnLogin, logins)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range logins {
			wg.Go(func() {
				<-gate
				node := i % 2
				resp, err := limLogin(t, clients[node], "racer2", types[i%len(types)])
				results[i] = mnLogin{node: node, resp: resp, err: err}
			})
		}
		close(gate)
		wg.Wait()

		rows := mnSessions(t, a, u.Id)
		count := func(limit string) int {
			n := 0
			for _, r := range rows {
				if r.active && limits[limit].count(r.typ) {
					n++
				}
			}
			return n
		}
		for name, l := range limits {
			if n := count(name); n > l.max {
				t.Errorf("%s: %d active sessions counted by %s, past its limit of %d", what, n, name, l.max)
			}
		}

		var successes []mnLogin
		for i, r := range results {
			switch {
			case r.err == nil:
				successes = append(successes, r)
			case action == limDeny && status.Code(r.err) == codes.ResourceExhausted && testnode.Reason(r.err) == "CONCURRENT_SESSION_LIMIT":
				md := testnode.Metadata(r.err)
				l, ok := limits[md["source_role"]]
				typ, _ := lcStoredType(types[i%len(types)])
				switch {
				case md["source_scope"] != "role" || !ok:
					t.Errorf("%s: login %d denied with metadata %v, want a role's constraint", what, i, md)
				case !l.count(typ) || count(md["source_role"]) != l.max || md["max_sessions"] != fmt.Sprint(l.max):
					t.Errorf("%s: login %d (%s) denied by %v, which does not count it or is not full (%d active)",
						what, i, typ, md, count(md["source_role"]))
				}
			default:
				t.Errorf("%s: login %d on node %d: %v (reason %q), want success%s", what, i, r.node, r.err, testnode.Reason(r.err),
					map[bool]string{true: " or RESOURCE_EXHAUSTED CONCURRENT_SESSION_LIMIT"}[action == limDeny])
			}
		}
		if got := len(rows) - prevRows; got != len(successes) {
			t.Errorf("%s: %d new session rows for %d successful logins (denied logins must write nothing)", what, got, len(successes))
		}
		prevRows = len(rows)

		ends := limTerminations(t, a, u.Id)
		reported := map[string]int{}
		for _, s := range successes {
			for _, id := range s.resp.EvictedSessionIds {
				reported[id]++
			}
		}
		active, evicted := 0, 0
		for _, s := range successes {
			id := s.resp.Session.GetId()
			switch row, ok := rows[id]; {
			case !ok:
				t.Errorf("%s: session %s of a successful login is not in the sessions table", what, id)
			case row.active:
				active++
				if reported[id] != 0 {
					t.Errorf("%s: active session %s was reported evicted %d times", what, id, reported[id])
				}
			default:
				evicted++
				if row.reason != limConcurrent.String() || !slices.Equal(ends[id], []gatehousev1.TerminationReason{limConcurrent}) || reported[id] != 1 {
					t.Errorf("%s: evicted session %s: reason %q, SESSION_TERMINATED reasons %v, reported %d times; want CONCURRENT_LIMIT, once each",
						what, id, row.reason, ends[id], reported[id])
				}
			}
			delete(reported, id)
		}
		for id, n := range reported {
			t.Errorf("%s: evicted_session_ids names %s (%d times), which is no session of this round", what, id, n)
		}
		if action == limDeny && evicted != 0 {
			t.Errorf("%s: %d sessions evicted under deny-new", what, evicted)
		}
		if action == limEvict && (len(successes) != logins || count("everyone") != 3) {
			t.Errorf("%s: %d of %d logins succeeded, %d active under everyone; want all, and 3", what, len(successes), logins, count("everyone"))
		}
		t.Logf("%s: %d successes, %d evicted, %d active", what, len(successes), evicted, active)

		limMust[gatehousev1.TerminateUserSessionsResponse](t, clients[(round+1)%2],
			gatehousev1.SessionService_TerminateUserSessions_FullMethodName, admin,
			&gatehousev1.TerminateUserSessionsRequest{UserId: u.Id, Note: "end of " + what})
		if t.Failed() {
			t.Fatalf("stopping after %s", what)
		}
	}
}

// lcStoredType is the stored name of a session type.
func lcStoredType(t gatehousev1.SessionType) (string, bool) {
	switch t {
	case limWeb:
		return string(entsession.TypeWebBrowser), true
	case limMobileBrowser:
		return string(entsession.TypeMobileBrowser), true
	case limMobileApp:
		return string(entsession.TypeMobileApp), true
	case limAPI:
		return string(entsession.TypeNonInteractive), true
	}
	return "", false
}

// readmeConstraintsWant is what the README's two-constraint block prints after the sessions
// section's, in order, as the paragraph under it says. Cora's sessions are listed newest first.
var readmeConstraintsWant = []string{
	`\{"maxSessions":1,"countedTypes":\["SESSION_TYPE_MOBILE_APP"\],"onLimit":"LIMIT_ACTION_EVICT_OLDEST","source":\{"role":"contractor"\}\}`,
	`\{"maxSessions":10,"countedTypes":\["SESSION_TYPE_WEB_BROWSER"\],"onLimit":"LIMIT_ACTION_EVICT_OLDEST","source":\{"role":"staff"\}\}`,
	`\{"evicted":\[\]\}`,
	`\{"evicted":\[\]\}`,
	`\{"evicted":\[\]\}`,
	`\{"evicted":\["<id>"\]\}`,
	`\{"device":"tablet","active":true\}`,
	`\{"device":"phone","active":false\}`,
	`\{"device":"desktop","active":true\}`,
	`\{"device":"laptop","active":true\}`,
	`\{"code":8,"reason":"CONCURRENT_SESSION_LIMIT","why":\{"max_sessions":"1","source_role":"contractor","source_scope":"role"\}\}`,
}

// TestREADMELimitConstraints runs the README's two-constraint block after the "Sessions and
// policies with curl" block it continues, on SQLite and on two PostgreSQL nodes (the
// administrator's calls on one, the logins on the other).
func TestREADMELimitConstraints(t *testing.T) {
	script := readmeBlock(t, "H=localhost:8080\n") + readmeBlock(t, "# Two roles, two limits")
	want := append(slices.Clone(readmeSessionsWant), readmeConstraintsWant...)
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		out := runShell(t, onNode(script, readmeNode(t, testnode.DatabaseURL(t, testnode.SQLite))))
		matchLines(t, "the two-constraint block", out, want)
	})
	t.Run("postgres two nodes", func(t *testing.T) {
		t.Parallel()
		database := testnode.DatabaseURL(t, testnode.Postgres)
		a, b := readmeNode(t, database), readmeNode(t, database)
		twoNodes := strings.Replace(script, "H=localhost:8080\n", "H="+a+"; H2="+b+"\n", 1)
		twoNodes = strings.ReplaceAll(twoNodes, "login() { curl -s $H/", "login() { curl -s $H2/")
		out := runShell(t, twoNodes)
		matchLines(t, "the two-constraint block across two nodes", out, want)
	})
}
