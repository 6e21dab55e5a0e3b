// Package auth holds the credential primitives of the server: password
// hashing and session tokens.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gatehouse/gatehouse/server/errs"
)

// Default argon2id parameters: the OWASP Password Storage Cheat Sheet recommendation for argon2id
// (19 MiB, 2 passes, 1 lane). A Hasher uses them unless its options say otherwise.
//
// NOTE: Verify reads the parameters from each encoded hash rather than from the Hasher's, so they
// can be raised later without invalidating stored hashes; a successful login re-hashes a password
// whose stored parameters differ (see NeedsRehash).
const (
	DefaultMemoryKiB uint32 = 19456 // KiB
	DefaultTime      uint32 = 2     // passes over the memory
	DefaultThreads   uint8  = 1     // lanes

	argon2SaltLen        = 16 // bytes
	argon2KeyLen  uint32 = 32 // bytes
)

// Defaults of HasherOptions.
const (
	// DefaultMaxQueued is how many hashes may wait for a slot when every slot is busy.
	DefaultMaxQueued = 64
	// DefaultMaxWait is how long a hash waits for a slot.
	DefaultMaxWait = 5 * time.Second
)

// Limits accepted when parsing an encoded hash, and for Params.
//
// NOTE: the parameters of a stored hash decide how much memory and CPU a
// verification costs. The limits stop a corrupted or tampered row from turning
// one login into a multi-gigabyte allocation; they are generous enough to allow
// the parameters to be raised well above today's values.
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 64
	maxThreads   = 64
	minSaltLen   = 8
	maxSaltLen   = 64
	minKeyLen    = 16
	maxKeyLen    = 64
)

// Reasons of the errors a Hasher returns when it is too busy to hash.
const (
	// ReasonQueueFull (RESOURCE_EXHAUSTED): every hashing slot is busy and the queue of hashes
	// waiting for one is full.
	ReasonQueueFull = "PASSWORD_QUEUE_FULL"
	// ReasonQueueTimeout (UNAVAILABLE): a hash waited longer than its bound for a slot.
	ReasonQueueTimeout = "PASSWORD_QUEUE_TIMEOUT"
)

// QueueFullError returns the error (RESOURCE_EXHAUSTED, ReasonQueueFull) of a hash refused because
// the queue is full.
func QueueFullError() error {
	return errs.ResourceExhausted(ReasonQueueFull, "too many password checks are waiting; try again later")
}

// QueueTimeoutError returns the error (UNAVAILABLE, ReasonQueueTimeout) of a hash that waited too
// long for a slot.
func QueueTimeoutError() error {
	return errs.Unavailable(ReasonQueueTimeout, "timed out waiting to check the password; try again later")
}

// ErrInvalidHash is returned (wrapped) by Verify when the encoded hash is not
// a well-formed argon2id PHC string. Its message, and that of any error
// wrapping it, never contains the encoded hash or the password.
var ErrInvalidHash = errors.New("auth: invalid password hash encoding")

// Params are the argon2id cost parameters of new hashes. A zero field takes its default
// (DefaultMemoryKiB, DefaultTime, DefaultThreads), so the zero Params are OWASP's.
//
// NOTE: production keeps the defaults; lowering them is for tests, which would otherwise spend
// most of their time hashing. It is deliberately not a command-line flag.
type Params struct {
	// MemoryKiB is the memory of one derivation, in KiB (at least 8 per thread).
	MemoryKiB uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the number of lanes.
	Threads uint8
}

// withDefaults returns p with its zero fields set to the defaults.
func (p Params) withDefaults() Params {
	if p.MemoryKiB == 0 {
		p.MemoryKiB = DefaultMemoryKiB
	}
	if p.Time == 0 {
		p.Time = DefaultTime
	}
	if p.Threads == 0 {
		p.Threads = DefaultThreads
	}
	return p
}

// params returns p as the parameters of an encoding, with the fixed key length.
func (p Params) params() params {
	return params{memory: p.MemoryKiB, time: p.Time, threads: p.Threads, keyLen: argon2KeyLen}
}

// HasherOptions configure a Hasher. The zero value is the production configuration.
type HasherOptions struct {
	// MaxConcurrent bounds the derivations running at once; zero or less means runtime.NumCPU().
	MaxConcurrent int
	// MaxQueued bounds the operations waiting for a slot when every slot is busy; beyond it an
	// operation fails at once (ReasonQueueFull). Zero means DefaultMaxQueued; negative means no
	// queue at all.
	MaxQueued int
	// MaxWait bounds how long an operation waits for a slot (then ReasonQueueTimeout). Zero means
	// DefaultMaxWait.
	MaxWait time.Duration
	// Params are the parameters of new hashes, and those NeedsRehash compares stored hashes with.
	Params Params
}

// Hasher hashes and verifies passwords with argon2id. Each operation holds one
// slot of a semaphore for the duration of the key derivation, so at most
// MaxConcurrent derivations (each using MemoryKiB) run at once; at most
// MaxQueued operations wait for a slot, each for at most MaxWait.
//
// A Hasher is safe for concurrent use. Create one with NewHasher or
// NewHasherWith; the zero value is not usable.
type Hasher struct {
	// sem is a counting semaphore: sending acquires a slot, receiving
	// releases it.
	sem       chan struct{}
	maxQueued int64
	maxWait   time.Duration
	params    params
	// queued counts the operations waiting for a slot.
	queued atomic.Int64
	// derivations counts the argon2id derivations run.
	derivations atomic.Uint64
	// dummy is a hash with the Hasher's parameters that no password matches.
	dummy string

	// onQueued and onDerive are test hooks (see export_test.go), nil otherwise.
	onQueued func()
	onDerive func(Params)
}

// NewHasher returns a Hasher with the default options except that it runs at
// most maxConcurrent argon2id derivations at the same time. A maxConcurrent of
// zero or less means runtime.NumCPU().
//
// NOTE: argon2id is memory-hard, so an unbounded burst of logins would
// allocate 19 MiB per request and could exhaust memory. Bounding
// concurrency by the CPU count keeps the peak at roughly
// NumCPU*19 MiB while losing no throughput, since each derivation is CPU-bound.
func NewHasher(maxConcurrent int) *Hasher {
	h, err := NewHasherWith(HasherOptions{MaxConcurrent: maxConcurrent})
	if err != nil {
		panic(err) // the default parameters are valid
	}
	return h
}

// NewHasherWith returns a Hasher configured by o. It fails when o.Params are out of the range a
// stored hash may have.
func NewHasherWith(o HasherOptions) (*Hasher, error) {
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = runtime.NumCPU()
	}
	switch {
	case o.MaxQueued == 0:
		o.MaxQueued = DefaultMaxQueued
	case o.MaxQueued < 0:
		o.MaxQueued = 0
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	p := o.Params.withDefaults()
	if p.MemoryKiB > maxMemoryKiB || p.Time > maxTime || p.Threads > maxThreads || p.MemoryKiB < 8*uint32(p.Threads) {
		return nil, fmt.Errorf("auth: argon2id parameters m=%d,t=%d,p=%d out of range (at most m=%d,t=%d,p=%d, and m >= 8*p)",
			p.MemoryKiB, p.Time, p.Threads, maxMemoryKiB, maxTime, maxThreads)
	}
	h := &Hasher{
		sem:       make(chan struct{}, o.MaxConcurrent),
		maxQueued: int64(o.MaxQueued),
		maxWait:   o.MaxWait,
		params:    p.params(),
	}
	// NOTE: the dummy does not need to be the hash of any particular password; it only has to cost
	// the same to verify as a real one. A random salt and a random 32-byte "key" make an encoding
	// that is indistinguishable in verification cost from a real hash, without paying for an extra
	// derivation the first time VerifyDummy runs (which would itself be a timing signal).
	b := make([]byte, argon2SaltLen+int(argon2KeyLen))
	// NOTE: crypto/rand.Read does not fail on supported platforms (since Go 1.24 it crashes the
	// program instead of returning an error), so the error is safe to ignore here.
	_, _ = rand.Read(b)
	h.dummy = encode(h.params, b[:argon2SaltLen], b[argon2SaltLen:])
	return h, nil
}

// Params returns the parameters of new hashes.
func (h *Hasher) Params() Params {
	return Params{MemoryKiB: h.params.memory, Time: h.params.time, Threads: h.params.threads}
}

// Derivations returns how many argon2id derivations h has run (for metrics, and for tests that
// check how much work a request cost).
func (h *Hasher) Derivations() uint64 { return h.derivations.Load() }

// Queued returns how many operations are waiting for a hashing slot.
func (h *Hasher) Queued() int { return int(h.queued.Load()) }

// acquire takes a semaphore slot. It fails at once with QueueFullError when the queue is full, with
// QueueTimeoutError after waiting MaxWait, and with ctx.Err() if ctx ends first.
func (h *Hasher) acquire(ctx context.Context) error {
	if h == nil || h.sem == nil {
		panic("auth: Hasher used without NewHasher")
	}
	// NOTE: select picks at random among ready cases, so without this check a
	// request whose context has already ended could still win a free slot and
	// burn a full derivation for nobody.
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case h.sem <- struct{}{}:
		return nil
	default:
	}
	// NOTE: a bounded queue with a deadline: an unbounded one lets a burst of logins pile up
	// requests (and their goroutines) behind the slots for as long as the burst lasts, and every
	// one of them is eventually hashed; failing fast tells the client to come back later instead.
	if h.queued.Add(1) > h.maxQueued {
		h.queued.Add(-1)
		return QueueFullError()
	}
	defer h.queued.Add(-1)
	if h.onQueued != nil {
		h.onQueued()
	}
	timer := time.NewTimer(h.maxWait)
	defer timer.Stop()
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return QueueTimeoutError()
	}
}

// release gives back a slot taken by acquire.
func (h *Hasher) release() { <-h.sem }

// derive runs argon2id while holding a semaphore slot.
func (h *Hasher) derive(ctx context.Context, password string, salt []byte, p params) ([]byte, error) {
	if err := h.acquire(ctx); err != nil {
		return nil, err
	}
	defer h.release()
	h.derivations.Add(1)
	if h.onDerive != nil {
		h.onDerive(Params{MemoryKiB: p.memory, Time: p.time, Threads: p.threads})
	}
	return argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, p.keyLen), nil
}

// params are the argon2id parameters of one encoded hash.
type params struct {
	memory  uint32
	time    uint32
	threads uint8
	keyLen  uint32
}

// Hash returns the argon2id hash of password in PHC string format, with h's parameters:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// where salt and hash are unpadded standard base64. It fails like acquire when
// no hashing slot can be had.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: generating salt: %w", err)
	}
	key, err := h.derive(ctx, password, salt, h.params)
	if err != nil {
		return "", err
	}
	return encode(h.params, salt, key), nil
}

// Verify reports whether password matches the encoded argon2id hash produced
// by Hash. The argon2id parameters are read from encoded, so hashes made with
// other parameters still verify.
//
// A mismatch returns (false, nil). A malformed encoding returns an error
// wrapping ErrInvalidHash, without any derivation; when no hashing slot can be
// had, the error is that of acquire (QueueFullError, QueueTimeoutError or ctx.Err()).
func (h *Hasher) Verify(ctx context.Context, encoded, password string) (bool, error) {
	p, salt, want, err := decode(encoded)
	if err != nil {
		return false, err
	}
	got, err := h.derive(ctx, password, salt, p)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// VerifyDummy verifies password against a fixed dummy hash with h's parameters
// and discards the result. Call it when a login names an unknown user, or a user
// without a password, so that the response costs one derivation, as a real
// verification does, and does not reveal whether the account exists. It fails
// only when no hashing slot can be had, as Verify does.
func (h *Hasher) VerifyDummy(ctx context.Context, password string) error {
	_, err := h.Verify(ctx, h.dummy, password)
	return err
}

// NeedsRehash reports whether encoded was made with parameters other than h's
// (or is malformed), so that a caller holding the plaintext after a successful
// Verify can store a fresh hash.
func (h *Hasher) NeedsRehash(encoded string) bool {
	p, salt, _, err := decode(encoded)
	return err != nil || p != h.params || len(salt) != argon2SaltLen
}

// b64 is the base64 flavour of the PHC string format: standard alphabet,
// no padding.
var b64 = base64.RawStdEncoding.Strict()

// encode formats an argon2id hash as a PHC string.
func encode(p params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// invalid wraps ErrInvalidHash with a fixed reason.
//
// NOTE: reasons are constant strings on purpose: an encoded hash (or a
// password pasted into the wrong field) must never end up in an error message,
// and from there in a log.
func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidHash, reason)
}

// decode parses a PHC string produced by encode.
func decode(encoded string) (p params, salt, key []byte, err error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" {
		return p, nil, nil, invalid("wrong number of fields")
	}
	if parts[1] != "argon2id" {
		return p, nil, nil, invalid("unsupported algorithm")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, invalid("unsupported version")
	}

	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return p, nil, nil, invalid("bad parameters")
	}
	m, ok1 := parseParam(kv[0], "m=", maxMemoryKiB)
	t, ok2 := parseParam(kv[1], "t=", maxTime)
	th, ok3 := parseParam(kv[2], "p=", maxThreads)
	if !ok1 || !ok2 || !ok3 || m == 0 || t == 0 || th == 0 {
		return p, nil, nil, invalid("bad parameters")
	}
	if m < 8*th {
		// Argon2 requires at least 8 KiB per lane.
		return p, nil, nil, invalid("bad parameters")
	}

	salt, err = b64.DecodeString(parts[4])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return p, nil, nil, invalid("bad salt")
	}
	key, err = b64.DecodeString(parts[5])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return p, nil, nil, invalid("bad hash")
	}

	p = params{memory: m, time: t, threads: uint8(th), keyLen: uint32(len(key))}
	return p, salt, key, nil
}

// parseParam parses "<prefix><decimal>" with a value in [0, max].
func parseParam(s, prefix string, max uint64) (uint32, bool) {
	v, ok := strings.CutPrefix(s, prefix)
	if !ok || v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > max {
		return 0, false
	}
	return uint32(n), true
}
