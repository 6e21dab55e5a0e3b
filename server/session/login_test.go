package session

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/ent"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
)

// newCheckService returns a Service with budgets but no store: enough for checks that match or
// that never reach the hasher (a failure would need the store for its event).
func newCheckService(t *testing.T, perUser int, queueTimeout time.Duration) (*Service, *auth.Hasher) {
	t.Helper()
	h, err := auth.NewHasherWith(auth.HasherOptions{MaxConcurrent: 1, Params: auth.Params{MemoryKiB: 64, Time: 1}})
	if err != nil {
		t.Fatal(err)
	}
	s := New(nil, h, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
		FailedLoginsPerUser: RateLimit{Burst: perUser, Per: time.Hour},
		QueueTimeout:        queueTimeout,
	})
	return s, h
}

// TestCheckWaitsForChecksInFlight: while the checks in flight could spend a username's whole
// remaining budget, another check of it waits (it is not refused: they may succeed), at most the
// queue timeout, then fails with UNAVAILABLE PASSWORD_QUEUE_TIMEOUT without hashing; once one of
// them settles as a success, it goes ahead.
func TestCheckWaitsForChecksInFlight(t *testing.T) {
	ctx := auth.WithClient(context.Background(), auth.Client{IP: "203.0.113.9"})
	s, h := newCheckService(t, 2, 10*time.Millisecond)
	hash, err := h.Hash(ctx, "rita-password")
	if err != nil {
		t.Fatal(err)
	}
	rita := &ent.User{ID: "rita-id", Username: "rita", PasswordHash: &hash}
	now := time.Now()
	for range 2 {
		if v, _ := s.users.reserve("rita", now); v != admitted {
			t.Fatal("a check within the budget was not admitted")
		}
	}
	derived := h.Derivations()
	err = s.checkPassword(ctx, passwordCheck{username: "rita", user: rita}, "rita-password")
	if e, ok := errs.As(err); !ok || e.Kind != errs.KindUnavailable || e.Reason != auth.ReasonQueueTimeout {
		t.Fatalf("a check while the budget is in flight = %v, want UNAVAILABLE %s", err, auth.ReasonQueueTimeout)
	}
	if h.Derivations() != derived {
		t.Error("a check that timed out waiting was hashed")
	}

	s.queueTimeout = time.Hour
	done := make(chan error, 1)
	go func() { done <- s.checkPassword(ctx, passwordCheck{username: "rita", user: rita}, "rita-password") }()
	s.users.settle("rita", time.Now(), false) // one in flight succeeded
	if err := <-done; err != nil {
		t.Fatalf("a check after one in flight succeeded = %v, want nil", err)
	}
	if got := s.users.inFlight["rita"]; got != 1 {
		t.Errorf("%d checks of rita in flight, want the 1 the test still holds", got)
	}
}
