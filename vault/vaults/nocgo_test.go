//go:build !cgo

package vaults

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11"
)

// TestOpenPKCS11WithoutCgo: a binary built without cgo cannot load a
// module, and says so.
func TestOpenPKCS11WithoutCgo(t *testing.T) {
	t.Setenv("OCKAM_TEST_PIN", "1234")
	spec := "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=t;pin-source=env:OCKAM_TEST_PIN;dir=" +
		filepath.Join(t.TempDir(), "v")
	_, err := Open(spec, nil)
	require.ErrorIs(t, err, pkcs11.ErrModule)
	require.ErrorContains(t, err, "built without cgo")
}
