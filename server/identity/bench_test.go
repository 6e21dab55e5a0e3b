package identity_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gatehouse/gatehouse/ent"
	entsession "github.com/gatehouse/gatehouse/ent/session"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testpg"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/policy"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// bigGroupSize is the group size ARCHITECTURE.md section 4 says a grant must stay fast for.
const bigGroupSize = 10_000

// bigGroup is a database with one group of many members, and the identity domain over it.
type bigGroup struct {
	st      *store.Store
	svc     *identity.Service
	groupID string
	members []string // sorted
}

// databaseURL returns a fresh database of a backend ("sqlite" or "postgres").
func databaseURL(tb testing.TB, backend string) string {
	tb.Helper()
	switch backend {
	case "sqlite":
		return "sqlite://" + filepath.Join(tb.TempDir(), "gatehouse.db")
	case "postgres":
		return testpg.NewDatabase(tb)
	}
	tb.Fatalf("unknown backend %q", backend)
	return ""
}

var backends = []string{"sqlite", "postgres"}

// newBigGroup creates a database with n users, all members of one group, inserted in bulk (not
// through the domain: the set-up is not what is measured).
func newBigGroup(tb testing.TB, backend string, n int) *bigGroup {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, databaseURL(tb, backend))
	if err != nil {
		tb.Fatalf("opening the store: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	if err := st.Migrate(ctx); err != nil {
		tb.Fatalf("migrating: %v", err)
	}
	g := &bigGroup{
		st:      st,
		svc:     identity.New(st, auth.NewHasher(0), slog.New(slog.NewTextHandler(io.Discard, nil)), nil),
		groupID: convert.NewID(),
	}

	start := time.Now()
	tx, err := st.Client.Tx(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	fail := func(what string, err error) {
		tb.Helper()
		_ = tx.Rollback()
		tb.Fatalf("%s: %v", what, err)
	}
	if err := tx.Group.Create().SetID(g.groupID).SetName("everyone").SetNameKey("everyone").Exec(ctx); err != nil {
		fail("creating the group", err)
	}
	const batch = 1000 // well under SQLite's 32766 bound parameters per statement
	now := time.Now().UTC()
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		users := make([]*ent.UserCreate, 0, hi-lo)
		members := make([]*ent.GroupMemberCreate, 0, hi-lo)
		for i := lo; i < hi; i++ {
			id, name := convert.NewID(), fmt.Sprintf("member-%05d", i)
			g.members = append(g.members, id)
			users = append(users, tx.User.Create().SetID(id).SetUsername(name).SetUsernameKey(name).
				SetCreateTime(now).SetUpdateTime(now))
			members = append(members, tx.GroupMember.Create().SetGroupID(g.groupID).SetUserID(id).SetCreateTime(now))
		}
		if err := tx.User.CreateBulk(users...).Exec(ctx); err != nil {
			fail("inserting users", err)
		}
		if err := tx.GroupMember.CreateBulk(members...).Exec(ctx); err != nil {
			fail("inserting memberships", err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatalf("committing the set-up: %v", err)
	}
	slices.Sort(g.members)
	tb.Logf("%s: set up %d users in one group in %v", backend, n, time.Since(start).Round(time.Millisecond))
	return g
}

// count runs a COUNT query written with ? placeholders.
func (g *bigGroup) count(tb testing.TB, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := g.st.DB.QueryRow(g.st.Rebind(query), args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestGroupGrantToTenThousandMembers grants a role to a group of 10,000 members and checks that
// every member holds it, through the group, and that exactly one ROLES_CHANGED event per member was
// written. It logs the duration of the grant; it asserts nothing about time.
func TestGroupGrantToTenThousandMembers(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			g := newBigGroup(t, backend, bigGroupSize)
			if _, _, err := g.svc.CreateRole(ctx, "reader", "", nil); err != nil {
				t.Fatal(err)
			}
			if _, _, err := g.svc.CreateRole(ctx, "deployer", "", []string{"reader"}); err != nil {
				t.Fatal(err)
			}
			var before int64
			if err := g.st.DB.QueryRow("SELECT COALESCE(MAX(id), 0) FROM events").Scan(&before); err != nil {
				t.Fatal(err)
			}

			start := time.Now()
			impact, pos, err := g.svc.GrantRole(ctx, "deployer", identity.Principal{GroupID: g.groupID}, store.Apply)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("GrantRole to a group of %d: %v", bigGroupSize, err)
			}
			if impact.UsersAffected != bigGroupSize || len(impact.Users) != policy.MaxImpactUsers {
				t.Errorf("the impact counts %d users and lists %d, want %d and %d", impact.UsersAffected, len(impact.Users), bigGroupSize, policy.MaxImpactUsers)
			}
			t.Logf("%s: GrantRole to a group of %d members took %v (%.0f users/s)",
				backend, bigGroupSize, elapsed.Round(time.Millisecond), float64(bigGroupSize)/elapsed.Seconds())

			// Every member holds the role through the group, and what it contains through it.
			if n := g.count(t, "SELECT COUNT(DISTINCT user_id) FROM effective_roles WHERE role = ?", "deployer"); n != bigGroupSize {
				t.Errorf("%d users hold deployer, want %d", n, bigGroupSize)
			}
			if n := g.count(t, `SELECT COUNT(*) FROM group_members m WHERE m.group_id = ? AND NOT EXISTS (
				SELECT 1 FROM effective_roles e WHERE e.user_id = m.user_id AND e.role = ? AND e.source_kind = 'group' AND e.source_ref = m.group_id)`,
				g.groupID, "deployer"); n != 0 {
				t.Errorf("%d members lack deployer through the group", n)
			}
			if n := g.count(t, "SELECT COUNT(*) FROM effective_roles WHERE role = ? AND source_kind = 'role' AND source_ref = ?", "reader", "deployer"); n != bigGroupSize {
				t.Errorf("%d users hold reader through deployer, want %d", n, bigGroupSize)
			}
			for _, u := range []string{g.members[0], g.members[bigGroupSize/2], g.members[bigGroupSize-1]} {
				roles, err := g.svc.GetEffectiveRoles(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				want := []*gatehousev1.EffectiveRole{
					{Role: "deployer", Sources: []*gatehousev1.RoleSource{{Source: &gatehousev1.RoleSource_GroupId{GroupId: g.groupID}}}},
					{Role: "reader", Sources: []*gatehousev1.RoleSource{{Source: &gatehousev1.RoleSource_ContainedInRole{ContainedInRole: "deployer"}}}},
				}
				if !slices.EqualFunc(roles, want, func(a, b *gatehousev1.EffectiveRole) bool { return proto.Equal(a, b) }) {
					t.Errorf("effective roles of member %s = %v, want %v", u, roles, want)
				}
			}

			// Exactly one ROLE_GRANTED and one ROLES_CHANGED per member, each with what it gained.
			rows, err := g.st.DB.Query(g.st.Rebind("SELECT id, type, user_id, payload FROM events WHERE id > ? ORDER BY id"), before)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var (
				changed, granted, other int
				users                   = make([]string, 0, bigGroupSize)
				last                    int64
				errorsAllowed           = 5 // report a few bad payloads, not 10,000
			)
			for rows.Next() {
				var (
					id          int64
					typ, userID string
					payload     []byte
					ev          gatehousev1.Event
				)
				if err := rows.Scan(&id, &typ, &userID, &payload); err != nil {
					t.Fatal(err)
				}
				last = id
				if err := proto.Unmarshal(payload, &ev); err != nil {
					t.Fatalf("event %d: %v", id, err)
				}
				switch ev.Type {
				case gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED:
					changed++
					users = append(users, userID)
					p := ev.GetRolesChanged()
					if (!slices.Equal(p.GetAdded(), []string{"deployer", "reader"}) || len(p.GetRemoved()) != 0 ||
						!slices.Equal(p.GetRoles(), []string{"deployer", "reader"}) || ev.UserId != userID) && errorsAllowed > 0 {
						errorsAllowed--
						t.Errorf("ROLES_CHANGED %d for %s: %v", id, userID, p)
					}
				case gatehousev1.EventType_EVENT_TYPE_ROLE_GRANTED:
					granted++
				default:
					other++
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if changed != bigGroupSize || granted != 1 || other != 0 {
				t.Errorf("the grant wrote %d ROLES_CHANGED, %d ROLE_GRANTED and %d other events; want %d, 1 and 0",
					changed, granted, other, bigGroupSize)
			}
			slices.Sort(users)
			if !slices.Equal(users, g.members) {
				t.Errorf("ROLES_CHANGED events do not name each member exactly once (%d events, %d distinct users)",
					len(users), len(slices.Compact(users)))
			}
			if pos.ID != last {
				t.Errorf("GrantRole returned position %+v, want the last event %d", pos, last)
			}
		})
	}
}

// BenchmarkGroupGrantToTenThousandMembers measures GrantRole of a new role to a group of 10,000
// members (one transaction: the grant, 10,000 rematerialised users, 10,001 events).
func BenchmarkGroupGrantToTenThousandMembers(b *testing.B) {
	for _, backend := range backends {
		b.Run(backend, func(b *testing.B) {
			g := newBigGroup(b, backend, bigGroupSize)
			benchGrants(b, g, "role", func(role string, _ int) {
				if _, _, err := g.svc.CreateRole(context.Background(), role, "", nil); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// bigGroupWithSessions is a bigGroup whose members each hold one live session, with the session
// and policy domains wired as a node wires them, so that role changes apply session policies.
type bigGroupWithSessions struct {
	*bigGroup
	policies *policy.Service
}

// newBigGroupWithSessions creates a bigGroup of n members, each with one live web-browser session
// (inserted in bulk), and rewires its identity domain with the session hooks.
func newBigGroupWithSessions(tb testing.TB, backend string, n int) *bigGroupWithSessions {
	tb.Helper()
	ctx := context.Background()
	g := newBigGroup(tb, backend, n)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hasher := auth.NewHasher(0)
	sessions := session.New(g.st, hasher, log, session.Options{})
	g.svc = identity.New(g.st, hasher, log, sessions.RolesChanged, identity.WithPasswordVerifier(sessions))
	tx, err := g.st.Client.Tx(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	now := convert.Now()
	const batch = 1000
	for lo := 0; lo < n; lo += batch {
		creates := make([]*ent.SessionCreate, 0, batch)
		for _, u := range g.members[lo:min(lo+batch, n)] {
			_, hash, err := auth.NewToken()
			if err != nil {
				tb.Fatal(err)
			}
			creates = append(creates, tx.Session.Create().SetID(convert.NewID()).SetUserID(u).SetTokenHash(hash).
				SetType(entsession.TypeWebBrowser).SetCreateTime(now).SetLastActiveTime(now).
				SetIdleExpireTime(now.Add(policy.DefaultIdleTimeout)).SetAbsoluteExpireTime(now.Add(policy.DefaultAbsoluteTimeout)))
		}
		if err := tx.Session.CreateBulk(creates...).Exec(ctx); err != nil {
			_ = tx.Rollback()
			tb.Fatalf("inserting sessions: %v", err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	return &bigGroupWithSessions{bigGroup: g, policies: policy.New(g.st, sessions.PolicyChanged)}
}

// newRoleWithPolicy creates a role with a session policy.
func (g *bigGroupWithSessions) newRoleWithPolicy(tb testing.TB, name string, p *gatehousev1.SessionPolicy) {
	tb.Helper()
	ctx := context.Background()
	if _, _, err := g.svc.CreateRole(ctx, name, "", nil); err != nil {
		tb.Fatal(err)
	}
	p.Scope = &gatehousev1.PolicyScope{Kind: &gatehousev1.PolicyScope_Role{Role: name}}
	if _, _, _, err := g.policies.Create(ctx, p, store.Apply); err != nil {
		tb.Fatal(err)
	}
}

// TestGroupGrantAppliesSessionPolicies grants a group of 10,000 members, each with a live session,
// first a role whose policy shortens the absolute timeout (every session's expiry moves, in the
// grant's transaction) and then a role whose policy says re-authenticate (every session ends with
// ROLE_CHANGE, one event each). It logs the durations; it asserts nothing about time.
func TestGroupGrantAppliesSessionPolicies(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			g := newBigGroupWithSessions(t, backend, bigGroupSize)
			g.newRoleWithPolicy(t, "timed", &gatehousev1.SessionPolicy{AbsoluteTimeout: durationpb.New(time.Hour)})
			g.newRoleWithPolicy(t, "payroll", &gatehousev1.SessionPolicy{OnRoleChange: gatehousev1.RoleChangeAction_ROLE_CHANGE_ACTION_REAUTHENTICATE})

			start := time.Now()
			impact, _, err := g.svc.GrantRole(ctx, "timed", identity.Principal{GroupID: g.groupID}, store.Apply)
			if err != nil {
				t.Fatal(err)
			}
			if impact.SessionsRefreshed != bigGroupSize || impact.SessionsEnded != 0 {
				t.Errorf("the timed grant reports %d sessions refreshed and %d ended, want %d and 0", impact.SessionsRefreshed, impact.SessionsEnded, bigGroupSize)
			}
			t.Logf("%s: GrantRole of a role with a timeout policy to %d members with sessions took %v",
				backend, bigGroupSize, time.Since(start).Round(time.Millisecond))
			sessions, err := g.st.Client.Session.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			moved := 0
			for _, s := range sessions {
				if s.Active && s.AbsoluteExpireTime.Equal(s.CreateTime.Add(time.Hour)) && !s.IdleExpireTime.After(s.AbsoluteExpireTime) {
					moved++
				}
			}
			if moved != bigGroupSize {
				t.Errorf("%d of %d sessions are active with the role's one-hour absolute timeout, want all", moved, bigGroupSize)
			}

			before := g.count(t, "SELECT COUNT(*) FROM events")
			// A preview of the re-authenticate grant counts every session it would end, and ends none.
			preview, _, err := g.svc.GrantRole(ctx, "payroll", identity.Principal{GroupID: g.groupID}, store.Preview)
			if err != nil {
				t.Fatal(err)
			}
			if preview.UsersAffected != bigGroupSize || preview.SessionsEnded != bigGroupSize ||
				preview.EndReason != gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE {
				t.Errorf("the preview reports %d users, %d sessions ended (%v); want %d, %d (ROLE_CHANGE)",
					preview.UsersAffected, preview.SessionsEnded, preview.EndReason, bigGroupSize, bigGroupSize)
			}
			if n, evs := g.count(t, "SELECT COUNT(*) FROM sessions WHERE active"), g.count(t, "SELECT COUNT(*) FROM events"); n != bigGroupSize || evs != before {
				t.Errorf("after the preview %d sessions are active and %d events were written, want %d and none", n, evs-before, bigGroupSize)
			}
			start = time.Now()
			impact, _, err = g.svc.GrantRole(ctx, "payroll", identity.Principal{GroupID: g.groupID}, store.Apply)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(impact, preview) {
				t.Errorf("the grant's impact %v differs from its preview's %v", impact, preview)
			}
			t.Logf("%s: GrantRole of a re-authenticate role to %d members with sessions took %v",
				backend, bigGroupSize, time.Since(start).Round(time.Millisecond))
			if n := g.count(t, "SELECT COUNT(*) FROM sessions WHERE active"); n != 0 {
				t.Errorf("%d sessions are still active after the re-authenticate grant", n)
			}
			if n := g.count(t, "SELECT COUNT(*) FROM sessions WHERE termination_reason = ?", gatehousev1.TerminationReason_TERMINATION_REASON_ROLE_CHANGE.String()); n != bigGroupSize {
				t.Errorf("%d sessions ended with ROLE_CHANGE, want %d", n, bigGroupSize)
			}
			if n := g.count(t, "SELECT COUNT(*) FROM events WHERE type = ?", gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED.String()); n != bigGroupSize {
				t.Errorf("%d SESSION_TERMINATED events, want %d", n, bigGroupSize)
			}
			if n := g.count(t, "SELECT COUNT(*) FROM events") - before; n != 1+2*bigGroupSize {
				t.Errorf("the grant wrote %d events, want %d (the grant, and per member ROLES_CHANGED and SESSION_TERMINATED)", n, 1+2*bigGroupSize)
			}
		})
	}
}

// BenchmarkGroupGrantWithSessionPolicies measures GrantRole, to a group of 10,000 members each
// with a live session, of a role whose policy sets an absolute timeout (every session's expiry is
// rewritten in the grant's transaction), the heaviest refresh the hooks do.
func BenchmarkGroupGrantWithSessionPolicies(b *testing.B) {
	for _, backend := range backends {
		b.Run(backend, func(b *testing.B) {
			g := newBigGroupWithSessions(b, backend, bigGroupSize)
			benchGrants(b, g.bigGroup, "timed", func(role string, grants int) {
				// NOTE: each grant shortens the timeout, so that every session's expiry moves.
				g.newRoleWithPolicy(b, role, &gatehousev1.SessionPolicy{AbsoluteTimeout: durationpb.New(time.Duration(20-grants%20) * time.Hour)})
			})
		})
	}
}

// benchGrants measures GrantRole to g's group of a new role per iteration, made (untimed) by
// newRole from its name and the number of grants so far, and reports ms/grant and users/s.
func benchGrants(b *testing.B, g *bigGroup, prefix string, newRole func(role string, grants int)) {
	var (
		grants int
		spent  time.Duration
	)
	for b.Loop() {
		b.StopTimer()
		role := fmt.Sprintf("%s-%d", prefix, grants)
		newRole(role, grants)
		b.StartTimer()
		start := time.Now()
		if _, _, err := g.svc.GrantRole(context.Background(), role, identity.Principal{GroupID: g.groupID}, store.Apply); err != nil {
			b.Fatal(err)
		}
		spent += time.Since(start)
		grants++
	}
	b.ReportMetric(spent.Seconds()*1000/float64(grants), "ms/grant")
	b.ReportMetric(float64(grants*len(g.members))/spent.Seconds(), "users/s")
}
