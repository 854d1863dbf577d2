//go:build cgo

package vaults

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11/softhsmtest"
)

func TestOpenPKCS11(t *testing.T) {
	tk := softhsmtest.New(t, "", "ockam")
	dir := filepath.Join(t.TempDir(), "device")
	spec := tk.Spec("ockam", dir)

	v, err := Open(spec, nil)
	require.NoError(t, err)
	require.IsType(t, &pkcs11.Vault{}, v)
	id, err := secure.CreateIdentity(v, time.Now())
	require.NoError(t, err)
	require.NoError(t, v.(io.Closer).Close())

	// Again, with the PIN from the environment.
	t.Setenv("OCKAM_TEST_PIN", softhsmtest.PIN)
	envSpec := strings.Replace(spec, "pin-source=file:"+tk.PINFile, "pin-source=env:OCKAM_TEST_PIN", 1)
	v, err = OpenExisting(envSpec, nil)
	require.NoError(t, err)
	defer v.(io.Closer).Close()
	loaded, err := secure.LoadIdentity(v)
	require.NoError(t, err)
	require.Equal(t, id.Identifier(), loaded.Identifier())

	// A label prefix names other keys: this spec sees no identity.
	other, err := OpenExisting(spec+";label-prefix=other-", nil)
	require.NoError(t, err)
	defer other.(io.Closer).Close()
	_, err = secure.LoadIdentity(other)
	require.Error(t, err)
}

func TestOpenPKCS11WrongPIN(t *testing.T) {
	tk := softhsmtest.New(t, "", "ockam")
	const wrong = "not-the-pin-9876"
	t.Setenv("OCKAM_TEST_PIN", wrong)
	spec := strings.Replace(tk.Spec("ockam", filepath.Join(t.TempDir(), "d")),
		"pin-source=file:"+tk.PINFile, "pin-source=env:OCKAM_TEST_PIN", 1)
	_, err := Open(spec, nil)
	require.ErrorIs(t, err, pkcs11.ErrPIN)
	require.NotContains(t, err.Error(), wrong)
}
