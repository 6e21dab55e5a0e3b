package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// TokenPrefix starts every session token.
//
// NOTE: a fixed, recognisable prefix lets secret scanners (and humans reading
// a leaked log or paste) identify session tokens.
const TokenPrefix = "ghs_"

// tokenBytes is the number of random bytes in a session token (256 bits).
const tokenBytes = 32

// tokenEncoding encodes the random part of a token: URL-safe alphabet, no
// padding, so tokens can travel in headers, cookies and URLs unescaped.
var tokenEncoding = base64.RawURLEncoding.Strict()

// tokenLen is the length of a well-formed token string.
var tokenLen = len(TokenPrefix) + tokenEncoding.EncodedLen(tokenBytes)

// NewToken returns a fresh session token and its SHA-256 digest. Only the
// digest may be stored; the token itself is handed to the client once and
// never persisted or logged.
//
// NOTE: a plain, unsalted SHA-256 is enough here (unlike passwords): the token
// carries 256 bits of entropy, so the digest cannot be brute-forced, and being
// deterministic it can be looked up directly by an index.
func NewToken() (token string, hash []byte, err error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, fmt.Errorf("auth: generating session token: %w", err)
	}
	token = TokenPrefix + tokenEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

// HashToken returns the SHA-256 digest of the whole token string, prefix
// included, as stored by the server and used to look a session up.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// LooksLikeToken reports whether s is syntactically a session token: the
// prefix followed by the canonical unpadded base64url encoding of 32 bytes.
// It is a cheap filter to reject garbage before any hashing or lookup; it says
// nothing about whether the token is valid.
func LooksLikeToken(s string) bool {
	if len(s) != tokenLen || !strings.HasPrefix(s, TokenPrefix) {
		return false
	}
	var b [tokenBytes]byte
	// NOTE: Strict decoding also rejects non-canonical encodings (non-zero
	// trailing bits in the last character), so each 32-byte value has exactly
	// one accepted spelling.
	n, err := tokenEncoding.Decode(b[:], []byte(s[len(TokenPrefix):]))
	return err == nil && n == tokenBytes
}
