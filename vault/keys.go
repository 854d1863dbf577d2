package vault

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// errLowOrder is wrapped by DH.DH when the peer key is a low-order point.
var errLowOrder = errors.New("vault: X25519 with a low-order peer key")

// signer is the in-process Signer. It prints itself redacted, and its private
// key sits behind a pointer: fmt bypasses Format for a value in an unexported
// field and, on a bad verb (%s of a struct holding one), prints the *signer's
// fields, but never follows a second pointer.
type signer struct {
	_    [0]func() // incomparable: == on keys is not constant-time
	priv *ed25519.PrivateKey
	pub  [ed25519.PublicKeySize]byte
}

var _ Signer = (*signer)(nil)

// NewSignerFromSeed returns a Signer for the Ed25519 private key with the
// given RFC 8032 seed. It keeps its own copy of the key; the caller should
// clear seed when done.
func NewSignerFromSeed(seed [ed25519.SeedSize]byte) Signer {
	priv := ed25519.NewKeyFromSeed(seed[:])
	s := &signer{priv: &priv}
	copy(s.pub[:], priv.Public().(ed25519.PublicKey))
	clear(seed[:]) // our copy of the argument
	return s
}

// Public returns a copy of the Ed25519 public key.
func (s *signer) Public() ed25519.PublicKey {
	return ed25519.PublicKey(append([]byte(nil), s.pub[:]...))
}

// Sign returns the Ed25519 signature of message. It never fails.
func (s *signer) Sign(message []byte) ([]byte, error) {
	return ed25519.Sign(*s.priv, message), nil
}

// String returns a redacted description that shows a public key prefix.
func (s *signer) String() string { return redacted("Signer", "ed25519", s.pub[:]) }

// GoString is String, so that %#v is redacted too.
func (s *signer) GoString() string { return s.String() }

// Format prints String for every verb and flag, so no verb reaches the key.
func (s *signer) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue makes slog print String.
func (s *signer) LogValue() slog.Value { return slog.StringValue(s.String()) }

// dh is the in-process DH. Like signer, it prints itself redacted and keeps
// its private key behind a pointer.
type dh struct {
	_    [0]func() // incomparable
	priv *ecdh.PrivateKey
	pub  [32]byte
}

var _ DH = (*dh)(nil)

// NewDHFromScalar returns a DH for the X25519 private key scalar (RFC 7748;
// it is clamped when used, so any 32 bytes are valid). It keeps its own copy
// of the key; the caller should clear scalar when done.
func NewDHFromScalar(scalar [32]byte) DH {
	priv, err := ecdh.X25519().NewPrivateKey(scalar[:])
	clear(scalar[:]) // our copy of the argument
	if err != nil {
		// X25519 accepts every 32-byte scalar.
		panic("vault: internal error: " + err.Error())
	}
	d := &dh{priv: priv}
	copy(d.pub[:], priv.PublicKey().Bytes())
	return d
}

// PublicKey returns the X25519 public key.
func (d *dh) PublicKey() [32]byte { return d.pub }

// DH returns the X25519 shared secret with peer, or an error wrapping
// errLowOrder if peer is a low-order point (the secret would be all zeros).
func (d *dh) DH(peer [32]byte) ([32]byte, error) {
	var out [32]byte
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		// X25519 accepts every 32-byte public key.
		panic("vault: internal error: " + err.Error())
	}
	shared, err := d.priv.ECDH(pub)
	if err != nil {
		return out, fmt.Errorf("%w: %w", errLowOrder, err)
	}
	copy(out[:], shared)
	clear(shared)
	return out, nil
}

// String returns a redacted description that shows a public key prefix.
func (d *dh) String() string { return redacted("DH", "x25519", d.pub[:]) }

// GoString is String, so that %#v is redacted too.
func (d *dh) GoString() string { return d.String() }

// Format prints String for every verb and flag, so no verb reaches the key.
func (d *dh) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(d.String())) }

// LogValue makes slog print String.
func (d *dh) LogValue() slog.Value { return slog.StringValue(d.String()) }

// redacted formats a key as "vault.Signer(ed25519:1a2b3c4d..., private key
// redacted)": the first 4 bytes of the public key identify it in logs.
func redacted(typ, alg string, pub []byte) string {
	return "vault." + typ + "(" + alg + ":" + hex.EncodeToString(pub[:4]) + "..., private key redacted)"
}
