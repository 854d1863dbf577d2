package enroll

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The device's side of enrollment (docs/PROTOCOL.md, "Enrollment"): make
// the request, open the answer.

// Enrollment is a device's enrollment in progress: the request it sent and
// the key that opens the answer. It is used by one goroutine.
type Enrollment struct {
	request     []byte
	requestHash [32]byte
	authority   secure.Identifier
	subject     secure.Identifier
	answerKey   *[32]byte // nil once used
}

// NewEnrollment prepares the request of the device id to the authority of
// bundle, which the caller has verified (Bundle.Verify), with token. It uses
// the one-time prekey at index oneTime of the bundle, or none if oneTime is
// negative. ephemeral is a fresh X25519 key, used for this request only
// (vault.NewDHFromScalar of 32 random bytes, or a vault key when the answer
// comes later, see ResumeEnrollment). It refuses a token of another
// authority (ErrWrongAuthority).
func NewEnrollment(id *secure.LocalIdentity, bundle *Bundle, token Token, oneTime int, ephemeral vault.DH) (*Enrollment, error) {
	if oneTime >= len(bundle.OneTimePrekeys) {
		return nil, fmt.Errorf("secure: one-time prekey %d of a bundle of %d", oneTime, len(bundle.OneTimePrekeys))
	}
	authority := bundle.Authority()
	if !token.MintedBy(authority) {
		return nil, fmt.Errorf("enrollment token not minted by %s: %w", authority.Short(), ErrWrongAuthority)
	}
	// header
	purpose := id.PurposeKey().PublicKey()
	eph := ephemeral.PublicKey()
	h := requestHeader{authority: authority, signedPrekey: bundle.SignedPrekey, purposeKey: purpose, ephemeral: eph}
	if oneTime >= 0 {
		h.oneTime, h.hasOneTime = bundle.OneTimePrekeys[oneTime], true
	}
	header := h.append(nil)
	// DH1, DH2, DH3
	dh, err := deviceSecrets(id.PurposeKey(), ephemeral, h)
	if err != nil {
		return nil, err
	}
	requestKey, answerKey := enrollmentKeys(dh, header)
	clear(dh)
	defer clear(requestKey[:])
	// encrypt attestation and token
	plaintext := token.appendTo(slices.Clone(id.Public().Attestation().Marshal()))
	defer clear(plaintext)
	request := sealOnce(requestKey, header, header, plaintext)
	return &Enrollment{
		request: request, requestHash: requestHash(request), authority: authority,
		subject: id.Identifier(), answerKey: answerKey,
	}, nil
}

// ResumeEnrollment rebuilds the device's side of a request it made earlier
// (the offline flow: request now, answer later) from the request and the
// ephemeral key it kept. The identity's purpose key must be the one the
// request was made with.
func ResumeEnrollment(id *secure.LocalIdentity, request []byte, ephemeral vault.DH) (*Enrollment, error) {
	h, header, _, err := parseRequestHeader(request)
	if err != nil {
		return nil, err
	}
	if h.purposeKey != id.PurposeKey().PublicKey() {
		return nil, errors.New("secure: the request was made with another purpose key (rotated since?)")
	}
	if h.ephemeral != ephemeral.PublicKey() {
		return nil, errors.New("secure: the request was made with another ephemeral key")
	}
	dh, err := deviceSecrets(id.PurposeKey(), ephemeral, h)
	if err != nil {
		return nil, err
	}
	requestKey, answerKey := enrollmentKeys(dh, header)
	clear(dh)
	clear(requestKey[:])
	return &Enrollment{
		request: slices.Clone(request), requestHash: requestHash(request), authority: h.authority,
		subject: id.Identifier(), answerKey: answerKey,
	}, nil
}

// Request returns the request to send (a copy).
func (e *Enrollment) Request() []byte { return slices.Clone(e.request) }

// RequestHash returns the hash that names the request in its answer.
func (e *Enrollment) RequestHash() [32]byte { return e.requestHash }

// Authority returns the identifier of the authority the request is for.
func (e *Enrollment) Authority() secure.Identifier { return e.authority }

// OpenAnswer decrypts the authority's answer and returns the credential,
// verified with v (which must trust the authority) for the device at now.
// It fails with ErrAnswerMismatch for an answer to another request, an
// opaque ErrDecrypt for a forged or damaged one, or a credential error. The
// answer key is used once: after a successful call, OpenAnswer fails.
func (e *Enrollment) OpenAnswer(answer []byte, v *secure.Verifier, now time.Time) (*secure.Credential, error) {
	if e.answerKey == nil {
		return nil, errors.New("secure: enrollment answer already opened")
	}
	if len(answer) > MaxAnswerSize || len(answer) < answerHeaderSize+chacha20poly1305.Overhead {
		return nil, fmt.Errorf("%w: enrollment answer of %d bytes", secure.ErrMalformed, len(answer))
	}
	if answer[0] != enrollVersion {
		return nil, fmt.Errorf("%w: enrollment answer version %d, want %d", secure.ErrMalformed, answer[0], enrollVersion)
	}
	if [32]byte(answer[1:answerHeaderSize]) != e.requestHash {
		return nil, ErrAnswerMismatch
	}
	key := answerKey(e.answerKey, answer[answerHeaderSize-answerSaltSize:answerHeaderSize])
	plaintext, err := openOnce(key, answer[:answerHeaderSize], answer[answerHeaderSize:])
	clear(key[:])
	if err != nil {
		return nil, err
	}
	c, err := secure.ParseCredential(plaintext)
	if err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	if c.Issuer != e.authority {
		return nil, fmt.Errorf("enrollment answer: credential issued by %s, not %s: %w", c.Issuer.Short(), e.authority.Short(), secure.ErrUnknownIssuer)
	}
	if err := v.VerifyCredential(c, e.subject, now); err != nil {
		return nil, fmt.Errorf("enrollment answer: %w", err)
	}
	clear(e.answerKey[:])
	e.answerKey = nil
	return c, nil
}

// AnswerRequestHash returns the request hash an answer names, for picking
// a device's answer out of many. It checks only the answer's size and
// version.
func AnswerRequestHash(answer []byte) ([32]byte, error) {
	if len(answer) > MaxAnswerSize || len(answer) < answerHeaderSize+chacha20poly1305.Overhead || answer[0] != enrollVersion {
		return [32]byte{}, fmt.Errorf("%w: enrollment answer of %d bytes", secure.ErrMalformed, len(answer))
	}
	return [32]byte(answer[1:answerHeaderSize]), nil
}
