package enroll

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The authority's side of enrollment (docs/PROTOCOL.md, "Enrollment"):
// open and check a request, answer it once.

// EnrollmentKeys are the authority's prekeys, as OpenEnrollmentRequest
// needs them. Implementations are safe for concurrent use.
type EnrollmentKeys interface {
	// SignedPrekey returns the signed prekey whose public key is pub, if it
	// is valid at now; else an error wrapping ErrUnknownPrekey or
	// ErrExpired.
	SignedPrekey(pub [32]byte, now time.Time) (vault.DH, error)
	// OneTimePrekey returns the unused one-time prekey whose public key is
	// pub, if it is valid at now; else an error wrapping ErrUnknownPrekey,
	// ErrPrekeyUsed or ErrExpired. It does not mark it used: the caller
	// does, together with the token.
	OneTimePrekey(pub [32]byte, now time.Time) (vault.DH, error)
}

// EnrollmentRequest is a request the authority has opened: the device's
// verified attestation and its token. The token is not checked against any
// store yet: that is the caller's, as is marking it used.
type EnrollmentRequest struct {
	// Attestation is the device's purpose-key attestation: its signature is
	// valid, it is valid at the time given to OpenEnrollmentRequest, and it
	// attests the purpose key that took part in the key agreement.
	Attestation *secure.Attestation
	// Token is the token the device presented. It was minted by this
	// authority (its tag says so); whether it exists is for the store.
	Token Token
	// OneTimePrekey is the one-time prekey the request used, if any
	// (HasOneTimePrekey); the caller marks it used with the token.
	OneTimePrekey    [32]byte
	HasOneTimePrekey bool
	// Hash names the request; its answer carries it.
	Hash [32]byte

	answerKey *[32]byte // nil once used
}

// OpenEnrollmentRequest decrypts and checks a request to the authority
// self: the size and form (ErrMalformed), the authority (ErrWrongAuthority),
// the prekeys (see EnrollmentKeys), the AEAD (an opaque ErrDecrypt), the
// attestation (ErrMalformed, ErrBadSignature, ErrNotYetValid, ErrExpired;
// ErrWrongSubject if it attests another purpose key than the request's) and
// the token's authority tag (ErrWrongAuthority).
func OpenEnrollmentRequest(request []byte, self secure.Identifier, keys EnrollmentKeys, now time.Time) (*EnrollmentRequest, error) {
	h, header, ciphertext, err := parseRequestHeader(request)
	if err != nil {
		return nil, err
	}
	if h.authority != self {
		return nil, fmt.Errorf("enrollment request for %s, this authority is %s: %w", h.authority.Short(), self.Short(), ErrWrongAuthority)
	}
	// look up the prekeys
	spk, err := keys.SignedPrekey(h.signedPrekey, now)
	if err != nil {
		return nil, fmt.Errorf("enrollment request: signed prekey: %w", err)
	}
	var otpk vault.DH
	if h.hasOneTime {
		if otpk, err = keys.OneTimePrekey(h.oneTime, now); err != nil {
			return nil, fmt.Errorf("enrollment request: one-time prekey: %w", err)
		}
	}
	// DH1, DH2, DH3, from the authority's side
	dh, err := authoritySecrets(spk, otpk, h)
	if err != nil {
		return nil, err
	}
	requestKey, answerKey := enrollmentKeys(dh, header)
	clear(dh)
	// decrypt attestation and token
	plaintext, err := openOnce(requestKey, header, ciphertext)
	clear(requestKey[:])
	if err != nil {
		clear(answerKey[:])
		return nil, err
	}
	defer clear(plaintext)
	r, err := parseRequestPlaintext(plaintext, h.purposeKey, self, now)
	if err != nil {
		clear(answerKey[:])
		return nil, err
	}
	r.OneTimePrekey, r.HasOneTimePrekey = h.oneTime, h.hasOneTime
	r.Hash = requestHash(request)
	r.answerKey = answerKey
	return r, nil
}

// parseRequestPlaintext checks the decrypted attestation and token.
func parseRequestPlaintext(p []byte, purposeKey [32]byte, self secure.Identifier, now time.Time) (*EnrollmentRequest, error) {
	if len(p) != requestPlaintextSize {
		return nil, fmt.Errorf("%w: enrollment request plaintext of %d bytes", secure.ErrMalformed, len(p))
	}
	a, err := secure.ParseAttestation(p[:secure.AttestationSize])
	if err != nil {
		return nil, fmt.Errorf("enrollment request: %w", err)
	}
	if a.PurposeKey != purposeKey {
		return nil, fmt.Errorf("enrollment request: the attestation is of another purpose key: %w", secure.ErrWrongSubject)
	}
	if err := a.Verify(now); err != nil {
		return nil, fmt.Errorf("enrollment request: %w", err)
	}
	token, err := parseTokenBytes(p[secure.AttestationSize:])
	if err != nil {
		return nil, err
	}
	if !token.MintedBy(self) {
		return nil, fmt.Errorf("enrollment token not minted by this authority %s: %w", self.Short(), ErrWrongAuthority)
	}
	return &EnrollmentRequest{Attestation: a, Token: token}, nil
}

// Subject returns the identifier of the enrolling device.
func (r *EnrollmentRequest) Subject() secure.Identifier { return r.Attestation.Identifier() }

// SealAnswer encrypts the credential to the device, under a key that mixes
// in 32 bytes read from random (nil: crypto/rand), which the answer carries.
// It may be called once: a second call fails.
func (r *EnrollmentRequest) SealAnswer(c *secure.Credential, random io.Reader) ([]byte, error) {
	if r.answerKey == nil {
		return nil, errors.New("secure: enrollment request already answered")
	}
	if c.Subject != r.Subject() {
		return nil, fmt.Errorf("secure: credential of %s for the request of %s: %w", c.Subject.Short(), r.Subject().Short(), secure.ErrWrongSubject)
	}
	if random == nil {
		random = rand.Reader
	}
	// header: version, request hash, the authority's salt
	header := make([]byte, answerHeaderSize)
	header[0] = enrollVersion
	copy(header[1:], r.Hash[:])
	if _, err := io.ReadFull(random, header[1+len(r.Hash):]); err != nil {
		return nil, fmt.Errorf("secure: answer salt: %w", err)
	}
	key := answerKey(r.answerKey, header[1+len(r.Hash):])
	defer clear(key[:])
	answer := sealOnce(key, header, header, c.Marshal())
	clear(r.answerKey[:])
	r.answerKey = nil
	return answer, nil
}
