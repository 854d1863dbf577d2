package enroll

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"io"
	"log/slog"
	"strings"
)

// An enrollment token is a single-use secret an operator mints in bulk and
// hands to a device; the device proves it holds one in its enrollment
// request, and the authority issues the credential the token was minted
// for. The authority keeps only the token's hash.
//
// docs/PROTOCOL.md, "Enrollment tokens":
//
//	+----------------------+----------------------------+
//	| authority tag (8)    | secret (32)                |
//	+----------------------+----------------------------+
//	 0                      8                            40
//
// The authority tag is the first 8 bytes of the minting authority's
// identifier, so a token given to the wrong authority is refused with a
// clear reason rather than as unknown. Text form: "enroll-token:" and the 40
// bytes in lowercase base32 (RFC 4648 alphabet, no padding): 64 characters.
const (
	// TokenSize is the size of a token's binary form.
	TokenSize = tokenTagSize + tokenSecretSize
	// TokenTextPrefix starts the text form of a token.
	TokenTextPrefix = "enroll-token:"

	tokenTagSize    = 8
	tokenSecretSize = 32
	tokenHashCtx    = "telegraf-ockam enrollment token v1\x00"
)

// tokenEncoding is lowercase base32 without padding: 40 bytes are exactly 64
// characters, with no spare bits, so every token has one text form.
var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Token is an enrollment token. It is a secret: it prints as "redacted"
// under every fmt verb and in slog; Reveal returns its text form. The
// secret sits behind a pointer so that fmt, which ignores Format on an
// unexported field, prints an address and not the bytes.
type Token struct {
	_      [0]func() // incomparable: == on secrets is not constant-time
	secret *[TokenSize]byte
}

// TokenHash is the SHA-256 of a token, under a context string; it is what
// the authority stores.
type TokenHash [sha256.Size]byte

// String returns the hash in hex.
func (h TokenHash) String() string { return hex.EncodeToString(h[:]) }

// GenerateToken returns a new token for authority, with a secret from
// random (nil: crypto/rand).
func GenerateToken(authority secure.Identifier, random io.Reader) (Token, error) {
	if random == nil {
		random = rand.Reader
	}
	t := Token{secret: new([TokenSize]byte)}
	copy(t.secret[:tokenTagSize], authority[:tokenTagSize])
	if _, err := io.ReadFull(random, t.secret[tokenTagSize:]); err != nil {
		return Token{}, fmt.Errorf("secure: token secret: %w", err)
	}
	return t, nil
}

// ParseToken reads the text form of a token. Surrounding whitespace is
// ignored (a token pasted from a file); nothing else is accepted. Errors
// never repeat the input, which may be a secret with a typo.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	body, ok := strings.CutPrefix(s, TokenTextPrefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: enrollment token: want %q and 64 base32 characters", secure.ErrMalformed, TokenTextPrefix)
	}
	if len(body) != tokenEncoding.EncodedLen(TokenSize) {
		return Token{}, fmt.Errorf("%w: enrollment token: %d characters after the prefix, want %d",
			secure.ErrMalformed, len(body), tokenEncoding.EncodedLen(TokenSize))
	}
	t := Token{secret: new([TokenSize]byte)}
	if n, err := tokenEncoding.Decode(t.secret[:], []byte(body)); err != nil || n != TokenSize {
		return Token{}, fmt.Errorf("%w: enrollment token: want lowercase base32 (a-z, 2-7)", secure.ErrMalformed)
	}
	return t, nil
}

// parseTokenBytes reads the binary form.
func parseTokenBytes(b []byte) (Token, error) {
	if len(b) != TokenSize {
		return Token{}, fmt.Errorf("%w: enrollment token of %d bytes, want %d", secure.ErrMalformed, len(b), TokenSize)
	}
	t := Token{secret: new([TokenSize]byte)}
	copy(t.secret[:], b)
	return t, nil
}

// Reveal returns the text form: the secret. Handle it like a password.
func (t Token) Reveal() string {
	t.mustBeSet()
	return TokenTextPrefix + tokenEncoding.EncodeToString(t.secret[:])
}

// Hash returns the hash the authority stores:
// SHA-256("telegraf-ockam enrollment token v1" || 0x00 || token).
func (t Token) Hash() TokenHash {
	t.mustBeSet()
	h := sha256.New()
	h.Write([]byte(tokenHashCtx))
	h.Write(t.secret[:])
	var out TokenHash
	h.Sum(out[:0])
	return out
}

// MintedBy reports whether the token's authority tag is that of authority.
func (t Token) MintedBy(authority secure.Identifier) bool {
	t.mustBeSet()
	return subtle.ConstantTimeCompare(t.secret[:tokenTagSize], authority[:tokenTagSize]) == 1
}

// IsZero reports whether t is the zero Token (no secret).
func (t Token) IsZero() bool { return t.secret == nil }

// appendTo appends the binary form.
func (t Token) appendTo(b []byte) []byte {
	t.mustBeSet()
	return append(b, t.secret[:]...)
}

// mustBeSet panics on the zero Token: using it is a caller's bug.
func (t Token) mustBeSet() {
	if t.secret == nil {
		panic("secure: use of the zero Token")
	}
}

// String returns a redacted description: the token's hash prefix names it
// in logs as the authority's store does.
func (t Token) String() string {
	if t.secret == nil {
		return "enroll.Token(zero)"
	}
	h := t.Hash()
	return "enroll.Token(hash " + hex.EncodeToString(h[:4]) + "…, secret redacted)"
}

// GoString is String, so that %#v is redacted too.
func (t Token) GoString() string { return t.String() }

// Format prints String for every verb and flag.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// LogValue makes slog print String.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }
