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

// IsWeak reports whether id is the identifier of an Ed25519 key of small
// order: one of the eight points of the curve's torsion subgroup, in any
// of its 32-byte encodings (both sign bits, and the non-canonical p and p+1
// for 0 and 1). Under such a key one fixed signature verifies for every
// message, so no credential may name it (docs/PROTOCOL.md §1); an issuer
// that holds only an identifier, not the key, checks it with IsWeak.
func (id Identifier) IsWeak() bool {
	for _, w := range weakIdentifiers {
		if id.Equal(w) {
			return true
		}
	}
	return false
}

// weakIdentifiers are the identifiers of the 14 encodings of small-order
// points (the y coordinates of libsodium's ge25519_has_small_order list,
// each with sign bit 0 and 1).
var weakIdentifiers = func() []Identifier {
	ys := []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // y = 0, order 4
		"0100000000000000000000000000000000000000000000000000000000000000", // y = 1, the neutral point
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p-1, order 2
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p, 0 non-canonical
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p+1, 1 non-canonical
	}
	var ids []Identifier
	for _, y := range ys {
		key, err := hex.DecodeString(y)
		if err != nil {
			panic("secure: internal error: " + err.Error())
		}
		for _, sign := range []byte{0, 0x80} {
			k := append([]byte(nil), key...)
			k[31] = k[31]&0x7f | sign
			ids = append(ids, IdentifierOf(k))
		}
	}
	return ids
}()
