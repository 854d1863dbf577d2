package pkcs11

import (
	"errors"
	"fmt"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// DefaultLabelPrefix starts the label of every key a Vault keeps in its
// token: the identity key is "ockam-identity".
const DefaultLabelPrefix = "ockam-"

// Vault is a vault.Vault split in two: Ed25519 keys (identity keys) are
// generated and used in a Token, labelled prefix+name; X25519 keys (purpose
// keys) and records are kept by another vault, a directory (vault.File).
// Names follow the vault.Vault rules and share one namespace across both
// halves. It is safe for concurrent use.
type Vault struct {
	token  *Token
	prefix string
	files  vault.Vault
}

var _ vault.Vault = (*Vault)(nil)

// NewVault returns the Vault of token and files, labelling token keys
// prefix+name. It owns token: Close closes it.
func NewVault(token *Token, prefix string, files vault.Vault) *Vault {
	return &Vault{token: token, prefix: prefix, files: files}
}

// GenerateSigner generates an Ed25519 key in the token. It returns an error
// wrapping vault.ErrExists if the token has an object labelled prefix+name
// or the directory has a key called name (of either kind: a directory that
// holds a file identity key is another vault's).
func (v *Vault) GenerateSigner(name string) (vault.Signer, error) {
	if err := vault.CheckName(name); err != nil {
		return nil, err
	}
	if _, err := v.files.DH(name); !errors.Is(err, vault.ErrNotFound) {
		reason := "an X25519 key"
		if err != nil {
			reason = err.Error()
		}
		return nil, fmt.Errorf("%w: the vault directory has a key named %q (%s)", vault.ErrExists, name, reason)
	}
	return v.token.GenerateSigner(v.prefix + name)
}

// Signer returns the Ed25519 key labelled prefix+name in the token
// (vault.ErrNotFound if there is none).
func (v *Vault) Signer(name string) (vault.Signer, error) {
	if err := vault.CheckName(name); err != nil {
		return nil, err
	}
	s, err := v.token.Signer(v.prefix + name)
	if errors.Is(err, vault.ErrNotFound) {
		if _, ferr := v.files.DH(name); ferr == nil || errors.Is(ferr, vault.ErrPassphrase) {
			return nil, fmt.Errorf("pkcs11: key %q is an X25519 key in the vault directory, not an Ed25519 key", name)
		}
	}
	return s, err
}

// GenerateDH generates an X25519 key in the directory. It returns an error
// wrapping vault.ErrExists if the name is taken in the directory or in the
// token.
func (v *Vault) GenerateDH(name string) (vault.DH, error) {
	if err := vault.CheckName(name); err != nil {
		return nil, err
	}
	if _, err := v.token.Signer(v.prefix + name); !errors.Is(err, vault.ErrNotFound) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: the token holds an Ed25519 key labelled %q", vault.ErrExists, v.prefix+name)
	}
	return v.files.GenerateDH(name)
}

// DH returns the X25519 key name from the directory.
func (v *Vault) DH(name string) (vault.DH, error) {
	d, err := v.files.DH(name)
	if errors.Is(err, vault.ErrNotFound) {
		if _, serr := v.token.Signer(v.prefix + name); serr == nil {
			return nil, fmt.Errorf("pkcs11: key %q is an Ed25519 key in the token, not an X25519 key", name)
		}
	}
	return d, err
}

// DeleteKey destroys the token key labelled prefix+name, or else removes
// the directory's key name (vault.ErrNotFound if neither exists).
func (v *Vault) DeleteKey(name string) error {
	if err := vault.CheckName(name); err != nil {
		return err
	}
	err := v.token.DeleteKey(v.prefix + name)
	if errors.Is(err, vault.ErrNotFound) {
		return v.files.DeleteKey(name)
	}
	return err
}

// WriteRecord stores a record in the directory.
func (v *Vault) WriteRecord(name string, data []byte) error { return v.files.WriteRecord(name, data) }

// ReadRecord reads a record from the directory.
func (v *Vault) ReadRecord(name string) ([]byte, error) { return v.files.ReadRecord(name) }

// Close closes the token. Signers from v fail afterwards; the directory
// needs no closing.
func (v *Vault) Close() error { return v.token.Close() }
