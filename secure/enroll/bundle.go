package enroll

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// An enrollment bundle is what a device needs, besides the authority's
// identity file and a token, to enroll: the authority's signed prekey (an
// X25519 key signed by its identity key, with a validity period) and zero
// or more one-time prekeys, each usable by one enrollment.
//
// docs/PROTOCOL.md, "Enrollment bundle" (all integers big-endian):
//
//	 0      1                        33                       65        73        81      83
//	+------+------------------------+------------------------+---------+---------+-------+----------------+---------+
//	| ver  | identity key (32)      | signed prekey (32)     | created | expires | n u16 | n × [32] OTPK  | sig(64) |
//	+------+------------------------+------------------------+---------+---------+-------+----------------+---------+
//
// The one-time prekeys are strictly ascending. The signature is by the
// identity key over bundleContext and every byte before it.
const (
	// MaxOneTimePrekeys bounds the one-time prekeys of one bundle.
	MaxOneTimePrekeys = 1024
	// MaxBundleSize is the size of a bundle with MaxOneTimePrekeys.
	MaxBundleSize = bundleHeaderSize + MaxOneTimePrekeys*32 + ed25519.SignatureSize

	bundleVersion    = 1
	bundleHeaderSize = 1 + 32 + 32 + 8 + 8 + 2
	bundleContext    = "telegraf-ockam enrollment bundle v1\x00"
)

// Bundle is a parsed enrollment bundle. A parsed Bundle has had its
// signature checked against its own identity key; Verify checks that the
// key is the expected authority's and that the bundle is valid now.
type Bundle struct {
	IdentityKey    ed25519.PublicKey // the authority's identity key, the signer
	SignedPrekey   [32]byte
	OneTimePrekeys [][32]byte // strictly ascending; callers must not modify it
	Created        time.Time
	Expires        time.Time

	raw []byte
}

// NewBundle signs a bundle for the authority behind signer: its signed
// prekey, valid over [created, expires), and one-time prekeys (any order,
// no repeats, at most MaxOneTimePrekeys).
func NewBundle(authority vault.Signer, signedPrekey [32]byte, oneTime [][32]byte, created, expires time.Time) (*Bundle, error) {
	if len(oneTime) > MaxOneTimePrekeys {
		return nil, fmt.Errorf("secure: %d one-time prekeys, at most %d", len(oneTime), MaxOneTimePrekeys)
	}
	b := &Bundle{
		IdentityKey:    authority.Public(),
		SignedPrekey:   signedPrekey,
		OneTimePrekeys: slices.SortedFunc(slices.Values(oneTime), comparePrekeys),
		Created:        created.Truncate(time.Second).UTC(),
		Expires:        expires.Truncate(time.Second).UTC(),
	}
	if !b.Expires.After(b.Created) {
		return nil, fmt.Errorf("secure: bundle expires at %s, not after its creation", b.Expires.Format(time.RFC3339))
	}
	if len(slices.CompactFunc(slices.Clone(b.OneTimePrekeys), func(x, y [32]byte) bool { return x == y })) != len(oneTime) {
		return nil, fmt.Errorf("secure: a one-time prekey is repeated")
	}
	body := append(make([]byte, 0, bundleHeaderSize+32*len(oneTime)+ed25519.SignatureSize), bundleVersion)
	body = append(body, b.IdentityKey...)
	body = append(body, signedPrekey[:]...)
	body = binary.BigEndian.AppendUint64(body, secure.UnixSeconds(b.Created))
	body = binary.BigEndian.AppendUint64(body, secure.UnixSeconds(b.Expires))
	body = binary.BigEndian.AppendUint16(body, uint16(len(oneTime)))
	for _, k := range b.OneTimePrekeys {
		body = append(body, k[:]...)
	}
	sig, err := secure.SignBody(authority, bundleContext, body, "bundle")
	if err != nil {
		return nil, err
	}
	b.raw = append(body, sig...)
	return b, nil
}

// ParseBundle decodes a bundle strictly and checks its signature with the
// identity key it names (ErrMalformed, ErrBadSignature). A forged bundle
// fails here; a genuine bundle of another authority fails in Verify.
func ParseBundle(data []byte) (*Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("%w: bundle of %d bytes is larger than %d", secure.ErrMalformed, len(data), MaxBundleSize)
	}
	s := cryptobyte.String(data)
	b := &Bundle{}
	var version uint8
	var key []byte
	var created, expires uint64
	var n uint16
	if !s.ReadUint8(&version) || version != bundleVersion {
		return nil, fmt.Errorf("%w: bundle version %d, want %d", secure.ErrMalformed, version, bundleVersion)
	}
	if !s.ReadBytes(&key, ed25519.PublicKeySize) || !s.CopyBytes(b.SignedPrekey[:]) ||
		!s.ReadUint64(&created) || !s.ReadUint64(&expires) || !s.ReadUint16(&n) {
		return nil, fmt.Errorf("%w: bundle truncated", secure.ErrMalformed)
	}
	if created > secure.MaxUnixSeconds || expires > secure.MaxUnixSeconds || expires <= created {
		return nil, fmt.Errorf("%w: bundle validity [%d, %d]", secure.ErrMalformed, created, expires)
	}
	if n > MaxOneTimePrekeys {
		return nil, fmt.Errorf("%w: bundle of %d one-time prekeys, at most %d", secure.ErrMalformed, n, MaxOneTimePrekeys)
	}
	// The exact length is known from n: check it before allocating.
	if len(s) != int(n)*32+ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: bundle of %d one-time prekeys has %d bytes after its header", secure.ErrMalformed, n, len(s))
	}
	b.OneTimePrekeys = make([][32]byte, n)
	for i := range b.OneTimePrekeys {
		s.CopyBytes(b.OneTimePrekeys[i][:])
		if i > 0 && comparePrekeys(b.OneTimePrekeys[i-1], b.OneTimePrekeys[i]) >= 0 {
			return nil, fmt.Errorf("%w: bundle one-time prekeys not strictly ascending", secure.ErrMalformed)
		}
	}
	b.IdentityKey = ed25519.PublicKey(slices.Clone(key))
	if err := secure.CheckIdentityKey(b.IdentityKey); err != nil {
		return nil, err
	}
	body := data[:len(data)-ed25519.SignatureSize]
	if !ed25519.Verify(b.IdentityKey, secure.SignedMessage(bundleContext, body), data[len(body):]) {
		return nil, fmt.Errorf("enrollment bundle: %w", secure.ErrBadSignature)
	}
	b.Created = time.Unix(int64(created), 0).UTC()
	b.Expires = time.Unix(int64(expires), 0).UTC()
	b.raw = slices.Clone(data)
	return b, nil
}

// ParseBundleFile reads a bundle in its PEM file form.
func ParseBundleFile(data []byte) (*Bundle, error) {
	der, err := secure.Unarmor(pemBundle, data)
	if err != nil {
		return nil, fmt.Errorf("bundle file: %w", err)
	}
	b, err := ParseBundle(der)
	if err != nil {
		return nil, fmt.Errorf("bundle file: %w", err)
	}
	return b, nil
}

// Marshal returns the binary encoding (a copy).
func (b *Bundle) Marshal() []byte { return slices.Clone(b.raw) }

// MarshalFile returns the PEM file form.
func (b *Bundle) MarshalFile() []byte { return secure.Armor(pemBundle, b.raw) }

// Authority returns the identifier of the authority that signed the bundle.
func (b *Bundle) Authority() secure.Identifier { return secure.IdentifierOf(b.IdentityKey) }

// Verify checks that the bundle was signed by authority (ErrUnknownIssuer)
// and is valid at now (ErrNotYetValid, ErrExpired).
func (b *Bundle) Verify(authority *secure.Identity, now time.Time) error {
	if !b.IdentityKey.Equal(authority.Key()) {
		return fmt.Errorf("enrollment bundle signed by %s, not by the authority %s: %w",
			b.Authority().Short(), authority.Identifier().Short(), secure.ErrUnknownIssuer)
	}
	return secure.CheckValidity("enrollment bundle", b.Created, b.Expires, now)
}

func comparePrekeys(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) }
