package secure

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// IdentifierSize is the size of an Identifier in bytes.
const IdentifierSize = 32

// identifierContext separates identifier hashes from every other hash in
// the protocol (docs/PROTOCOL.md, "Identifiers").
const identifierContext = "telegraf-ockam identifier v1\x00"

// An Identifier names an identity: SHA-256 over a context string and the
// identity's Ed25519 public key. Its text form is "I" followed by 64
// lowercase hex digits. The zero Identifier names nobody.
type Identifier [IdentifierSize]byte

// IdentifierOf returns the Identifier of an Ed25519 identity public key.
func IdentifierOf(identityKey ed25519.PublicKey) Identifier {
	h := sha256.New()
	h.Write([]byte(identifierContext))
	h.Write(identityKey)
	var id Identifier
	h.Sum(id[:0])
	return id
}

// ParseIdentifier parses the text form of an Identifier. It accepts only the
// canonical form: "I" and 64 lowercase hex digits.
func ParseIdentifier(s string) (Identifier, error) {
	var id Identifier
	if len(s) != 1+2*IdentifierSize || s[0] != 'I' {
		return id, fmt.Errorf("%w: identifier %q: want I and 64 hex digits", ErrMalformed, s)
	}
	for _, c := range s[1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return id, fmt.Errorf("%w: identifier %q: want lowercase hex", ErrMalformed, s)
		}
	}
	hex.Decode(id[:], []byte(s[1:]))
	return id, nil
}

// String returns the canonical text form, "I" and 64 hex digits.
func (id Identifier) String() string {
	return "I" + hex.EncodeToString(id[:])
}

// Short returns an abbreviated form for logs: "I1234abcd…".
func (id Identifier) Short() string {
	return id.String()[:9] + "…"
}

// Equal reports whether two identifiers are the same, in constant time.
func (id Identifier) Equal(other Identifier) bool {
	return subtle.ConstantTimeCompare(id[:], other[:]) == 1
}

// IsZero reports whether id is the zero Identifier.
func (id Identifier) IsZero() bool {
	return id == Identifier{}
}
