package session

import (
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/server/policy"
)

func TestLimiterCountsFailuresAndRefills(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 3, Per: 3 * time.Minute})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		if !l.allowed("alice", t0) {
			t.Fatalf("attempt %d refused before the budget was spent", i+1)
		}
		l.failed("alice", t0)
	}
	if l.allowed("alice", t0) {
		t.Fatal("a fourth attempt after three failures must be refused")
	}
	if !l.allowed("bob", t0) {
		t.Fatal("another key must not be affected")
	}
	// One attempt comes back every Per/Burst.
	if !l.allowed("alice", t0.Add(time.Minute)) {
		t.Fatal("one attempt must come back after Per/Burst")
	}
	l.failed("alice", t0.Add(time.Minute))
	if l.allowed("alice", t0.Add(time.Minute)) {
		t.Fatal("the refilled attempt is spent")
	}
}

func TestLimiterDisabled(t *testing.T) {
	var nilLimiter *limiter
	off := newLimiter(RateLimit{})
	now := time.Now()
	for range 100 {
		nilLimiter.failed("k", now)
		off.failed("k", now)
	}
	if !nilLimiter.allowed("k", now) || !off.allowed("k", now) {
		t.Fatal("a disabled limiter refuses nothing")
	}
}

func TestLimiterForgetsRecoveredKeys(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 2, Per: time.Minute})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		l.failed(string(rune('a'+i%26))+string(rune(i)), t0)
	}
	l.failed("late", t0.Add(2*time.Minute))
	if n := len(l.buckets); n != 1 {
		t.Fatalf("%d buckets kept after every other key recovered, want 1", n)
	}
}

func TestExpiry(t *testing.T) {
	r := &policy.Resolved{IdleTimeout: 10 * time.Minute, AbsoluteTimeout: time.Hour}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	idle, abs := expiry(r, created, created.Add(5*time.Minute))
	if !idle.Equal(created.Add(15*time.Minute)) || !abs.Equal(created.Add(time.Hour)) {
		t.Fatalf("expiry = %v, %v", idle, abs)
	}
	// The idle expiry never passes the absolute one.
	idle, _ = expiry(r, created, created.Add(55*time.Minute))
	if !idle.Equal(created.Add(time.Hour)) {
		t.Fatalf("idle expiry %v passes the absolute expiry", idle)
	}
}
