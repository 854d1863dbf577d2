package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// A revocation list is an authority's signed list of revoked subjects and
// credentials. Its sequence number only grows: a Verifier never replaces a
// list with an older one, so an attacker cannot put an old list back. Its
// signed next update says when a newer list is due (a CRL's nextUpdate):
// after it the list is stale, and a party that still holds it knows that
// revocations may be missing.
//
// docs/PROTOCOL.md, "Revocation list" (all integers big-endian):
//
//	u8      version = 2
//	[32]    issuer identifier
//	u64     sequence number (≥ 1)
//	u64     issued at (Unix seconds)
//	u64     next update (Unix seconds, > issued at)
//	u32     n, then n × [32] revoked subject identifiers, strictly ascending
//	u32     m, then m × [16] revoked credential ids, strictly ascending
//	[64]    Ed25519 signature by the issuer's identity key over
//	        revocationContext followed by every byte above
const (
	// MaxRevocationEntries bounds the subjects plus credential ids of a list.
	MaxRevocationEntries = 1 << 20

	// DefaultRevocationListValidity is how long after it is issued a list
	// is due to be replaced, unless its issuer says otherwise.
	DefaultRevocationListValidity = 7 * 24 * time.Hour

	revocationVersion     = 2
	revocationContext     = "telegraf-ockam revocation v2\x00"
	revocationHeaderSize  = 1 + IdentifierSize + 8 + 8 + 8
	maxRevocationListSize = revocationHeaderSize + 4 + 4 + MaxRevocationEntries*IdentifierSize + ed25519.SignatureSize
)

// RevocationList is a parsed revocation list. Parsing checks its form;
// Verifier.UpdateRevocations checks its issuer and signature.
type RevocationList struct {
	Issuer   Identifier
	Sequence uint64
	IssuedAt time.Time
	// NextUpdate is when a newer list is due; from then on this one is
	// stale.
	NextUpdate time.Time

	subjects    []Identifier   // sorted
	credentials []CredentialID // sorted
	raw         []byte
}

// NewRevocationList signs a list for the authority behind signer, due to
// be replaced at nextUpdate (both times are truncated to the second). The
// subjects and credentials may be in any order and may repeat.
func NewRevocationList(authority vault.Signer, sequence uint64, issuedAt, nextUpdate time.Time,
	subjects []Identifier, credentials []CredentialID) (*RevocationList, error) {
	if sequence == 0 {
		return nil, fmt.Errorf("secure: revocation list sequence must be at least 1")
	}
	l := &RevocationList{
		Issuer:      IdentifierOf(authority.Public()),
		Sequence:    sequence,
		IssuedAt:    issuedAt.Truncate(time.Second).UTC(),
		NextUpdate:  nextUpdate.Truncate(time.Second).UTC(),
		subjects:    sortedUnique(subjects, func(a, b Identifier) int { return bytes.Compare(a[:], b[:]) }),
		credentials: sortedUnique(credentials, func(a, b CredentialID) int { return bytes.Compare(a[:], b[:]) }),
	}
	if !l.NextUpdate.After(l.IssuedAt) || unixSeconds(l.NextUpdate) > maxUnix {
		return nil, fmt.Errorf("secure: revocation list next update %s is not after its issue time %s",
			l.NextUpdate.Format(time.RFC3339), l.IssuedAt.Format(time.RFC3339))
	}
	if len(l.subjects)+len(l.credentials) > MaxRevocationEntries {
		return nil, fmt.Errorf("secure: revocation list of more than %d entries", MaxRevocationEntries)
	}
	b := append([]byte(nil), revocationVersion)
	b = append(b, l.Issuer[:]...)
	b = binary.BigEndian.AppendUint64(b, sequence)
	b = binary.BigEndian.AppendUint64(b, unixSeconds(l.IssuedAt))
	b = binary.BigEndian.AppendUint64(b, unixSeconds(l.NextUpdate))
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.subjects)))
	for _, s := range l.subjects {
		b = append(b, s[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.credentials)))
	for _, c := range l.credentials {
		b = append(b, c[:]...)
	}
	sig, err := SignBody(authority, revocationContext, b, "revocation list")
	if err != nil {
		return nil, err
	}
	l.raw = append(b, sig...)
	return l, nil
}

// ParseRevocationList decodes a list's binary encoding, strictly.
func ParseRevocationList(b []byte) (*RevocationList, error) {
	if len(b) > maxRevocationListSize {
		return nil, fmt.Errorf("%w: revocation list of %d bytes is larger than %d", ErrMalformed, len(b), maxRevocationListSize)
	}
	s := cryptobyte.String(b)
	l := &RevocationList{}
	var version uint8
	var issued, next uint64
	if !s.ReadUint8(&version) || version != revocationVersion {
		return nil, fmt.Errorf("%w: revocation list version %d, want %d", ErrMalformed, version, revocationVersion)
	}
	if !s.CopyBytes(l.Issuer[:]) || !s.ReadUint64(&l.Sequence) || !s.ReadUint64(&issued) || !s.ReadUint64(&next) {
		return nil, fmt.Errorf("%w: revocation list truncated", ErrMalformed)
	}
	if l.Sequence == 0 || issued > maxUnix || next > maxUnix || next <= issued {
		return nil, fmt.Errorf("%w: revocation list sequence %d issued at %d, next update at %d",
			ErrMalformed, l.Sequence, issued, next)
	}
	subjects, err := readSortedEntries(&s, IdentifierSize, "subject")
	if err != nil {
		return nil, err
	}
	credentials, err := readSortedEntries(&s, CredentialIDSize, "credential id")
	if err != nil {
		return nil, err
	}
	if (len(subjects)/IdentifierSize)+(len(credentials)/CredentialIDSize) > MaxRevocationEntries {
		return nil, fmt.Errorf("%w: revocation list of more than %d entries", ErrMalformed, MaxRevocationEntries)
	}
	l.subjects = make([]Identifier, len(subjects)/IdentifierSize)
	for i := range l.subjects {
		copy(l.subjects[i][:], subjects[i*IdentifierSize:])
	}
	l.credentials = make([]CredentialID, len(credentials)/CredentialIDSize)
	for i := range l.credentials {
		copy(l.credentials[i][:], credentials[i*CredentialIDSize:])
	}
	if len(s) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: revocation list signature of %d bytes, want %d", ErrMalformed, len(s), ed25519.SignatureSize)
	}
	l.IssuedAt = time.Unix(int64(issued), 0).UTC()
	l.NextUpdate = time.Unix(int64(next), 0).UTC()
	l.raw = append([]byte(nil), b...)
	return l, nil
}

// readSortedEntries reads a u32 count and that many entries of size bytes,
// which must be strictly ascending, and returns them as one block. The
// count is checked against the bytes left before anything is allocated.
func readSortedEntries(s *cryptobyte.String, size int, what string) ([]byte, error) {
	var n uint32
	if !s.ReadUint32(&n) {
		return nil, fmt.Errorf("%w: revocation list truncated before the %s count", ErrMalformed, what)
	}
	if uint64(n)*uint64(size) > uint64(len(*s)) {
		return nil, fmt.Errorf("%w: revocation list claims %d %ss in %d bytes", ErrMalformed, n, what, len(*s))
	}
	var block []byte
	s.ReadBytes(&block, int(n)*size)
	for i := size; i < len(block); i += size {
		if bytes.Compare(block[i-size:i], block[i:i+size]) >= 0 {
			return nil, fmt.Errorf("%w: revocation list %ss not strictly ascending", ErrMalformed, what)
		}
	}
	return block, nil
}

// ParseRevocationListFile reads a revocation list in its PEM file form.
func ParseRevocationListFile(data []byte) (*RevocationList, error) {
	der, err := unarmor(pemRevocationList, data)
	if err != nil {
		return nil, fmt.Errorf("revocation list file: %w", err)
	}
	l, err := ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("revocation list file: %w", err)
	}
	return l, nil
}

// Marshal returns the binary encoding (a copy).
func (l *RevocationList) Marshal() []byte { return append([]byte(nil), l.raw...) }

// MarshalFile returns the PEM file form.
func (l *RevocationList) MarshalFile() []byte { return armor(pemRevocationList, l.raw) }

// Subjects returns the revoked subjects, sorted (a copy).
func (l *RevocationList) Subjects() []Identifier { return slices.Clone(l.subjects) }

// Credentials returns the revoked credential ids, sorted (a copy).
func (l *RevocationList) Credentials() []CredentialID { return slices.Clone(l.credentials) }

// Revokes reports whether the list revokes the credential, by its subject or
// by its id. It does not compare issuers: the caller picks the issuer's list.
func (l *RevocationList) Revokes(c *Credential) bool {
	_, bySubject := slices.BinarySearchFunc(l.subjects, c.Subject, func(a, b Identifier) int { return bytes.Compare(a[:], b[:]) })
	_, byID := slices.BinarySearchFunc(l.credentials, c.ID, func(a, b CredentialID) int { return bytes.Compare(a[:], b[:]) })
	return bySubject || byID
}

// signed returns the signed message and the signature.
func (l *RevocationList) signed() (message, sig []byte) {
	body := l.raw[:len(l.raw)-ed25519.SignatureSize]
	return signedMessage(revocationContext, body), l.raw[len(body):]
}

// sortedUnique returns a sorted copy of s without repeats.
func sortedUnique[E any](s []E, cmp func(a, b E) int) []E {
	out := slices.Clone(s)
	slices.SortFunc(out, cmp)
	return slices.CompactFunc(out, func(a, b E) bool { return cmp(a, b) == 0 })
}
