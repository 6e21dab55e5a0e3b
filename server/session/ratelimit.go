package session

import (
	"sync"
	"time"
)

// RateLimit configures the failed-login limits: each key (a username, a client address) may fail
// Burst times at once and regains one attempt every Per/Burst.
type RateLimit struct {
	Burst int
	Per   time.Duration
}

// limiter is a token bucket per key, counting failed logins. Successful logins cost nothing, so a
// burst of legitimate logins (50 tabs opening at once) is never refused; guessing is.
//
// NOTE: the buckets are per node. A cluster of N nodes behind a load balancer allows up to N times
// the configured rate; the per-node bound is what keeps a guessing attack from scaling with the
// number of requests a node accepts.
type limiter struct {
	cfg     RateLimit
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(cfg RateLimit) *limiter {
	return &limiter{cfg: cfg, buckets: map[string]*bucket{}}
}

// refill brings a bucket up to date and returns it (nil when the key has never failed).
func (l *limiter) refill(key string, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		return nil
	}
	rate := float64(l.cfg.Burst) / l.cfg.Per.Seconds()
	b.tokens = min(float64(l.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	return b
}

// allowed reports whether key may try again.
func (l *limiter) allowed(key string, now time.Time) bool {
	if l == nil || l.cfg.Burst <= 0 || key == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, now)
	return b == nil || b.tokens >= 1
}

// failed records a failed attempt of key and reports whether the budget still had room for it
// (concurrent attempts may all have passed allowed before any of them failed).
func (l *limiter) failed(key string, now time.Time) bool {
	if l == nil || l.cfg.Burst <= 0 || key == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, now)
	if b == nil {
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
	within := b.tokens >= 1
	b.tokens = max(0, b.tokens-1)
	// Forget keys whose buckets are full again, at most once per period, so the map stays small.
	if now.Sub(l.swept) > l.cfg.Per {
		l.swept = now
		for k := range l.buckets {
			if bb := l.refill(k, now); bb.tokens >= float64(l.cfg.Burst) {
				delete(l.buckets, k)
			}
		}
	}
	return within
}
