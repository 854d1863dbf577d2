package secure

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Verifier decides whom to trust: it holds the trusted authorities and the
// newest revocation list of each, verifies credentials, and answers the
// per-message check (Authorize) cheaply. It is safe for concurrent use.
type Verifier struct {
	authorities map[Identifier]ed25519.PublicKey

	mu          sync.Mutex // serializes UpdateRevocations
	revocations atomic.Pointer[revocationState]
	verified    *verifiedCache // handshake payloads that verified (verified.go)
}

// revocationState is an immutable snapshot of the current lists.
type revocationState struct {
	generation uint64 // grows with every accepted change
	lists      map[Identifier]*RevocationList
}

// NewVerifier returns a Verifier that trusts credentials issued by the
// given authorities.
func NewVerifier(authorities ...*Identity) (*Verifier, error) {
	if len(authorities) == 0 {
		return nil, errors.New("secure: at least one trusted authority is required")
	}
	v := &Verifier{
		authorities: make(map[Identifier]ed25519.PublicKey, len(authorities)),
		verified:    newVerifiedCache(maxVerified),
	}
	for _, a := range authorities {
		v.authorities[a.Identifier()] = slices.Clone(a.Key())
	}
	v.revocations.Store(&revocationState{lists: map[Identifier]*RevocationList{}})
	return v, nil
}

// Trusts reports whether id is one of the trusted authorities.
func (v *Verifier) Trusts(id Identifier) bool {
	_, ok := v.authorities[id]
	return ok
}

// UpdateRevocations verifies a revocation list and makes it current for its
// issuer. It returns an error wrapping ErrUnknownIssuer, ErrBadSignature or
// ErrStaleRevocationList (a sequence number not above the current one; the
// same list again is not an error). Channels see the change at their next
// Authorize.
func (v *Verifier) UpdateRevocations(l *RevocationList) error {
	key, ok := v.authorities[l.Issuer]
	if !ok {
		return fmt.Errorf("revocation list from %s: %w", l.Issuer.Short(), ErrUnknownIssuer)
	}
	msg, sig := l.signed()
	if !ed25519.Verify(key, msg, sig) {
		return fmt.Errorf("revocation list from %s: %w", l.Issuer.Short(), ErrBadSignature)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.revocations.Load()
	if old, ok := cur.lists[l.Issuer]; ok {
		if l.Sequence == old.Sequence && bytes.Equal(l.raw, old.raw) {
			return nil
		}
		if l.Sequence <= old.Sequence {
			return fmt.Errorf("revocation list sequence %d, current is %d: %w", l.Sequence, old.Sequence, ErrStaleRevocationList)
		}
	}
	next := &revocationState{generation: cur.generation + 1, lists: make(map[Identifier]*RevocationList, len(cur.lists)+1)}
	for k, old := range cur.lists {
		next.lists[k] = old
	}
	next.lists[l.Issuer] = l
	v.revocations.Store(next)
	return nil
}

// RevocationSequence returns the sequence number of the current list of
// issuer, or 0 if there is none.
func (v *Verifier) RevocationSequence(issuer Identifier) uint64 {
	if l, ok := v.revocations.Load().lists[issuer]; ok {
		return l.Sequence
	}
	return 0
}

// VerifyCredential checks that c was issued by a trusted authority
// (ErrUnknownIssuer), that its signature verifies (ErrBadSignature), that it
// names subject (ErrWrongSubject), that it is valid at now (ErrNotYetValid,
// ErrExpired) and that the current list does not revoke it (ErrRevoked).
// The errors are wrapped; test with errors.Is.
func (v *Verifier) VerifyCredential(c *Credential, subject Identifier, now time.Time) error {
	return v.verifyCredential(v.revocations.Load(), c, subject, now, true)
}

// verifyCredential is VerifyCredential against st, with the signature check
// only if checkSignature.
func (v *Verifier) verifyCredential(st *revocationState, c *Credential, subject Identifier, now time.Time, checkSignature bool) error {
	key, ok := v.authorities[c.Issuer]
	if !ok {
		return fmt.Errorf("credential issued by %s: %w", c.Issuer.Short(), ErrUnknownIssuer)
	}
	if checkSignature {
		msg, sig := c.signed()
		if !ed25519.Verify(key, msg, sig) {
			return fmt.Errorf("credential: %w", ErrBadSignature)
		}
	}
	if !c.Subject.Equal(subject) {
		return fmt.Errorf("credential issued to %s, presented by %s: %w", c.Subject.Short(), subject.Short(), ErrWrongSubject)
	}
	return v.checkCurrent(st, c, now, true)
}

// CheckCurrent checks the parts of a credential, verified before (by
// VerifyCredential or in a handshake), that change while it is in use: it
// has not expired at now (ErrExpired) and the current list of its issuer
// does not revoke it (ErrRevoked). It does not check the signature again,
// so it costs a map lookup and two binary searches. It is safe for
// concurrent use.
func (v *Verifier) CheckCurrent(c *Credential, now time.Time) error {
	return v.checkCurrent(v.revocations.Load(), c, now, false)
}

// checkCurrent checks the parts of a verified credential that change with
// time and revocations.
func (v *Verifier) checkCurrent(st *revocationState, c *Credential, now time.Time, checkStart bool) error {
	if checkStart {
		if err := checkPeriod("credential", c.IssuedAt, c.ExpiresAt, now); err != nil {
			return err
		}
	} else if !now.Before(c.ExpiresAt) {
		return fmt.Errorf("credential expired at %s: %w", c.ExpiresAt.Format(time.RFC3339), ErrExpired)
	}
	if l, ok := st.lists[c.Issuer]; ok && l.Revokes(c) {
		return fmt.Errorf("credential of %s (revocation list %d): %w", c.Subject.Short(), l.Sequence, ErrRevoked)
	}
	return nil
}

// Peer is the verified other end of a channel: its identity, the attestation
// of the purpose key it proved in the handshake, and its credential. A Peer
// is used by one goroutine at a time (the channel's reader).
type Peer struct {
	Identifier  Identifier
	Attestation *Attestation
	Credential  *Credential

	// The cache of Authorize: valid while the Verifier's revocation state
	// is the one checked (a snapshot belongs to one Verifier and one
	// generation) and the clock is before validUntil.
	checkedState *revocationState
	validUntil   time.Time
}

// Authorize is the per-message check: the peer's credential is still valid
// at now, not revoked by the current list, and its purpose-key attestation
// has not expired. The signature checks were done once, in the handshake;
// the result is cached until a revocation list changes or the earlier
// expiry passes, so a message costs an atomic load and a time comparison.
func (v *Verifier) Authorize(p *Peer, now time.Time) error {
	st := v.revocations.Load()
	if st == p.checkedState && now.Before(p.validUntil) {
		return nil
	}
	if err := v.checkCurrent(st, p.Credential, now, false); err != nil {
		return err
	}
	if !now.Before(p.Attestation.Expires) {
		return fmt.Errorf("purpose-key attestation expired at %s: %w", p.Attestation.Expires.Format(time.RFC3339), ErrExpired)
	}
	p.checkedState = st
	p.validUntil = p.Credential.ExpiresAt
	if p.Attestation.Expires.Before(p.validUntil) {
		p.validUntil = p.Attestation.Expires
	}
	return nil
}

// verifiedBefore reports whether the attestation att (its encoding) and the
// credential c passed verifyPeer under the current revocation state and
// neither has expired at now since; if so, their signatures need no check
// (verified.go). c need not be verified.
func (v *Verifier) verifiedBefore(att []byte, c *Credential, now time.Time) bool {
	key, ok := v.authorities[c.Issuer]
	if !ok {
		return false
	}
	return v.verified.contains(verifiedDigest(key, att, c), v.revocations.Load().generation, now)
}

// verifyPeer checks everything a handshake payload claims: the attestation
// is valid at now and attests the Noise static key the peer proved
// (remoteStatic), and the credential is valid for the attesting identity.
// The attestation's signature has been checked (ParseAttestation) or, like
// the credential's, was checked before (verifiedBefore, and then
// signaturesVerified: the credential's is not checked again). A peer that
// passes is remembered for verifiedBefore.
func (v *Verifier) verifyPeer(a *Attestation, c *Credential, remoteStatic []byte, now time.Time, signaturesVerified bool) (*Peer, error) {
	st := v.revocations.Load()
	if !bytes.Equal(a.PurposeKey[:], remoteStatic) {
		return nil, fmt.Errorf("purpose key is not the attested one: %w", ErrWrongSubject)
	}
	if err := a.Verify(now); err != nil {
		return nil, err
	}
	id := a.Identifier()
	if err := v.verifyCredential(st, c, id, now, !signaturesVerified); err != nil {
		return nil, err
	}
	p := &Peer{Identifier: id, Attestation: a, Credential: c}
	if err := v.Authorize(p, now); err != nil {
		return nil, err
	}
	if !signaturesVerified {
		// p.validUntil is the earlier expiry of the two (Authorize).
		v.verified.add(verifiedDigest(v.authorities[c.Issuer], a.raw[:], c), st.generation, p.validUntil)
	}
	return p, nil
}
