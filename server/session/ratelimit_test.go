package session

import (
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/server/policy"
)

// fail admits a check of key and settles it as failed.
func fail(t *testing.T, l *limiter, key string, now time.Time) {
	t.Helper()
	if v, _ := l.reserve(key, now); v != admitted {
		t.Fatalf("a check of %s was not admitted (%v)", key, v)
	}
	l.settle(key, now, true)
}

func TestLimiterCountsFailuresAndRefills(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 3, Per: 3 * time.Minute})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 3 {
		fail(t, l, "alice", t0)
	}
	if v, _ := l.reserve("alice", t0); v != refused {
		t.Fatalf("a fourth check after three failures: %v, want refused", v)
	}
	if v, _ := l.reserve("bob", t0); v != admitted {
		t.Fatal("another key must not be affected")
	}
	l.settle("bob", t0, false)
	// One attempt comes back every Per/Burst.
	fail(t, l, "alice", t0.Add(time.Minute))
	if v, _ := l.reserve("alice", t0.Add(time.Minute)); v != refused {
		t.Fatal("the refilled attempt is spent")
	}
}

// TestLimiterCountsChecksInFlight: a key admits only as many checks at once as its budget could pay
// for if all of them failed; the next one waits, and is refused once they have failed, or admitted
// once one of them has succeeded (successes cost nothing).
func TestLimiterCountsChecksInFlight(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 2, Per: time.Hour})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2 {
		if v, _ := l.reserve("alice", t0); v != admitted {
			t.Fatalf("check %d within the budget: %v, want admitted", i+1, v)
		}
	}
	v, wait := l.reserve("alice", t0)
	if v != busy || wait == nil {
		t.Fatalf("a third check while two are in flight: %v, want busy", v)
	}
	l.settle("alice", t0, false) // the first one succeeded
	select {
	case <-wait:
	default:
		t.Fatal("settling a check does not wake the waiters")
	}
	if v, _ := l.reserve("alice", t0); v != admitted {
		t.Fatalf("a check after one in flight succeeded: %v, want admitted", v)
	}
	l.settle("alice", t0, true)
	l.settle("alice", t0, true)
	if v, _ := l.reserve("alice", t0); v != refused {
		t.Fatalf("a check after two failures: %v, want refused", v)
	}
	if len(l.inFlight) != 0 || len(l.waiters) != 0 {
		t.Errorf("in flight %v, waiters %d after every check settled", l.inFlight, len(l.waiters))
	}
}

func TestLimiterDisabled(t *testing.T) {
	var nilLimiter *limiter
	off := newLimiter(RateLimit{})
	on := newLimiter(RateLimit{Burst: 1, Per: time.Hour})
	now := time.Now()
	for range 100 {
		for _, l := range []*limiter{nilLimiter, off} {
			fail(t, l, "k", now)
		}
		fail(t, on, "", now) // no key, no limit
	}
}

func TestLimiterForgetsRecoveredKeys(t *testing.T) {
	l := newLimiter(RateLimit{Burst: 2, Per: time.Minute})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		fail(t, l, string(rune('a'+i%26))+string(rune(i)), t0)
	}
	fail(t, l, "late", t0.Add(2*time.Minute))
	if n := len(l.buckets); n != 1 {
		t.Fatalf("%d buckets kept after every other key recovered, want 1", n)
	}
}

// TestKnownClients: an address a user logged in from is known, with its own budget key, for
// knownClientTTL and for that password only; a user keeps its newest maxKnownPerUser addresses, so
// one account cannot fill the table; past maxKnownUsers, the users seen longest ago make way.
func TestKnownClients(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	k := newKnownClients()
	stamp := passwordStamp("tess", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaC1vZi10aGUtcGFzc3dvcmQ")
	if got := k.budgetKey("tess", stamp, "198.51.100.7", now); got != "tess" {
		t.Fatalf("an address tess never logged in from is counted in %q, want tess's shared budget", got)
	}
	k.succeeded("tess", stamp, "198.51.100.7", now)
	own := k.budgetKey("tess", stamp, "198.51.100.7", now.Add(time.Hour))
	if own == "tess" || own[0] != 0 {
		t.Fatalf("tess's known address is counted in %q, want a budget of its own", own)
	}
	other := passwordStamp("tess", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$YW5vdGhlci1wYXNzd29yZA")
	for _, c := range []struct {
		what      string
		known, ip string
		at        time.Time
	}{
		{"another address", stamp, "198.51.100.8", now},
		{"another password", other, "198.51.100.7", now},
		{"past the TTL", stamp, "198.51.100.7", now.Add(knownClientTTL)},
		{"no address", stamp, "", now},
	} {
		if got := k.budgetKey("tess", c.known, c.ip, c.at); got != "tess" {
			t.Errorf("%s: counted in %q, want tess's shared budget", c.what, got)
		}
	}
	known := func(user, ip string, at time.Time) bool {
		return k.budgetKey(user, passwordStamp(user, "h"), ip, at) != user
	}

	// One account logging in from ever more addresses keeps only its newest ones.
	for i := range 3 * maxKnownPerUser {
		k.succeeded("mallory", passwordStamp("mallory", "h"), fmt.Sprintf("203.0.113.%d", i), now.Add(time.Duration(i)*time.Second))
	}
	later := now.Add(time.Hour)
	if len(k.users) != 2 || known("mallory", "203.0.113.0", later) || !known("mallory", fmt.Sprintf("203.0.113.%d", 3*maxKnownPerUser-1), later) {
		t.Fatalf("after mallory's %d addresses: %d users known, the first address known %v, the last %v; want 2, false, true",
			3*maxKnownPerUser, len(k.users), known("mallory", "203.0.113.0", later), known("mallory", fmt.Sprintf("203.0.113.%d", 3*maxKnownPerUser-1), later))
	}

	// Past the users' bound, those seen longest ago make way; the others stay known.
	for i := range maxKnownUsers {
		k.succeeded(fmt.Sprint("u", i), passwordStamp(fmt.Sprint("u", i), "h"), "192.0.2.1", later.Add(time.Duration(i)*time.Millisecond))
	}
	if len(k.users) > maxKnownUsers {
		t.Fatalf("%d users known, over the bound %d", len(k.users), maxKnownUsers)
	}
	last := fmt.Sprint("u", maxKnownUsers-1)
	tessKnown := k.budgetKey("tess", stamp, "198.51.100.7", later) != "tess"
	if !known(last, "192.0.2.1", later.Add(time.Hour)) || tessKnown {
		t.Errorf("past the bound: the newest user known %v, tess (seen first) known %v; want true, false",
			known(last, "192.0.2.1", later.Add(time.Hour)), tessKnown)
	}
}

func TestAddressKey(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"203.0.113.5", "203.0.113.5"},
		{"::ffff:203.0.113.5", "203.0.113.5"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
		{"2001:DB8:1:2::1", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"", ""},
		{"not-an-address", "not-an-address"},
	} {
		if got := addressKey(tc.ip); got != tc.want {
			t.Errorf("addressKey(%q) = %q, want %q", tc.ip, got, tc.want)
		}
	}
	if addressKey("2001:db8:1:2::1") == addressKey("2001:db8:1:3::1") {
		t.Error("two /64s share a key")
	}
}

func TestCleanStrings(t *testing.T) {
	for _, tc := range []struct {
		in    string
		bytes int
		want  string
	}{
		{"plain", 10, "plain"},
		{"bad\xffbyte", 20, "bad\uFFFDbyte"},
		{"abé", 3, "ab"}, // é is two bytes: never cut in half
		{"ab日", 4, "ab"},
		{"ab日", 5, "ab日"},
		{"\xff\xfe", 3, "\uFFFD"},
	} {
		got := cleanBytes(tc.in, tc.bytes)
		if got != tc.want || !utf8.ValidString(got) || len(got) > tc.bytes {
			t.Errorf("cleanBytes(%q, %d) = %q, want %q", tc.in, tc.bytes, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in    string
		runes int
		want  string
	}{
		{"日本語", 3, "日本語"},
		{"日本語", 2, "日本"},
		{"a\xffb", 2, "a\uFFFD"},
		{"", 0, ""},
	} {
		if got := cleanRunes(tc.in, tc.runes); got != tc.want || !utf8.ValidString(got) {
			t.Errorf("cleanRunes(%q, %d) = %q, want %q", tc.in, tc.runes, got, tc.want)
		}
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
