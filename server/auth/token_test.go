package auth_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/server/auth"
)

func TestNewToken(t *testing.T) {
	t.Parallel()
	tok, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	body, ok := strings.CutPrefix(tok, "ghs_")
	if !ok {
		t.Fatalf("token lacks the ghs_ prefix")
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatalf("token body is not unpadded base64url: %v", err)
	}
	if len(raw) != 32 {
		t.Fatalf("token body decodes to %d bytes; want 32", len(raw))
	}
	want := sha256.Sum256([]byte(tok))
	if !bytes.Equal(hash, want[:]) {
		t.Errorf("NewToken hash is not SHA-256 of the token")
	}
	if !bytes.Equal(auth.HashToken(tok), hash) {
		t.Errorf("HashToken(token) differs from the hash returned by NewToken")
	}
	if !auth.LooksLikeToken(tok) {
		t.Errorf("LooksLikeToken rejects a fresh token")
	}
}

func TestTokensUnique(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 1000 {
		tok, _, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok] {
			t.Fatal("duplicate token")
		}
		seen[tok] = true
		if !auth.LooksLikeToken(tok) {
			t.Fatal("LooksLikeToken rejects a fresh token")
		}
	}
}

func TestHashTokenDistinct(t *testing.T) {
	t.Parallel()
	a, b := auth.HashToken("ghs_a"), auth.HashToken("ghs_b")
	if len(a) != sha256.Size || bytes.Equal(a, b) {
		t.Errorf("HashToken: len %d, distinct inputs equal: %v", len(a), bytes.Equal(a, b))
	}
}

func TestLooksLikeTokenRejectsJunk(t *testing.T) {
	t.Parallel()
	tok, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	body := strings.TrimPrefix(tok, "ghs_")
	valid43 := strings.Repeat("A", 43)
	if !auth.LooksLikeToken("ghs_" + valid43) {
		t.Fatalf("LooksLikeToken rejects ghs_ + 43 'A'")
	}
	for name, s := range map[string]string{
		"empty":            "",
		"prefix only":      "ghs_",
		"no prefix":        body,
		"wrong prefix":     "ghp_" + body,
		"upper prefix":     "GHS_" + body,
		"too short":        tok[:len(tok)-1],
		"too long":         tok + "A",
		"padded":           tok + "=",
		"std alphabet +":   "ghs_" + valid43[:42] + "+",
		"std alphabet /":   "ghs_" + "/" + valid43[1:],
		"space":            "ghs_" + " " + valid43[1:],
		"non-canonical":    "ghs_" + valid43[:42] + "B", // non-zero trailing bits
		"non-ascii":        "ghs_" + "é" + valid43[2:],
		"bearer":           "Bearer " + tok,
		"trailing newline": tok[:len(tok)-1] + "\n",
	} {
		if auth.LooksLikeToken(s) {
			t.Errorf("LooksLikeToken(%s) = true", name)
		}
	}
}
