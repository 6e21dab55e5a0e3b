package session

import (
	"testing"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/events"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func created(cursor string, sess *gatehousev1.Session) events.Record {
	return events.Record{Event: &gatehousev1.Event{
		Cursor: cursor, Type: gatehousev1.EventType_EVENT_TYPE_SESSION_CREATED, UserId: sess.UserId, SessionId: sess.Id,
		ImpersonatorUserId: sess.ImpersonatorUserId, ImpersonatorSessionId: sess.ImpersonatorSessionId,
		Payload: &gatehousev1.Event_SessionCreated{SessionCreated: &gatehousev1.SessionCreatedPayload{Session: sess}},
	}}
}

func terminated(cursor, user, session string, reason gatehousev1.TerminationReason) events.Record {
	return events.Record{Event: &gatehousev1.Event{
		Cursor: cursor, Type: gatehousev1.EventType_EVENT_TYPE_SESSION_TERMINATED, UserId: user, SessionId: session,
		Payload: &gatehousev1.Event_SessionTerminated{SessionTerminated: &gatehousev1.SessionTerminatedPayload{Reason: reason}},
	}}
}

func impersonation(cursor, session, impersonator, reason string, active bool) *gatehousev1.WatchSessionResponse {
	return &gatehousev1.WatchSessionResponse{
		Event: &gatehousev1.WatchSessionResponse_Impersonation_{Impersonation: &gatehousev1.WatchSessionResponse_Impersonation{
			SessionId: session, ImpersonatorUserId: impersonator, Reason: reason, Active: active,
		}},
		ConsistencyToken: cursor,
	}
}

// TestWatchImpersonationMessages feeds a stream's event mapping the events an impersonation of
// its user causes: the user's own stream hears that it began and ended, the impersonation's own
// stream hears nothing about itself, and other sessions' events say nothing.
func TestWatchImpersonationMessages(t *testing.T) {
	const user, mine, imp, other = "u1", "s-mine", "s-imp", "s-other"
	impSession := &gatehousev1.Session{Id: imp, UserId: user, ImpersonatorUserId: "admin", ImpersonatorSessionId: "s-admin", ImpersonationReason: "ticket 42"}
	plain := &gatehousev1.Session{Id: other, UserId: user}
	rolesChanged := events.Record{Event: &gatehousev1.Event{Cursor: "c5", Type: gatehousev1.EventType_EVENT_TYPE_ROLES_CHANGED, UserId: user}}
	batch := []events.Record{
		created("c1", plain),
		created("c2", impSession),
		terminated("c3", user, other, gatehousev1.TerminationReason_TERMINATION_REASON_LOGOUT),
		terminated("c4", user, imp, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN),
		rolesChanged,
	}

	t.Run("the user's stream", func(t *testing.T) {
		w := newWatchState(mine)
		out, ended, cursor, moved := w.events(batch)
		want := []*gatehousev1.WatchSessionResponse{
			impersonation("c2", imp, "admin", "ticket 42", true),
			impersonation("c4", imp, "admin", "ticket 42", false),
		}
		assertMessages(t, out, want)
		if ended || cursor != "c5" || !moved {
			t.Errorf("ended %v, roles cursor %q, moved %v; want false, c5, true", ended, cursor, moved)
		}
	})
	t.Run("in separate batches", func(t *testing.T) {
		w := newWatchState(mine)
		var out []*gatehousev1.WatchSessionResponse
		for _, r := range batch {
			o, _, _, _ := w.events([]events.Record{r})
			out = append(out, o...)
		}
		assertMessages(t, out, []*gatehousev1.WatchSessionResponse{
			impersonation("c2", imp, "admin", "ticket 42", true),
			impersonation("c4", imp, "admin", "ticket 42", false),
		})
	})
	t.Run("seen by the snapshot and on the stream", func(t *testing.T) {
		// An impersonation that began between the subscription and the snapshot's lookup is in
		// both: it is announced once, by the snapshot, and its end still follows.
		w := newWatchState(mine)
		if m := w.began(impSession); m == nil {
			t.Fatal("the snapshot's lookup announced nothing")
		}
		out, _, _, _ := w.events(batch[1:4])
		assertMessages(t, out, []*gatehousev1.WatchSessionResponse{impersonation("c4", imp, "admin", "ticket 42", false)})
	})
	t.Run("known when the stream began", func(t *testing.T) {
		w := newWatchState(mine)
		if m := w.began(impSession); m.GetImpersonation() == nil || !m.GetImpersonation().Active {
			t.Fatalf("began: %v", m)
		}
		if m := w.began(plain); m != nil {
			t.Fatalf("began for a plain session: %v", m)
		}
		out, _, _, _ := w.events(batch[2:4])
		assertMessages(t, out, []*gatehousev1.WatchSessionResponse{impersonation("c4", imp, "admin", "ticket 42", false)})
	})
	t.Run("the impersonation's own stream", func(t *testing.T) {
		w := newWatchState(imp)
		out, ended, _, _ := w.events(batch)
		want := []*gatehousev1.WatchSessionResponse{{
			Event: &gatehousev1.WatchSessionResponse_Terminated_{Terminated: &gatehousev1.WatchSessionResponse_Terminated{
				Reason: gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN,
			}},
			ConsistencyToken: "c4",
		}}
		assertMessages(t, out, want)
		if !ended {
			t.Error("the stream's own termination should end it")
		}
	})
	t.Run("an unknown impersonation ends", func(t *testing.T) {
		w := newWatchState(mine)
		out, _, _, _ := w.events(batch[3:4])
		assertMessages(t, out, nil)
	})
}

func assertMessages(t *testing.T, got, want []*gatehousev1.WatchSessionResponse) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("message %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

// TestExpiryWarning walks one stream's warnings through a session's life: quiet until lead
// before the first expiry, then a warning; activity that moves the idle expiry out of the window
// cancels it, and within the window sends a fresh one; the absolute expiry wins when it is first.
func TestExpiryWarning(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	idleR, absR := gatehousev1.TerminationReason_TERMINATION_REASON_IDLE_TIMEOUT, gatehousev1.TerminationReason_TERMINATION_REASON_ABSOLUTE_TIMEOUT
	warning := func(s int, r gatehousev1.TerminationReason) *gatehousev1.WatchSessionResponse_Expiring {
		return &gatehousev1.WatchSessionResponse_Expiring{ExpireTime: timestamppb.New(at(s)), Reason: r}
	}
	cancel := &gatehousev1.WatchSessionResponse_Expiring{}
	w := &expiryWarning{lead: 60 * time.Second}
	steps := []struct {
		name           string
		now, idle, abs int
		want           *gatehousev1.WatchSessionResponse_Expiring
		next           time.Time
	}{
		{"quiet before the window", 0, 600, 3600, nil, at(540)},
		{"the idle warning", 540, 600, 3600, warning(600, idleR), at(600)},
		{"woken again, nothing moved", 550, 600, 3600, nil, at(600)},
		{"activity within the window", 570, 630, 3600, warning(630, idleR), at(630)},
		{"activity out of the window", 580, 1180, 3600, cancel, at(1120)},
		{"cancelled twice sends nothing", 590, 1180, 3600, nil, at(1120)},
		{"absolute first", 3540, 3600, 3600, warning(3600, absR), at(3600)},
		{"at the expiry, looks once more", 3600, 3600, 3600, nil, at(3600).Add(expiryGrace)},
		{"past the grace, waits for the end", 3603, 3600, 3600, nil, time.Time{}},
	}
	for _, s := range steps {
		got, next := w.update(at(s.now), expiries{idle: at(s.idle), absolute: at(s.abs), window: 10 * time.Minute})
		if !proto.Equal(got, s.want) || (got == nil) != (s.want == nil) {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
		if !next.Equal(s.next) {
			t.Errorf("%s: next look at %v, want %v", s.name, next, s.next)
		}
	}
	off := &expiryWarning{}
	if got, next := off.update(at(599), expiries{idle: at(600), absolute: at(600), window: time.Minute}); got != nil || !next.IsZero() {
		t.Errorf("with no lead: got %v, next %v", got, next)
	}

	// An idle timeout shorter than twice the lead is warned of half a timeout ahead; the absolute
	// expiry still a whole lead ahead.
	short := &expiryWarning{lead: 60 * time.Second}
	if got, next := short.update(at(0), expiries{idle: at(30), absolute: at(3600), window: 30 * time.Second}); got != nil || !next.Equal(at(15)) {
		t.Errorf("30s idle timeout, at its start: got %v, next look at %v, want nothing until %v", got, next, at(15))
	}
	if got, next := short.update(at(7), expiries{idle: at(37), absolute: at(3600), window: 30 * time.Second}); got != nil || !next.Equal(at(22)) {
		t.Errorf("30s idle timeout, in use: got %v, next look at %v, want nothing until %v", got, next, at(22))
	}
	if got, _ := short.update(at(22), expiries{idle: at(37), absolute: at(3600), window: 30 * time.Second}); !proto.Equal(got, warning(37, idleR)) {
		t.Errorf("30s idle timeout, idle for half of it: got %v, want %v", got, warning(37, idleR))
	}
	abs := &expiryWarning{lead: 60 * time.Second}
	if got, _ := abs.update(at(3550), expiries{idle: at(3600), absolute: at(3600), window: 30 * time.Second}); !proto.Equal(got, warning(3600, absR)) {
		t.Errorf("absolute expiry with a 30s idle timeout: got %v, want %v", got, warning(3600, absR))
	}
}
