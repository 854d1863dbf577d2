// Package vault keeps private keys and lets callers use them without seeing
// them: an Ed25519 Signer for identity keys and an X25519 DH for the Noise
// purpose keys. Backends: a directory of key files (OpenFile), memory
// (NewMemory); hardware backends implement the same interface.
//
// The on-disk format is specified in docs/PROTOCOL.md, section "Vault files".
package vault

import (
	"crypto/ed25519"
	"errors"
)

// Errors a caller acts on. Backends wrap them with the key name.
var (
	// ErrNotFound is returned when no key or record has the given name.
	ErrNotFound = errors.New("vault: not found")
	// ErrExists is returned by Generate* when the name is already taken.
	ErrExists = errors.New("vault: already exists")
	// ErrPassphrase is returned when an encrypted key cannot be opened with
	// the passphrase given (or none was given).
	ErrPassphrase = errors.New("vault: wrong or missing passphrase")
)

// Signer signs with an Ed25519 private key that it does not reveal.
// Implementations are safe for concurrent use.
type Signer interface {
	// Public returns the Ed25519 public key (a copy the caller may keep).
	Public() ed25519.PublicKey
	// Sign returns the 64-byte Ed25519 signature of message.
	Sign(message []byte) ([]byte, error)
}

// DH performs X25519 with a private key that it does not reveal.
// Implementations are safe for concurrent use.
type DH interface {
	// PublicKey returns the X25519 public key.
	PublicKey() [32]byte
	// DH returns the X25519 shared secret with peer. It returns an error for
	// a low-order peer key (an all-zero result), never the zero secret.
	DH(peer [32]byte) ([32]byte, error)
}

// Vault stores named keys and small public records.
//
// Names are 1 to 64 characters of [a-z0-9._-] and do not start with a dot;
// other names are an error. Keys of both kinds share one namespace; records
// have their own. Loading a key of the other kind (Signer on an X25519 key)
// is an error that wraps no sentinel. Implementations are safe for concurrent
// use.
type Vault interface {
	// GenerateSigner creates and stores a new Ed25519 key under name.
	// It returns an error wrapping ErrExists if the name is taken.
	GenerateSigner(name string) (Signer, error)
	// Signer loads the Ed25519 key stored under name (ErrNotFound, ErrPassphrase).
	Signer(name string) (Signer, error)
	// GenerateDH creates and stores a new X25519 key under name.
	// It returns an error wrapping ErrExists if the name is taken.
	GenerateDH(name string) (DH, error)
	// DH loads the X25519 key stored under name (ErrNotFound, ErrPassphrase).
	DH(name string) (DH, error)
	// DeleteKey removes the key stored under name (ErrNotFound).
	DeleteKey(name string) error
	// WriteRecord stores a public, non-secret record (such as a purpose-key
	// attestation) under name, replacing any previous one atomically. A
	// record is at most MaxRecordSize bytes.
	WriteRecord(name string, data []byte) error
	// ReadRecord returns the record stored under name (ErrNotFound).
	ReadRecord(name string) ([]byte, error)
}
