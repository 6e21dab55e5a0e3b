package session

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	entevent "github.com/gatehouse/gatehouse/ent/event"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/store"
)

// TestEndExpired: one statement finds the sessions past either expiry; each ends once, with one
// SESSION_TERMINATED event, as ABSOLUTE_TIMEOUT when its absolute expiry has passed (whatever its
// idle one) and IDLE_TIMEOUT otherwise; an idle impersonation opened from a session that ends as
// ABSOLUTE_TIMEOUT ends with it, not a second time; live sessions stay.
func TestEndExpired(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st := teststore.Open(t, backend)
			now := time.Now().UTC().Truncate(time.Second)
			past, future := now.Add(-time.Minute), now.Add(time.Hour)
			u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("u").SetUsernameKey("u").Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			add := func(idle, absolute time.Time, impersonating string) string {
				t.Helper()
				id := convert.NewID()
				hash := sha256.Sum256([]byte(id))
				c := st.Client.Session.Create().SetID(id).SetUserID(u.ID).SetTokenHash(hash[:]).SetType("web_browser").
					SetCreateTime(past.Add(-time.Hour)).SetLastActiveTime(past.Add(-time.Hour)).
					SetIdleExpireTime(idle).SetAbsoluteExpireTime(absolute)
				if impersonating != "" {
					c.SetImpersonatorUserID(u.ID).SetImpersonatorSessionID(impersonating)
				}
				if _, err := c.Save(ctx); err != nil {
					t.Fatal(err)
				}
				return id
			}
			absolute := add(future, past, "")
			both := add(past, past, "")
			idle := add(past, future, "")
			live := add(future, future, "")
			impersonation := add(past, future, absolute)

			var n int
			_, err = st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
				n, err = endExpired(ctx, tx, now, 0)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			// The impersonation ended with its impersonator's session, not as expired.
			if n != 3 {
				t.Errorf("endExpired reports %d sessions ended, want 3", n)
			}
			want := map[string]gatehousev1.TerminationReason{
				absolute:      gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT,
				both:          gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT,
				idle:          gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT,
				impersonation: gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_USER,
			}
			rows, err := st.Client.Session.Query().All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				reason, ended := want[r.ID]
				if r.Active == ended || (ended && r.TerminationReason != reason.String()) {
					t.Errorf("session %s: active %v, reason %q; want ended %v with %v", r.ID, r.Active, r.TerminationReason, ended, reason)
				}
			}
			events, err := st.Client.Event.Query().Where(entevent.Type(gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED.String())).All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			per := map[string]int{}
			for _, e := range events {
				per[e.SessionID]++
			}
			for id := range want {
				if per[id] != 1 {
					t.Errorf("session %s: %d SESSION_TERMINATED events, want 1", id, per[id])
				}
			}
			if per[live] != 0 || len(events) != len(want) {
				t.Errorf("SESSION_TERMINATED events: %v, want one for each of the 4 expired sessions", per)
			}
		})
	}
}
