package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"

	"filippo.io/edwards25519"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// An attestation binds a Noise static (purpose) key to an identity: the
// identity key signs the purpose key with a validity period, so the purpose
// key can be rotated without touching credentials, which name the identity.
//
// docs/PROTOCOL.md, "Purpose-key attestation":
//
//	 0       1                     33      34                    66        74        82                    146
//	+-------+---------------------+-------+---------------------+---------+---------+---------------------+
//	| ver=1 | identity key (32)   | p=1   | purpose key (32)    | created | expires | Ed25519 sig (64)    |
//	+-------+---------------------+-------+---------------------+---------+---------+---------------------+
//
// created and expires are big-endian uint64 Unix seconds. The signature is
// over attestationContext followed by bytes 0..81.
const (
	// AttestationSize is the exact size of an encoded attestation.
	AttestationSize = 146

	attestationVersion      = 1
	purposeSecureChannel    = 1 // X25519 static key of the Noise channel
	attestationSignedLength = AttestationSize - ed25519.SignatureSize
	attestationContext      = "telegraf-ockam attestation v1\x00"
)

// DefaultAttestationTTL is how long a new purpose-key attestation is valid.
const DefaultAttestationTTL = 90 * 24 * time.Hour

// ClockSkew is how far in the future a creation or issue time may be and
// still be accepted, to allow for clocks that are slightly off.
const ClockSkew = 60 * time.Second

// Attestation is a verified-by-construction or parsed purpose-key
// attestation. A parsed Attestation has had its signature checked against
// its own identity key; its validity period is checked by Verify.
type Attestation struct {
	IdentityKey ed25519.PublicKey // the signer
	PurposeKey  [32]byte          // the X25519 Noise static public key
	Created     time.Time
	Expires     time.Time

	raw [AttestationSize]byte
}

// Attest signs purposeKey with the identity key behind signer, valid from
// now for ttl.
func Attest(signer vault.Signer, purposeKey [32]byte, now time.Time, ttl time.Duration) (*Attestation, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("secure: attestation TTL must be positive, got %v", ttl)
	}
	a := &Attestation{
		IdentityKey: signer.Public(),
		PurposeKey:  purposeKey,
		Created:     now.Truncate(time.Second).UTC(),
		Expires:     now.Add(ttl).Truncate(time.Second).UTC(),
	}
	if !a.Expires.After(a.Created) {
		// ParseAttestation would refuse it (expires <= created).
		return nil, fmt.Errorf("secure: attestation TTL %v is shorter than a second", ttl)
	}
	b := a.raw[:0]
	b = append(b, attestationVersion)
	b = append(b, a.IdentityKey...)
	b = append(b, purposeSecureChannel)
	b = append(b, purposeKey[:]...)
	b = binary.BigEndian.AppendUint64(b, unixSeconds(a.Created))
	b = binary.BigEndian.AppendUint64(b, unixSeconds(a.Expires))
	sig, err := SignBody(signer, attestationContext, b, "attestation")
	if err != nil {
		return nil, err
	}
	copy(a.raw[attestationSignedLength:], sig)
	return a, nil
}

// ParseAttestation decodes an attestation and checks its signature. It does
// not check the validity period: call Verify.
func ParseAttestation(b []byte) (*Attestation, error) {
	return parseAttestation(b, false)
}

// parseAttestation decodes an attestation strictly. Unless verifiedBefore
// (the Verifier's cache holds these exact bytes as verified), it checks the
// identity key and the signature, in the order of ParseAttestation.
func parseAttestation(b []byte, verifiedBefore bool) (*Attestation, error) {
	if len(b) != AttestationSize {
		return nil, fmt.Errorf("%w: attestation of %d bytes, want %d", ErrMalformed, len(b), AttestationSize)
	}
	if b[0] != attestationVersion {
		return nil, fmt.Errorf("%w: attestation version %d, want %d", ErrMalformed, b[0], attestationVersion)
	}
	if b[33] != purposeSecureChannel {
		return nil, fmt.Errorf("%w: attestation purpose %d, want %d", ErrMalformed, b[33], purposeSecureChannel)
	}
	a := &Attestation{}
	copy(a.raw[:], b)
	a.IdentityKey = ed25519.PublicKey(a.raw[1:33])
	if !verifiedBefore {
		if err := checkIdentityKey(a.IdentityKey); err != nil {
			return nil, err
		}
	}
	copy(a.PurposeKey[:], a.raw[34:66])
	created := binary.BigEndian.Uint64(a.raw[66:74])
	expires := binary.BigEndian.Uint64(a.raw[74:82])
	if created > maxUnix || expires > maxUnix || expires <= created {
		return nil, fmt.Errorf("%w: attestation validity [%d, %d]", ErrMalformed, created, expires)
	}
	if !verifiedBefore && !ed25519.Verify(a.IdentityKey, signedMessage(attestationContext, a.raw[:attestationSignedLength]), a.raw[attestationSignedLength:]) {
		return nil, fmt.Errorf("attestation: %w", ErrBadSignature)
	}
	a.Created = time.Unix(int64(created), 0).UTC()
	a.Expires = time.Unix(int64(expires), 0).UTC()
	return a, nil
}

// Marshal returns the 146-byte encoding.
func (a *Attestation) Marshal() []byte {
	return append([]byte(nil), a.raw[:]...)
}

// Identifier returns the Identifier of the attesting identity.
func (a *Attestation) Identifier() Identifier {
	return IdentifierOf(a.IdentityKey)
}

// Verify checks that the attestation is valid at now: created no later than
// now+ClockSkew (ErrNotYetValid) and not expired (ErrExpired).
func (a *Attestation) Verify(now time.Time) error {
	return checkPeriod("purpose-key attestation", a.Created, a.Expires, now)
}

// checkPeriod checks a validity period [from, until) at now, allowing
// ClockSkew at the start only: expiry fails closed.
func checkPeriod(what string, from, until, now time.Time) error {
	if from.After(now.Add(ClockSkew)) {
		return fmt.Errorf("%s valid from %s: %w", what, from.Format(time.RFC3339), ErrNotYetValid)
	}
	if !now.Before(until) {
		return fmt.Errorf("%s expired at %s: %w", what, until.Format(time.RFC3339), ErrExpired)
	}
	return nil
}

// maxUnix is the largest time in Unix seconds the encodings accept, so that
// conversion to int64 and time.Time arithmetic cannot overflow (year 9999).
const maxUnix = 253402300799

// unixSeconds returns t as Unix seconds, clamped to [0, maxUnix].
func unixSeconds(t time.Time) uint64 {
	s := t.Unix()
	switch {
	case s < 0:
		return 0
	case s > maxUnix:
		return maxUnix
	}
	return uint64(s)
}

// signedMessage returns context followed by body: what a signature covers.
func signedMessage(context string, body []byte) []byte {
	m := make([]byte, 0, len(context)+len(body))
	return append(append(m, context...), body...)
}

// checkIdentityKey refuses an Ed25519 public key that is not a point, is
// not the canonical encoding of its point, or is of small order
// (docs/PROTOCOL.md, section 1). Anyone can forge signatures that verify
// under a small-order key (crypto/ed25519 accepts the signature 01 00…00
// 00…00 under the key 01 00…00 for every message), so such an "identity"
// proves nothing. edwards25519's SetBytes, like crypto/ed25519.Verify,
// accepts the non-canonical encodings (y ≥ p, or x = 0 with the sign bit
// set): a second encoding of one key would be a second identifier for it.
func checkIdentityKey(key ed25519.PublicKey) error {
	p, err := new(edwards25519.Point).SetBytes(key)
	if err != nil {
		return fmt.Errorf("%w: identity key is not a valid Ed25519 point", ErrMalformed)
	}
	if !bytes.Equal(p.Bytes(), key) {
		return fmt.Errorf("%w: identity key is not canonically encoded", ErrMalformed)
	}
	if p.MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: identity key is of small order", ErrMalformed)
	}
	return nil
}

// MaxUnixSeconds is the largest time, in Unix seconds, that the encodings
// of this module accept (the last second of year 9999).
const MaxUnixSeconds = maxUnix

// UnixSeconds returns t as Unix seconds, clamped to [0, MaxUnixSeconds]: the
// form every timestamp of PROTOCOL.md takes.
func UnixSeconds(t time.Time) uint64 { return unixSeconds(t) }

// SignedMessage returns context followed by body: what a signature of
// docs/PROTOCOL.md §2 covers. The context ends in a 0x00 byte.
func SignedMessage(context string, body []byte) []byte { return signedMessage(context, body) }

// SignBody signs SignedMessage(context, body) with signer and returns the
// 64-byte Ed25519 signature; what names the signed object in the error.
// A signer that returns anything but 64 bytes is an error, not a signature.
func SignBody(signer vault.Signer, context string, body []byte, what string) ([]byte, error) {
	sig, err := signer.Sign(signedMessage(context, body))
	if err != nil {
		return nil, fmt.Errorf("secure: sign %s: %w", what, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("secure: signer returned a %d-byte signature", len(sig))
	}
	return sig, nil
}

// CheckIdentityKey refuses an Ed25519 public key that is not a canonical
// point, or is of small order (ErrMalformed): anyone can forge signatures
// that verify under a small-order key (docs/PROTOCOL.md §3).
func CheckIdentityKey(key ed25519.PublicKey) error { return checkIdentityKey(key) }

// CheckValidity checks the validity period [from, until) of what at now:
// ErrNotYetValid if from is more than ClockSkew ahead, ErrExpired from until
// on (expiry gets no skew: it fails closed).
func CheckValidity(what string, from, until, now time.Time) error {
	return checkPeriod(what, from, until, now)
}
