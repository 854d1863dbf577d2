// Package pkcs11 keeps Ed25519 identity keys in a PKCS#11 token (a hardware
// security module, a smart card, SoftHSM): a key is generated inside the
// token, sensitive and not extractable, and every signature is made there.
// Token is the token; Vault is a vault.Vault whose Ed25519 keys are in a
// Token and whose X25519 purpose keys and records are in a file vault, since
// the purpose keys are rotated freely and used for every handshake.
//
// docs/PROTOCOL.md, "Vault files", specifies the directory; docs/CONCEPTS.md,
// "Vault backends", explains the split. The mechanisms are those of PKCS#11
// 3.0 (CKK_EC_EDWARDS, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA), which the
// binding names only by number.
//
// The package needs cgo (the module is loaded with dlopen); built without
// it, OpenToken returns an error.
package pkcs11

import (
	"crypto/ed25519"
	"errors"
	"fmt"
)

// Errors a caller acts on, each with the fix in its message. Errors of the
// token that have no sentinel wrap the binding's pkcs11.Error.
var (
	// ErrModule is returned when the module cannot be loaded: the file is
	// missing or is not a PKCS#11 library.
	ErrModule = errors.New("pkcs11: cannot load the PKCS#11 module")
	// ErrTokenNotFound is returned when no token has the label asked for.
	ErrTokenNotFound = errors.New("pkcs11: token not found")
	// ErrPIN is returned when the token refuses the PIN (wrong, locked, or
	// not initialised), or when a process that already logged in to the
	// token gives another PIN.
	ErrPIN = errors.New("pkcs11: the token refused the PIN")
	// ErrNoEdDSA is returned when the token cannot generate or sign with
	// Ed25519 keys (no CKM_EDDSA or CKM_EC_EDWARDS_KEY_PAIR_GEN).
	ErrNoEdDSA = errors.New("pkcs11: the token does not support Ed25519 (CKM_EDDSA)")
)

// PKCS#11 3.0 values the binding has no names for.
const (
	ckkECEdwards           = 0x40   // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA               = 0x1057 // CKM_EDDSA; no parameters: pure Ed25519 (RFC 8032)
)

// CKA_EC_PARAMS of an edwards25519 key. PKCS#11 3.0 allows the OID
// id-Ed25519 (1.3.101.112, RFC 8410) or the printable string
// "edwards25519"; tokens differ in which they accept, so key generation
// tries the OID first.
var (
	ecParamsOID    = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}
	ecParamsString = append([]byte{0x13, 0x0c}, "edwards25519"...)
)

// parseECPoint reads the CKA_EC_POINT of an edwards25519 public key into
// pub: the 32-byte RFC 8032 encoding in a DER OCTET STRING (04 20 ...), as
// PKCS#11 3.0 specifies, or bare, as some tokens return it.
func parseECPoint(pub *[ed25519.PublicKeySize]byte, point []byte) error {
	switch {
	case len(point) == 2+ed25519.PublicKeySize && point[0] == 0x04 && point[1] == ed25519.PublicKeySize:
		copy(pub[:], point[2:])
	case len(point) == ed25519.PublicKeySize:
		copy(pub[:], point)
	default:
		return fmt.Errorf("CKA_EC_POINT of %d bytes is not an Ed25519 public key", len(point))
	}
	return nil
}
