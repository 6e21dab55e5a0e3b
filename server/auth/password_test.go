package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
)

func TestHashVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(0)
	ctx := context.Background()

	for _, pw := range []string{"correct horse battery staple", "", "pässwörd ✓", strings.Repeat("x", 1000)} {
		enc, err := h.Hash(ctx, pw)
		if err != nil {
			t.Fatalf("Hash: %v", err)
		}
		ok, err := h.Verify(ctx, enc, pw)
		if err != nil || !ok {
			t.Errorf("Verify(right password) = %v, %v; want true, nil", ok, err)
		}
		ok, err = h.Verify(ctx, enc, pw+"!")
		if err != nil || ok {
			t.Errorf("Verify(wrong password) = %v, %v; want false, nil", ok, err)
		}
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(0)
	ctx := context.Background()
	enc, err := h.Hash(ctx, "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	for _, wrong := range []string{"hunter3", "Hunter2", "hunter2 ", "", "hunter"} {
		ok, err := h.Verify(ctx, enc, wrong)
		if err != nil || ok {
			t.Errorf("Verify(%q) = %v, %v; want false, nil", wrong, ok, err)
		}
	}
}

func TestHashPHCFormat(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(0)
	enc, err := h.Hash(context.Background(), "pw")
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "$argon2id$v=19$m=19456,t=2,p=1$"
	if !strings.HasPrefix(enc, prefix) {
		t.Fatalf("hash %q does not start with %q", enc, prefix)
	}
	parts := strings.Split(strings.TrimPrefix(enc, prefix), "$")
	if len(parts) != 2 {
		t.Fatalf("hash %q: want salt$hash after the parameters", enc)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[0])
	if err != nil || len(salt) != 16 {
		t.Errorf("salt %q: decoded %d bytes, err %v; want 16 bytes", parts[0], len(salt), err)
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[1])
	if err != nil || len(key) != 32 {
		t.Errorf("hash %q: decoded %d bytes, err %v; want 32 bytes", parts[1], len(key), err)
	}
	if h.NeedsRehash(enc) {
		t.Errorf("NeedsRehash(fresh hash) = true")
	}
}

func TestSaltsDiffer(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(0)
	ctx := context.Background()
	seen := map[string]bool{}
	for range 4 {
		enc, err := h.Hash(ctx, "same password")
		if err != nil {
			t.Fatal(err)
		}
		salt := strings.Split(enc, "$")[4]
		if seen[salt] {
			t.Fatalf("salt %q repeated", salt)
		}
		seen[salt] = true
	}
}

// referenceHashes are argon2id test vectors from the reference
// implementation (phc-winner-argon2 src/test.c), password "password", salt
// "somesalt". Their parameters differ from ours.
var referenceHashes = []string{
	"$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4",
	"$argon2id$v=19$m=256,t=2,p=2$c29tZXNhbHQ$bQk8UB/VmZZF4Oo79iDXuL5/0ttZwg2f/5U52iv1cDc",
}

// TestVerifyOtherParameters checks that Verify takes the parameters from the
// encoded string and interoperates with the reference implementation.
func TestVerifyOtherParameters(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(0)
	ctx := context.Background()
	for _, enc := range referenceHashes {
		ok, err := h.Verify(ctx, enc, "password")
		if err != nil || !ok {
			t.Errorf("Verify(%s) = %v, %v; want true, nil", enc, ok, err)
		}
		ok, err = h.Verify(ctx, enc, "Password")
		if err != nil || ok {
			t.Errorf("Verify(%s, wrong) = %v, %v; want false, nil", enc, ok, err)
		}
		if !h.NeedsRehash(enc) {
			t.Errorf("NeedsRehash(%s) = false; want true", enc)
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(0)
	ctx := context.Background()
	good, err := h.Hash(ctx, "pw")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	join := func(p ...string) string { return strings.Join(p, "$") }

	const secret = "S3cr3tPassw0rd"
	cases := map[string]string{
		"empty":            "",
		"password as hash": secret,
		"bcrypt":           "$2a$10$" + secret + "abcdefghijklmnopqrstuvwxyz0123456789",
		"argon2i":          join("", "argon2i", "v=19", "m=19456,t=2,p=1", salt, key),
		"old version":      join("", "argon2id", "v=16", "m=19456,t=2,p=1", salt, key),
		"no version":       join("", "argon2id", "m=19456,t=2,p=1", salt, key),
		"extra field":      good + "$" + secret,
		"leading junk":     secret + good,
		"param order":      join("", "argon2id", "v=19", "t=2,m=19456,p=1", salt, key),
		"missing param":    join("", "argon2id", "v=19", "m=19456,t=2", salt, key),
		"negative param":   join("", "argon2id", "v=19", "m=19456,t=-2,p=1", salt, key),
		"zero time":        join("", "argon2id", "v=19", "m=19456,t=0,p=1", salt, key),
		"zero threads":     join("", "argon2id", "v=19", "m=19456,t=2,p=0", salt, key),
		"huge memory":      join("", "argon2id", "v=19", "m=4294967295,t=2,p=1", salt, key),
		"overflow":         join("", "argon2id", "v=19", "m=99999999999999999999,t=2,p=1", salt, key),
		"memory < 8*p":     join("", "argon2id", "v=19", "m=8,t=2,p=2", salt, key),
		"bad salt b64":     join("", "argon2id", "v=19", "m=19456,t=2,p=1", "!!"+secret, key),
		"padded salt":      join("", "argon2id", "v=19", "m=19456,t=2,p=1", salt+"==", key),
		"short salt":       join("", "argon2id", "v=19", "m=19456,t=2,p=1", "YWJj", key),
		"empty hash":       join("", "argon2id", "v=19", "m=19456,t=2,p=1", salt, ""),
		"bad hash b64":     join("", "argon2id", "v=19", "m=19456,t=2,p=1", salt, key[:len(key)-1]+"*"),
		"url alphabet":     join("", "argon2id", "v=19", "m=19456,t=2,p=1", salt, strings.Repeat("-", len(key))),
	}
	for name, enc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ok, err := h.Verify(ctx, enc, secret)
			if ok || err == nil {
				t.Fatalf("Verify = %v, %v; want false and an error", ok, err)
			}
			if !errors.Is(err, auth.ErrInvalidHash) {
				t.Errorf("error %v does not wrap ErrInvalidHash", err)
			}
			msg := err.Error()
			for _, leak := range []string{secret, salt, key} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q leaks %q", msg, leak)
				}
			}
			if enc != "" && strings.Contains(msg, enc) {
				t.Errorf("error %q leaks the encoded hash", msg)
			}
			if !h.NeedsRehash(enc) {
				t.Errorf("NeedsRehash(malformed) = false")
			}
		})
	}
}

// TestVerifyDummy checks that a dummy verification costs what a real one does: exactly one
// derivation, with the hasher's own parameters (not some fixed or cheaper ones), and that it
// releases its slot.
func TestVerifyDummy(t *testing.T) {
	t.Parallel()
	for _, p := range []auth.Params{{}, cheap} {
		h, err := auth.NewHasherWith(auth.HasherOptions{MaxConcurrent: 1, Params: p})
		if err != nil {
			t.Fatal(err)
		}
		var seen []auth.Params
		h.OnDerive(func(p auth.Params) { seen = append(seen, p) })
		for range 2 {
			if err := h.VerifyDummy(context.Background(), "whatever"); err != nil {
				t.Fatalf("VerifyDummy: %v", err)
			}
		}
		if n := h.Derivations(); n != 2 {
			t.Errorf("params %+v: two VerifyDummy calls ran %d derivations, want 2", p, n)
		}
		for _, got := range seen {
			if got != h.Params() {
				t.Errorf("VerifyDummy derived with %+v, want the hasher's %+v", got, h.Params())
			}
		}
		if len(seen) != 2 {
			t.Errorf("observed %d derivations, want 2", len(seen))
		}
		if _, inUse := h.Slots(); inUse != 0 {
			t.Fatalf("%d slots still in use after VerifyDummy", inUse)
		}
	}
}

// cheap are test parameters far below the defaults.
var cheap = auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}

// TestDerivationsCounted checks the derivation counter: one per Hash, Verify and VerifyDummy,
// none for a malformed hash or a call that never got a slot.
func TestDerivationsCounted(t *testing.T) {
	t.Parallel()
	h, err := auth.NewHasherWith(auth.HasherOptions{MaxConcurrent: 1, Params: cheap})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enc, err := h.Hash(ctx, "pw")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = h.Verify(ctx, enc, "pw")
	_, _ = h.Verify(ctx, enc, "wrong")
	_ = h.VerifyDummy(ctx, "pw")
	if n := h.Derivations(); n != 4 {
		t.Fatalf("Hash, two Verify and VerifyDummy ran %d derivations, want 4", n)
	}
	_, _ = h.Verify(ctx, "$argon2id$v=19$garbage", "pw")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, _ = h.Hash(cancelled, "pw")
	if n := h.Derivations(); n != 4 {
		t.Fatalf("a malformed hash and a cancelled call ran %d derivations, want none", n-4)
	}
}

// TestConfiguredParams checks that new hashes use the configured parameters and that NeedsRehash
// compares stored hashes with them, not with the defaults.
func TestConfiguredParams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, err := auth.NewHasherWith(auth.HasherOptions{Params: cheap})
	if err != nil {
		t.Fatal(err)
	}
	owasp := auth.NewHasher(0)
	if got, want := owasp.Params(), (auth.Params{MemoryKiB: 19456, Time: 2, Threads: 1}); got != want {
		t.Errorf("default params %+v, want OWASP's %+v", got, want)
	}
	enc, err := h.Hash(ctx, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("hash %q does not use the configured parameters", enc)
	}
	if h.NeedsRehash(enc) {
		t.Error("NeedsRehash(a hash with the configured parameters) = true")
	}
	if !owasp.NeedsRehash(enc) {
		t.Error("NeedsRehash by an OWASP hasher of a cheap hash = false")
	}
	strong, err := owasp.Hash(ctx, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if !h.NeedsRehash(strong) {
		t.Error("NeedsRehash by a cheap hasher of an OWASP hash = false")
	}
	// Either hasher verifies either hash: the parameters come from the encoding.
	for _, v := range []*auth.Hasher{h, owasp} {
		for _, e := range []string{enc, strong} {
			if ok, err := v.Verify(ctx, e, "pw"); err != nil || !ok {
				t.Errorf("Verify(%s) = %v, %v", e, ok, err)
			}
		}
	}
	for _, bad := range []auth.Params{{MemoryKiB: 8, Threads: 2}, {Time: 65}, {MemoryKiB: 1<<20 + 1}, {Threads: 65, MemoryKiB: 1024}} {
		if _, err := auth.NewHasherWith(auth.HasherOptions{Params: bad}); err == nil {
			t.Errorf("NewHasherWith(params %+v) succeeded, want an error", bad)
		}
	}
}

// TestQueueBound fills the one slot and the one queue place and checks that a further call fails
// at once with RESOURCE_EXHAUSTED PASSWORD_QUEUE_FULL, without a derivation, while the queued one
// goes through once the slot is free.
func TestQueueBound(t *testing.T) {
	t.Parallel()
	h, err := auth.NewHasherWith(auth.HasherOptions{MaxConcurrent: 1, MaxQueued: 1, MaxWait: time.Hour, Params: cheap})
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{}, 4)
	h.OnQueued(func() { queued <- struct{}{} })
	ctx := context.Background()
	release := h.HoldSlot()

	done := make(chan error, 1)
	go func() { done <- h.VerifyDummy(ctx, "first") }()
	<-queued // the first call waits for the slot

	// NOTE: the calls below must fail at once; the deadline only turns a regression (a call that
	// queues after all) into a failure instead of a hang.
	fast, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"Hash":        func() error { _, err := h.Hash(fast, "pw"); return err },
		"Verify":      func() error { _, err := h.Verify(fast, referenceHashes[0], "password"); return err },
		"VerifyDummy": func() error { return h.VerifyDummy(fast, "pw") },
	} {
		err := call()
		e, ok := errs.As(err)
		if !ok || e.Kind != errs.KindResourceExhausted || e.Reason != auth.ReasonQueueFull {
			t.Errorf("%s with a full queue = %v, want RESOURCE_EXHAUSTED %s", name, err, auth.ReasonQueueFull)
		}
	}
	if n := h.Derivations(); n != 0 {
		t.Errorf("%d derivations while the only slot was held", n)
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("the queued call: %v", err)
	}
	if n := h.Derivations(); n != 1 {
		t.Errorf("%d derivations after the queued call, want 1", n)
	}

	// No queue at all: a busy slot refuses at once.
	none, err := auth.NewHasherWith(auth.HasherOptions{MaxConcurrent: 1, MaxQueued: -1, Params: cheap})
	if err != nil {
		t.Fatal(err)
	}
	release = none.HoldSlot()
	defer release()
	if err := none.VerifyDummy(fast, "pw"); !isReason(err, errs.KindResourceExhausted, auth.ReasonQueueFull) {
		t.Errorf("VerifyDummy with no queue and a busy slot = %v, want %s", err, auth.ReasonQueueFull)
	}
}

// TestQueueTimeout checks that waiting for a slot has a deadline: past MaxWait the call fails with
// UNAVAILABLE PASSWORD_QUEUE_TIMEOUT and derives nothing.
func TestQueueTimeout(t *testing.T) {
	t.Parallel()
	h, err := auth.NewHasherWith(auth.HasherOptions{MaxConcurrent: 1, MaxWait: 10 * time.Millisecond, Params: cheap})
	if err != nil {
		t.Fatal(err)
	}
	release := h.HoldSlot()
	defer release()
	// NOTE: the context's deadline only turns a regression (no MaxWait) into a failure, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.VerifyDummy(ctx, "pw"); !isReason(err, errs.KindUnavailable, auth.ReasonQueueTimeout) {
		t.Errorf("VerifyDummy with the slot held past MaxWait = %v, want UNAVAILABLE %s", err, auth.ReasonQueueTimeout)
	}
	if h.Derivations() != 0 || h.Queued() != 0 {
		t.Errorf("after the timeout: %d derivations, %d queued; want 0, 0", h.Derivations(), h.Queued())
	}
}

func isReason(err error, kind errs.Kind, reason string) bool {
	e, ok := errs.As(err)
	return ok && e.Kind == kind && e.Reason == reason
}

func TestNewHasherCapacity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ arg, want int }{
		{0, runtime.NumCPU()},
		{-3, runtime.NumCPU()},
		{1, 1},
		{5, 5},
	} {
		if got, _ := auth.NewHasher(tc.arg).Slots(); got != tc.want {
			t.Errorf("NewHasher(%d) capacity = %d; want %d", tc.arg, got, tc.want)
		}
	}
}

// TestSemaphoreBoundsConcurrency fills every slot and checks that further
// work cannot start; no sleeps: the held slots are only released after the
// blocked calls have returned, so the outcome does not depend on scheduling.
func TestSemaphoreBoundsConcurrency(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(2)
	releaseA := h.HoldSlot()
	releaseB := h.HoldSlot()

	enc := referenceHashes[0]

	// Already-cancelled context: every operation fails fast.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(cancelled, "pw"); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash with full semaphore = %v; want context.Canceled", err)
	}
	if ok, err := h.Verify(cancelled, enc, "password"); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with full semaphore = %v, %v; want false, context.Canceled", ok, err)
	}
	h.VerifyDummy(cancelled, "pw") // must return, not block

	// A live context that ends later: the call can only fail if it really
	// waited on the semaphore (a derivation never looks at ctx), so this
	// fails deterministically if the bound is not enforced.
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if _, err := h.Hash(short, "pw"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Hash with full semaphore = %v; want context.DeadlineExceeded", err)
	}

	// Context cancelled while waiting: the callers are blocked (or about to
	// block) on the semaphore and must give up with ctx.Err().
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() {
		_, err := h.Hash(ctx, "pw")
		errs <- err
	})
	wg.Go(func() {
		_, err := h.Verify(ctx, enc, "password")
		errs <- err
	})
	wg.Go(func() {
		h.VerifyDummy(ctx, "pw")
		errs <- context.Canceled
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("blocked call returned %v; want context.Canceled", err)
		}
	}
	if _, inUse := h.Slots(); inUse != 2 {
		t.Fatalf("slots in use = %d; want the 2 held by the test", inUse)
	}

	// Freeing one slot lets work through again.
	releaseA()
	if ok, err := h.Verify(context.Background(), enc, "password"); err != nil || !ok {
		t.Errorf("Verify after release = %v, %v; want true, nil", ok, err)
	}
	releaseB()
	if _, inUse := h.Slots(); inUse != 0 {
		t.Errorf("slots in use = %d after release; want 0", inUse)
	}
}

// TestConcurrentUse exercises the Hasher from many goroutines under -race.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	h := auth.NewHasher(2)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			pw := strings.Repeat("p", i)
			enc, err := h.Hash(ctx, pw)
			if err != nil {
				t.Error(err)
				return
			}
			if ok, err := h.Verify(ctx, enc, pw); err != nil || !ok {
				t.Errorf("Verify = %v, %v", ok, err)
			}
			h.VerifyDummy(ctx, pw)
		})
	}
	wg.Wait()
	if _, inUse := h.Slots(); inUse != 0 {
		t.Errorf("slots in use = %d; want 0", inUse)
	}
}
