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
	"sync"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters used for new hashes. They follow the OWASP Password
// Storage Cheat Sheet recommendation for argon2id (19 MiB, 2 passes, 1 lane).
//
// NOTE: Verify reads the parameters from each encoded hash rather than from
// these constants, so they can be raised later without invalidating stored
// hashes. Callers may re-hash on a successful login when the stored parameters
// are older (see NeedsRehash).
const (
	argon2Memory  uint32 = 19456 // KiB
	argon2Time    uint32 = 2     // passes over the memory
	argon2Threads uint8  = 1     // lanes
	argon2SaltLen        = 16    // bytes
	argon2KeyLen  uint32 = 32    // bytes
)

// Limits accepted when parsing an encoded hash.
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

// ErrInvalidHash is returned (wrapped) by Verify when the encoded hash is not
// a well-formed argon2id PHC string. Its message, and that of any error
// wrapping it, never contains the encoded hash or the password.
var ErrInvalidHash = errors.New("auth: invalid password hash encoding")

// Hasher hashes and verifies passwords with argon2id. Each operation holds one
// slot of a semaphore for the duration of the key derivation, so at most
// maxConcurrent derivations (each using 19 MiB) run at once.
//
// A Hasher is safe for concurrent use. Create one with NewHasher; the zero
// value is not usable.
type Hasher struct {
	// sem is a counting semaphore: sending acquires a slot, receiving
	// releases it.
	sem chan struct{}
}

// NewHasher returns a Hasher that runs at most maxConcurrent argon2id
// derivations at the same time. A maxConcurrent of zero or less means
// runtime.NumCPU().
//
// NOTE: argon2id is memory-hard, so an unbounded burst of logins would
// allocate 19 MiB per request and could exhaust memory. Bounding
// concurrency by the CPU count keeps the peak at roughly
// NumCPU*19 MiB while losing no throughput, since each derivation is CPU-bound.
func NewHasher(maxConcurrent int) *Hasher {
	if maxConcurrent <= 0 {
		maxConcurrent = runtime.NumCPU()
	}
	return &Hasher{sem: make(chan struct{}, maxConcurrent)}
}

// acquire takes a semaphore slot, or returns ctx.Err() if ctx ends first.
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
	case <-ctx.Done():
		return ctx.Err()
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
	return argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, p.keyLen), nil
}

// params are the argon2id parameters of one encoded hash.
type params struct {
	memory  uint32
	time    uint32
	threads uint8
	keyLen  uint32
}

// currentParams are the parameters used for new hashes.
var currentParams = params{
	memory:  argon2Memory,
	time:    argon2Time,
	threads: argon2Threads,
	keyLen:  argon2KeyLen,
}

// Hash returns the argon2id hash of password in PHC string format:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// where salt and hash are unpadded standard base64. It returns ctx.Err() if ctx
// ends while waiting for a hashing slot.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: generating salt: %w", err)
	}
	key, err := h.derive(ctx, password, salt, currentParams)
	if err != nil {
		return "", err
	}
	return encode(currentParams, salt, key), nil
}

// Verify reports whether password matches the encoded argon2id hash produced
// by Hash. The argon2id parameters are read from encoded, so hashes made with
// older parameters still verify.
//
// A mismatch returns (false, nil). A malformed encoding returns an error
// wrapping ErrInvalidHash; if ctx ends while waiting for a hashing slot, the
// error is ctx.Err().
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

var (
	dummyOnce    sync.Once
	dummyEncoded string
)

// dummyHash returns a fixed, valid encoded hash using the current parameters
// that no password matches.
//
// NOTE: the dummy does not need to be the hash of any particular password; it
// only has to cost the same to verify as a real one. A random salt and a random
// 32-byte "key" make an encoding that is indistinguishable in verification cost
// from a real hash, without paying for an extra derivation the first time
// VerifyDummy runs (which would itself be a timing signal).
func dummyHash() string {
	dummyOnce.Do(func() {
		b := make([]byte, argon2SaltLen+int(argon2KeyLen))
		// NOTE: crypto/rand.Read does not fail on supported platforms
		// (since Go 1.24 it crashes the program instead of returning an
		// error), so the error is safe to ignore here.
		_, _ = rand.Read(b)
		dummyEncoded = encode(currentParams, b[:argon2SaltLen], b[argon2SaltLen:])
	})
	return dummyEncoded
}

// VerifyDummy verifies password against a fixed dummy hash and discards the
// result. Call it when a login names an unknown user, or a user without a
// password, so that the response takes as long as a real verification and
// does not reveal whether the account exists. It returns early only if ctx
// ends while waiting for a hashing slot.
func (h *Hasher) VerifyDummy(ctx context.Context, password string) {
	_, _ = h.Verify(ctx, dummyHash(), password)
}

// NeedsRehash reports whether encoded was made with parameters other than the
// current ones (or is malformed), so that a caller holding the plaintext after
// a successful Verify can store a fresh hash.
func NeedsRehash(encoded string) bool {
	p, salt, _, err := decode(encoded)
	return err != nil || p != currentParams || len(salt) != argon2SaltLen
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
