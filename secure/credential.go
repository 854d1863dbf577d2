package secure

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// A credential is an authority's signed statement that a subject identity
// has some attributes during a validity period.
//
// docs/PROTOCOL.md, "Credential" (all integers big-endian):
//
//	u8      version = 1
//	[16]    credential id (random)
//	[32]    issuer identifier
//	[32]    subject identifier
//	u64     issued at (Unix seconds)
//	u64     expires at (Unix seconds), > issued at
//	u8      attribute count n (0..MaxAttributes)
//	n × {   u8 key length (1..64), key, u8 value length (0..255), value }
//	        keys strictly ascending bytewise
//	[64]    Ed25519 signature by the issuer's identity key over
//	        credentialContext followed by every byte above
//
// The encoding is canonical: exactly one byte string encodes a credential.
const (
	// CredentialIDSize is the size of a credential id.
	CredentialIDSize = 16
	// MaxAttributes is the largest number of attributes in a credential.
	MaxAttributes = 32
	// MaxAttributeKey and MaxAttributeValue bound an attribute's key and
	// value lengths in bytes.
	MaxAttributeKey   = 64
	MaxAttributeValue = 255
	// MaxCredentialSize is the largest credential encoding: every attribute
	// at its bounds. Parsers refuse anything larger before decoding.
	MaxCredentialSize = 1 + CredentialIDSize + 2*IdentifierSize + 8 + 8 + 1 +
		MaxAttributes*(1+MaxAttributeKey+1+MaxAttributeValue) + ed25519.SignatureSize

	credentialVersion = 1
	credentialContext = "telegraf-ockam credential v1\x00"
)

// A CredentialID identifies one credential, for revocation of a single
// credential rather than the whole subject.
type CredentialID [CredentialIDSize]byte

// String returns the id in hex.
func (id CredentialID) String() string { return hex.EncodeToString(id[:]) }

// Credential is a parsed credential. Parsing checks its form only; Verifier
// checks the issuer, signature, period and revocation.
type Credential struct {
	ID         CredentialID
	Issuer     Identifier
	Subject    Identifier
	IssuedAt   time.Time
	ExpiresAt  time.Time
	Attributes map[string]string // callers must not modify it

	raw []byte // the whole encoding, signature last
}

// IssueCredential signs a credential for subject with the authority's
// identity key. random supplies the credential id (nil: crypto/rand).
func IssueCredential(authority vault.Signer, subject Identifier, attrs map[string]string,
	issuedAt time.Time, ttl time.Duration, random io.Reader) (*Credential, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("secure: credential TTL must be positive, got %v", ttl)
	}
	if err := checkAttributes(attrs); err != nil {
		return nil, err
	}
	if random == nil {
		random = rand.Reader
	}
	c := &Credential{
		Issuer:     IdentifierOf(authority.Public()),
		Subject:    subject,
		IssuedAt:   issuedAt.Truncate(time.Second).UTC(),
		ExpiresAt:  issuedAt.Add(ttl).Truncate(time.Second).UTC(),
		Attributes: maps.Clone(attrs),
	}
	if !c.ExpiresAt.After(c.IssuedAt) {
		return nil, fmt.Errorf("secure: credential TTL %v is shorter than a second", ttl)
	}
	if _, err := io.ReadFull(random, c.ID[:]); err != nil {
		return nil, fmt.Errorf("secure: credential id: %w", err)
	}
	body := c.appendBody(nil)
	sig, err := SignBody(authority, credentialContext, body, "credential")
	if err != nil {
		return nil, err
	}
	c.raw = append(body, sig...)
	return c, nil
}

// appendBody appends the signed part of the encoding to b.
func (c *Credential) appendBody(b []byte) []byte {
	b = append(b, credentialVersion)
	b = append(b, c.ID[:]...)
	b = append(b, c.Issuer[:]...)
	b = append(b, c.Subject[:]...)
	b = binary.BigEndian.AppendUint64(b, unixSeconds(c.IssuedAt))
	b = binary.BigEndian.AppendUint64(b, unixSeconds(c.ExpiresAt))
	keys := slices.Sorted(maps.Keys(c.Attributes))
	b = append(b, byte(len(keys)))
	for _, k := range keys {
		b = append(b, byte(len(k)))
		b = append(b, k...)
		b = append(b, byte(len(c.Attributes[k])))
		b = append(b, c.Attributes[k]...)
	}
	return b
}

// ParseCredential decodes a credential's binary encoding, strictly: exact
// lengths, sorted unique keys, valid attribute text, no trailing bytes.
func ParseCredential(b []byte) (*Credential, error) {
	if len(b) > MaxCredentialSize {
		return nil, fmt.Errorf("%w: credential of %d bytes is larger than %d", ErrMalformed, len(b), MaxCredentialSize)
	}
	s := cryptobyte.String(b)
	c := &Credential{Attributes: map[string]string{}}
	var version, n uint8
	var issued, expires uint64
	if !s.ReadUint8(&version) || version != credentialVersion {
		return nil, fmt.Errorf("%w: credential version %d, want %d", ErrMalformed, version, credentialVersion)
	}
	if !s.CopyBytes(c.ID[:]) || !s.CopyBytes(c.Issuer[:]) || !s.CopyBytes(c.Subject[:]) ||
		!s.ReadUint64(&issued) || !s.ReadUint64(&expires) || !s.ReadUint8(&n) {
		return nil, fmt.Errorf("%w: credential truncated", ErrMalformed)
	}
	if issued > maxUnix || expires > maxUnix || expires <= issued {
		return nil, fmt.Errorf("%w: credential validity [%d, %d]", ErrMalformed, issued, expires)
	}
	if n > MaxAttributes {
		return nil, fmt.Errorf("%w: %d attributes, at most %d", ErrMalformed, n, MaxAttributes)
	}
	prev := ""
	for i := range int(n) {
		var k, v cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&k) || !s.ReadUint8LengthPrefixed(&v) {
			return nil, fmt.Errorf("%w: credential attribute %d truncated", ErrMalformed, i)
		}
		key, value := string(k), string(v)
		if i > 0 && key <= prev {
			return nil, fmt.Errorf("%w: credential attribute keys not strictly ascending at %q", ErrMalformed, key)
		}
		if err := checkAttribute(key, value); err != nil {
			return nil, err
		}
		c.Attributes[key] = value
		prev = key
	}
	if len(s) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: credential signature of %d bytes, want %d", ErrMalformed, len(s), ed25519.SignatureSize)
	}
	c.IssuedAt = time.Unix(int64(issued), 0).UTC()
	c.ExpiresAt = time.Unix(int64(expires), 0).UTC()
	c.raw = append([]byte(nil), b...)
	return c, nil
}

// ParseCredentialFile reads a credential in its PEM file form.
func ParseCredentialFile(data []byte) (*Credential, error) {
	der, err := unarmor(pemCredential, data)
	if err != nil {
		return nil, fmt.Errorf("credential file: %w", err)
	}
	c, err := ParseCredential(der)
	if err != nil {
		return nil, fmt.Errorf("credential file: %w", err)
	}
	return c, nil
}

// Marshal returns the binary encoding (a copy).
func (c *Credential) Marshal() []byte { return append([]byte(nil), c.raw...) }

// MarshalFile returns the PEM file form.
func (c *Credential) MarshalFile() []byte { return armor(pemCredential, c.raw) }

// signed returns the signed message and the signature.
func (c *Credential) signed() (message, sig []byte) {
	body := c.raw[:len(c.raw)-ed25519.SignatureSize]
	return signedMessage(credentialContext, body), c.raw[len(body):]
}

// CheckAttributes checks attributes as IssueCredential does: at most
// MaxAttributes, keys of 1 to 64 bytes of [A-Za-z0-9_.-], values of at most
// 255 bytes of UTF-8 without control characters (ErrMalformed).
func CheckAttributes(attrs map[string]string) error { return checkAttributes(attrs) }

// checkAttributes checks every attribute of a map.
func checkAttributes(attrs map[string]string) error {
	if len(attrs) > MaxAttributes {
		return fmt.Errorf("%w: %d attributes, at most %d", ErrMalformed, len(attrs), MaxAttributes)
	}
	for k, v := range attrs {
		if err := checkAttribute(k, v); err != nil {
			return err
		}
	}
	return nil
}

// checkAttribute checks one attribute: the key is 1..64 bytes of
// [A-Za-z0-9_.-]; the value is 0..255 bytes of UTF-8 without control
// characters (C0, C1) or bidirectional controls: attributes become tags
// and log text, where such characters could disguise what is shown.
func checkAttribute(key, value string) error {
	if len(key) == 0 || len(key) > MaxAttributeKey {
		return fmt.Errorf("%w: attribute key %q: want 1 to %d bytes", ErrMalformed, key, MaxAttributeKey)
	}
	for _, r := range key {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("%w: attribute key %q: only letters, digits, '_', '.' and '-'", ErrMalformed, key)
		}
	}
	if len(value) > MaxAttributeValue || !utf8.ValidString(value) {
		return fmt.Errorf("%w: attribute %s: value must be UTF-8 of at most %d bytes", ErrMalformed, key, MaxAttributeValue)
	}
	for _, r := range value {
		if refusedInValue(r) {
			return fmt.Errorf("%w: attribute %s: value has a control character %U", ErrMalformed, key, r)
		}
	}
	return nil
}

// refusedInValue reports whether an attribute value may not hold r: the
// C0 and C1 controls with DEL (Unicode's Cc, unicode.IsControl) and the
// bidirectional controls (Bidi_Control), spelled out as docs/PROTOCOL.md,
// section 4, lists them so that a newer Unicode table cannot change them.
func refusedInValue(r rune) bool {
	switch {
	case r <= 0x1f, 0x7f <= r && r <= 0x9f: // C0, DEL, C1
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // ALM, LRM, RLM
		return true
	case 0x202a <= r && r <= 0x202e: // LRE, RLE, PDF, LRO, RLO
		return true
	case 0x2066 <= r && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}
