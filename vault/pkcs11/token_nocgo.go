//go:build !cgo

package pkcs11

import (
	"fmt"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Token is a PKCS#11 token. This program was built without cgo, so
// OpenToken cannot load a module and no Token exists.
type Token struct{ _ [0]func() }

var errNoCgo = fmt.Errorf("%w: this program was built without cgo (CGO_ENABLED=0); "+
	"rebuild it with cgo to use a PKCS#11 token", ErrModule)

// OpenToken returns an error wrapping ErrModule: loading a module needs cgo.
func OpenToken(module, label string, pin []byte) (*Token, error) { return nil, errNoCgo }

// GenerateSigner returns an error: no Token exists without cgo.
func (*Token) GenerateSigner(string) (vault.Signer, error) { return nil, errNoCgo }

// Signer returns an error: no Token exists without cgo.
func (*Token) Signer(string) (vault.Signer, error) { return nil, errNoCgo }

// DeleteKey returns an error: no Token exists without cgo.
func (*Token) DeleteKey(string) error { return errNoCgo }

// Close does nothing.
func (*Token) Close() error { return nil }
