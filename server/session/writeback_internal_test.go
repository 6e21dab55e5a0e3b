package session

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/ent"
	entevent "github.com/gatehouse/gatehouse/ent/event"
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
)

// TestWriteBackAnnouncesOnlyAfterAPause: a session whose idle timeout (30 s) is shorter than the
// expiry warning's lead (60 s) and that is validated without a pause writes its activity back with
// no SESSION_EXTENDED event (it used to write one at every write-back, a transaction and an
// invalidation on every node per session every 7.5 s); the activity that ends a pause of more than
// half the timeout, which WatchSession has warned of, writes one, which names the impersonator of
// the session (an impersonation) as its creation and its end do.
func TestWriteBackAnnouncesOnlyAfterAPause(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st := teststore.Open(t, backend)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			s := New(st, auth.NewHasher(1), log, Options{})
			s.writeBack = newWriteBack(st, log, func() time.Duration { return time.Minute })
			clock := time.Now().UTC().Truncate(time.Second)
			s.now = func() time.Time { return clock }

			u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("busy").SetUsernameKey("busy").Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			token, hash, err := auth.NewToken()
			if err != nil {
				t.Fatal(err)
			}
			const window = 30 * time.Second
			impersonator, impersonatorSession := convert.NewID(), convert.NewID()
			sess, err := st.Client.Session.Create().SetID(convert.NewID()).SetUserID(u.ID).SetTokenHash(hash).
				SetImpersonatorUserID(impersonator).SetImpersonatorSessionID(impersonatorSession).
				SetType("web_browser").SetCreateTime(clock).SetLastActiveTime(clock).
				SetIdleExpireTime(clock.Add(window)).SetAbsoluteExpireTime(clock.Add(24 * time.Hour)).Save(ctx)
			if err != nil {
				t.Fatal(err)
			}
			extended := func() []*ent.Event {
				t.Helper()
				evs, err := st.Client.Event.Query().Where(entevent.Type(gatehousev1.EventType_EVENT_TYPE_SESSION_EXTENDED.String())).All(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return evs
			}
			use := func(after time.Duration) {
				t.Helper()
				clock = clock.Add(after)
				if _, _, _, err := s.validate(ctx, token, false); err != nil {
					t.Fatalf("validating at +%v: %v", after, err)
				}
				s.writeBack.flush(ctx)
				row, err := st.Client.Session.Get(ctx, sess.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !row.LastActiveTime.Equal(clock) || !row.IdleExpireTime.Equal(clock.Add(window)) {
					t.Fatalf("after activity at %v the row has last activity %v, idle expiry %v", clock, row.LastActiveTime, row.IdleExpireTime)
				}
			}
			// In use: activity every quarter of the timeout, for four minutes.
			for range 32 {
				use(window / 4)
			}
			if evs := extended(); len(evs) != 0 {
				t.Fatalf("a session in constant use wrote %d SESSION_EXTENDED events, want none", len(evs))
			}
			// A pause past half the timeout: WatchSession warned of the expiry, the activity that
			// moves it is announced.
			use(window/2 + time.Second)
			evs := extended()
			if len(evs) != 1 {
				t.Fatalf("the activity after a pause wrote %d SESSION_EXTENDED events, want 1", len(evs))
			}
			var e gatehousev1.Event
			if err := proto.Unmarshal(evs[0].Payload, &e); err != nil {
				t.Fatal(err)
			}
			if e.SessionId != sess.ID || e.ImpersonatorUserId != impersonator || e.ImpersonatorSessionId != impersonatorSession {
				t.Errorf("SESSION_EXTENDED of session %s, impersonator %q (session %q); want session %s, impersonator %s (session %s)",
					e.SessionId, e.ImpersonatorUserId, e.ImpersonatorSessionId, sess.ID, impersonator, impersonatorSession)
			}
		})
	}
}
