//go:build cgo

package pkcs11

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	p11 "github.com/miekg/pkcs11"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// signer is a vault.Signer whose private key is an object in a token. It
// holds no secret: only the object's handle and the public key.
type signer struct {
	_     [0]func() // incomparable, like the other vault keys
	token *Token
	label string
	priv  p11.ObjectHandle
	pub   [ed25519.PublicKeySize]byte
}

var _ vault.Signer = (*signer)(nil)

// errBadSignature is returned when the token's signature does not verify
// under the key's public key: a faulty token, or a public key object that is
// not the private key's.
var errBadSignature = errors.New("pkcs11: the token returned a signature that does not verify")

// Public returns a copy of the Ed25519 public key.
func (s *signer) Public() ed25519.PublicKey {
	return ed25519.PublicKey(append([]byte(nil), s.pub[:]...))
}

// Sign signs message in the token (CKM_EDDSA, pure Ed25519) and verifies
// the signature before returning it, so that a faulty token cannot make us
// publish a bad one.
func (s *signer) Sign(message []byte) ([]byte, error) {
	sess, err := s.token.lock()
	if err != nil {
		return nil, err
	}
	defer sess.mu.Unlock()
	return s.sign(sess, message)
}

// sign signs with sess locked.
func (s *signer) sign(sess *session, message []byte) ([]byte, error) {
	mech := []*p11.Mechanism{p11.NewMechanism(ckmEdDSA, nil)}
	if err := sess.mod.ctx.SignInit(sess.h, mech, s.priv); err != nil {
		return nil, fmt.Errorf("pkcs11: sign with the key labelled %q in token %q: %w", s.label, sess.token, err)
	}
	sig, err := sess.mod.ctx.Sign(sess.h, message) // C_Sign ends the operation, also on error
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign with the key labelled %q in token %q: %w", s.label, sess.token, err)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(s.pub[:], message, sig) {
		return nil, fmt.Errorf("%w (key labelled %q in token %q)", errBadSignature, s.label, sess.token)
	}
	return sig, nil
}

// selfTest signs a fixed message once, with the session locked: a new key
// pair must sign before it is used.
func (s *signer) selfTest() error {
	_, err := s.sign(s.token.s, []byte("telegraf-ockam pkcs11 self-test"))
	return err
}

// String describes the key without revealing anything secret (there is
// nothing secret in a signer): the public key prefix and where it is.
func (s *signer) String() string {
	return fmt.Sprintf("pkcs11.Signer(ed25519:%s..., %q in token %q)", hex.EncodeToString(s.pub[:4]), s.label, s.token.s.token)
}

// GoString is String, so that %#v prints it too.
func (s *signer) GoString() string { return s.String() }

// Format prints String for every verb.
func (s *signer) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue makes slog print String.
func (s *signer) LogValue() slog.Value { return slog.StringValue(s.String()) }
