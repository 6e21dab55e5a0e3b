package api

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/teststore"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/convert"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/identity"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// watchWait bounds every wait of these tests for a stream to answer.
const watchWait = 10 * time.Second

// TestWatchEventsChecksTheStandingItWasOpenedWith: a WatchEvents stream whose caller's standing
// changed between the authentication of its headers and its request (the client chooses when it
// sends the request) ends at once with the error the caller gets now, instead of streaming until
// some later change of the caller's reaches its guard.
func TestWatchEventsChecksTheStandingItWasOpenedWith(t *testing.T) {
	ctx := context.Background()
	st := teststore.Open(t, "sqlite")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sessions := session.New(st, auth.NewHasher(1), log, session.Options{})
	live := events.New(st, log, events.Options{})
	if err := live.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st.SetCommitHook(live.Committed)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- live.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-ran })
	sessions.UseLive(live)
	ids := identity.New(st, auth.NewHasher(1), log, sessions.RolesChanged)
	h := NewSession(sessions, live)

	u, err := st.Client.User.Create().SetID(convert.NewID()).SetUsername("auditor").SetUsernameKey("auditor").Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	auditor := identity.Principal{UserID: u.ID}
	grant := func() {
		t.Helper()
		if _, _, err := ids.GrantRole(ctx, auth.RoleAuditor, auditor, store.Apply); err != nil {
			t.Fatal(err)
		}
	}
	// login opens a session of the user and returns its principal as the interceptor would
	// authenticate it now.
	login := func() *auth.Principal {
		t.Helper()
		now := time.Now().UTC()
		var before []string
		if err := st.Client.Session.Query().Select("id").Scan(ctx, &before); err != nil {
			t.Fatal(err)
		}
		teststore.AddSessions(t, st, u.ID, 1, now, now.Add(time.Hour))
		var after []string
		if err := st.Client.Session.Query().Select("id").Scan(ctx, &after); err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before)+1 {
			t.Fatalf("%d sessions after adding one to %d", len(after), len(before))
		}
		known := map[string]bool{}
		for _, id := range before {
			known[id] = true
		}
		for _, id := range after {
			if !known[id] {
				p, err := sessions.Principal(ctx, &auth.Principal{SessionID: id})
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
		}
		panic("unreachable")
	}
	// watch runs WatchEvents for p and returns the error it ended with, or nil once it delivered
	// an event; it writes an event of another user until one of them happens.
	watch := func(p *auth.Principal) error {
		t.Helper()
		sctx, cancel := context.WithCancel(auth.WithPrincipal(ctx, p))
		defer cancel()
		got, done := make(chan struct{}, 1), make(chan error, 1)
		go func() {
			done <- h.watchEvents(sctx, &gatehousev1.WatchEventsRequest{}, func(*gatehousev1.WatchEventsResponse) error {
				select {
				case got <- struct{}{}:
				default:
				}
				return nil
			})
		}()
		deadline := time.After(watchWait)
		for {
			if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
				tx.Emit(&gatehousev1.Event{Type: gatehousev1.EventType_EVENT_TYPE_USER_UPDATED, UserId: "someone-else"})
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-got:
				cancel()
				<-done
				return nil
			case err := <-done:
				return err
			case <-deadline:
				t.Fatalf("the stream neither delivered an event nor ended within %v", watchWait)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	grant()
	p := login()
	if err := watch(p); err != nil {
		t.Fatalf("an auditor's stream ended with %v, want events", err)
	}

	// The role is revoked after the principal was authenticated.
	if _, _, err := ids.RevokeRole(ctx, auth.RoleAuditor, auditor, store.Apply); err != nil {
		t.Fatal(err)
	}
	if err := watch(p); err == nil || errs.KindOf(err) != errs.KindPermissionDenied {
		t.Errorf("a stream opened with the auditor role revoked since authentication ended with %v, want PERMISSION_DENIED", err)
	}

	// The session ends after the principal was authenticated.
	grant()
	p = login()
	if _, err := st.InTx(ctx, func(ctx context.Context, tx *store.Tx) error {
		s, err := tx.Session.Get(ctx, p.SessionID)
		if err != nil {
			return err
		}
		_, err = session.EndSession(ctx, tx, s, gatehousev1.TerminationReason_TERMINATION_REASON_REVOKED_BY_ADMIN, "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch(p); err == nil || errs.KindOf(err) != errs.KindUnauthenticated {
		t.Errorf("a stream opened with its session ended since authentication ended with %v, want UNAUTHENTICATED", err)
	}
}
