package session

import (
	"crypto/sha256"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// RateLimit configures the failed-login limits: each key (a username, a client address) may fail
// Burst times at once and regains one attempt every Per/Burst.
type RateLimit struct {
	Burst int
	Per   time.Duration
}

// limiter is a token bucket per key, counting failed password checks, and the checks of each key in
// flight. Successful checks cost nothing, so a burst of legitimate logins (50 tabs opening at once)
// is never refused; guessing is.
//
// NOTE: a check is admitted (reserve) before it queues for a hashing slot and settled once the hash
// is done, and a key admits only as many checks at once as its remaining budget could pay for if
// every one of them failed. So however many guesses arrive together, no more of them are hashed
// than the budget allows; the others are refused, or wait for the checks in flight to settle when
// these might succeed (and cost nothing). This also keeps a flood of guesses at one username or
// address from filling the hashing queue beyond its budget. Re-checking the budget once a check
// holds a hashing slot would add nothing: every check that could spend it is already counted.
//
// NOTE: the buckets are per node. A cluster of N nodes behind a load balancer allows up to N times
// the configured rate; the per-node bound is what keeps a guessing attack from scaling with the
// number of requests a node accepts.
type limiter struct {
	cfg      RateLimit
	mu       sync.Mutex
	buckets  map[string]*bucket
	inFlight map[string]int
	// waiters holds, per key, a channel closed when a check of that key settles.
	waiters map[string]chan struct{}
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// verdict is the answer of reserve.
type verdict int

const (
	// admitted: the check may go ahead; it is in flight until settle.
	admitted verdict = iota
	// refused: the key's failures have spent its budget.
	refused
	// busy: the checks in flight could spend what is left; wait for one to settle and ask again.
	busy
)

func newLimiter(cfg RateLimit) *limiter {
	return &limiter{cfg: cfg, buckets: map[string]*bucket{}, inFlight: map[string]int{}, waiters: map[string]chan struct{}{}}
}

// disabled reports whether l limits nothing for key.
func (l *limiter) disabled(key string) bool {
	return l == nil || l.cfg.Burst <= 0 || key == ""
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

// tokens returns the key's remaining budget.
func (l *limiter) tokens(key string, now time.Time) float64 {
	if b := l.refill(key, now); b != nil {
		return b.tokens
	}
	return float64(l.cfg.Burst)
}

// reserve admits a check of key, refuses it, or says it must wait (busy, with a channel closed when
// a check of key settles).
func (l *limiter) reserve(key string, now time.Time) (verdict, <-chan struct{}) {
	if l.disabled(key) {
		return admitted, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	left := l.tokens(key, now)
	switch {
	case left < 1:
		return refused, nil
	case left-float64(l.inFlight[key]) < 1:
		ch := l.waiters[key]
		if ch == nil {
			ch = make(chan struct{})
			l.waiters[key] = ch
		}
		return busy, ch
	}
	l.inFlight[key]++
	return admitted, nil
}

// settle ends a check admitted by reserve; a failed one spends one attempt of the key's budget.
func (l *limiter) settle(key string, now time.Time, failed bool) {
	if l.disabled(key) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[key]--; l.inFlight[key] <= 0 {
		delete(l.inFlight, key)
	}
	if ch := l.waiters[key]; ch != nil {
		close(ch)
		delete(l.waiters, key)
	}
	if !failed {
		return
	}
	b := l.refill(key, now)
	if b == nil {
		b = &bucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
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
}

// addressKey is the key of a client address in the per-address budget: an IPv4 address (also when
// written as an IPv4-mapped IPv6 address) is its own key, an IPv6 address counts as its /64.
//
// NOTE: one IPv6 subscriber, host or cloud instance is routinely given a whole /64 and can use any
// of its 2^64 addresses; keyed by full address, the per-address budget would not limit it at all.
// Anything that does not parse as an address (none does, past validation) is keyed as it is.
func addressKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// knownClientTTL is how long an address a user logged in from stays known (knownClients).
const knownClientTTL = 30 * 24 * time.Hour

// maxKnownUsers bounds the users a node remembers addresses of, and maxKnownPerUser the addresses
// of one user.
const (
	maxKnownUsers   = 100_000
	maxKnownPerUser = 8
)

// knownClients remembers the addresses each user has logged in from with the right password, on
// this node, for knownClientTTL: a check of a user's password from one of them is counted in a
// budget of that user and address instead of the user's shared one.
//
// NOTE: the per-user budget stops guessing at one account from many addresses, but anybody who
// knows a username could spend it on purpose and lock its owner out, gatehouse.admin included,
// with ten wrong passwords every five minutes. The owner logging in from where they logged in
// before is not the guesser, so strangers' failures do not count against them; their own failures
// there are still limited, by the same budget (and by the address's). A guesser gains a budget
// only from an address that already had the right password (a network it shares with the user),
// still within that address's budget. It is a mitigation, not a cure: an address the node does not
// know (a new one, another node, after a restart or a new password) still counts against the
// shared budget, which strangers can keep spent.
//
// NOTE: a user keeps at most maxKnownPerUser addresses, the oldest making way, so one account
// cannot fill the table and stop the node from learning others' addresses; users beyond
// maxKnownUsers make way for those not seen for the longest, after the expired ones go. Each is
// kept as 16-byte digests and Unix times (about 100 bytes for a user with one address, 10 MB for
// 100,000 of them), no username, address or fragment of a hash.
type knownClients struct {
	mu    sync.Mutex
	users map[[16]byte]*knownUser
}

// knownUser are one user's known addresses.
type knownUser struct {
	pairs []knownPair
	// last is the newest of the pairs' times.
	last int64
}

// knownPair is one known address of a user, under one password.
type knownPair struct {
	digest [16]byte
	at     int64
}

func newKnownClients() *knownClients { return &knownClients{users: map[[16]byte]*knownUser{}} }

// digest is the SHA-256 of parts joined by NUL, cut to 16 bytes.
func digest(parts ...string) [16]byte {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return [16]byte(sum[:16])
}

// budgetKey returns the per-user budget a check of userKey from addrKey is counted in: the pair's
// own (a NUL, no username key begins with one, and the pair's digest) when the user, under the
// password known stands for (passwordStamp), logged in from there within knownClientTTL; else
// the user's.
func (k *knownClients) budgetKey(userKey, known, addrKey string, now time.Time) string {
	if addrKey == "" || known == "" {
		return userKey
	}
	pair := digest(known, addrKey)
	k.mu.Lock()
	defer k.mu.Unlock()
	if u := k.users[digest(userKey)]; u != nil {
		for _, p := range u.pairs {
			if p.digest == pair && now.Sub(time.Unix(0, p.at)) < knownClientTTL {
				return "\x00" + string(pair[:])
			}
		}
	}
	return userKey
}

// succeeded records a check of userKey's password (known: passwordStamp) from addrKey that found
// it right.
func (k *knownClients) succeeded(userKey, known, addrKey string, now time.Time) {
	if addrKey == "" || known == "" {
		return
	}
	pair, at := digest(known, addrKey), now.UnixNano()
	k.mu.Lock()
	defer k.mu.Unlock()
	id := digest(userKey)
	u := k.users[id]
	if u == nil {
		if len(k.users) >= maxKnownUsers {
			k.makeRoom(now)
		}
		u = &knownUser{}
		k.users[id] = u
	}
	u.last = at
	oldest := 0
	for i, p := range u.pairs {
		if p.digest == pair {
			u.pairs[i].at = at
			return
		}
		if p.at < u.pairs[oldest].at {
			oldest = i
		}
	}
	if len(u.pairs) < maxKnownPerUser {
		u.pairs = append(u.pairs, knownPair{digest: pair, at: at})
		return
	}
	u.pairs[oldest] = knownPair{digest: pair, at: at}
}

// makeRoom forgets the users not seen within knownClientTTL and, when that is not enough, the
// tenth of the users seen longest ago; k.mu is held.
func (k *knownClients) makeRoom(now time.Time) {
	var lasts []int64
	for id, u := range k.users {
		if now.Sub(time.Unix(0, u.last)) >= knownClientTTL {
			delete(k.users, id)
			continue
		}
		lasts = append(lasts, u.last)
	}
	if len(k.users) < maxKnownUsers {
		return
	}
	slices.Sort(lasts)
	cut := lasts[len(lasts)/10]
	for id, u := range k.users {
		if u.last <= cut {
			delete(k.users, id)
		}
	}
}
