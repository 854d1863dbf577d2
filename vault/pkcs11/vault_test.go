//go:build cgo

package pkcs11

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// newTestVault returns a Vault over a new token and a file vault in a new
// directory, closed when the test ends.
func newTestVault(t *testing.T, passphrase []byte) (*Vault, string) {
	t.Helper()
	tok, _ := openTestToken(t)
	dir := filepath.Join(t.TempDir(), "vault")
	files, err := vault.OpenFile(dir, passphrase)
	require.NoError(t, err)
	return NewVault(tok, DefaultLabelPrefix, files), dir
}

// TestVaultContract checks the vault.Vault contract that vault's own tests
// check for File and Memory.
func TestVaultContract(t *testing.T) {
	v, _ := newTestVault(t, nil)
	s, err := v.GenerateSigner("sig")
	require.NoError(t, err)
	loaded, err := v.Signer("sig")
	require.NoError(t, err)
	require.Equal(t, s.Public(), loaded.Public())
	msg := []byte("m")
	sig, err := loaded.Sign(msg)
	require.NoError(t, err)
	require.True(t, ed25519.Verify(s.Public(), msg, sig))

	d, err := v.GenerateDH("dh")
	require.NoError(t, err)
	dl, err := v.DH("dh")
	require.NoError(t, err)
	require.Equal(t, d.PublicKey(), dl.PublicKey())

	errs := []struct {
		name string
		op   func() error
		want error // nil: an error that wraps no sentinel
	}{
		{"Signer missing", func() error { _, err := v.Signer("missing"); return err }, vault.ErrNotFound},
		{"DH missing", func() error { _, err := v.DH("missing"); return err }, vault.ErrNotFound},
		{"DeleteKey missing", func() error { return v.DeleteKey("missing") }, vault.ErrNotFound},
		{"ReadRecord missing", func() error { _, err := v.ReadRecord("missing"); return err }, vault.ErrNotFound},
		{"GenerateSigner taken by Signer", func() error { _, err := v.GenerateSigner("sig"); return err }, vault.ErrExists},
		{"GenerateSigner taken by DH", func() error { _, err := v.GenerateSigner("dh"); return err }, vault.ErrExists},
		{"GenerateDH taken by DH", func() error { _, err := v.GenerateDH("dh"); return err }, vault.ErrExists},
		{"GenerateDH taken by Signer", func() error { _, err := v.GenerateDH("sig"); return err }, vault.ErrExists},
		{"Signer of a DH key", func() error { _, err := v.Signer("dh"); return err }, nil},
		{"DH of a Signer key", func() error { _, err := v.DH("sig"); return err }, nil},
		{"invalid name", func() error { _, err := v.GenerateSigner("../x"); return err }, nil},
		{"invalid name to delete", func() error { return v.DeleteKey("A") }, nil},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			require.Error(t, err)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
				return
			}
			require.NotErrorIs(t, err, vault.ErrNotFound)
			require.NotErrorIs(t, err, vault.ErrExists)
		})
	}

	require.NoError(t, v.WriteRecord("r", []byte("record")))
	rec, err := v.ReadRecord("r")
	require.NoError(t, err)
	require.Equal(t, []byte("record"), rec)

	require.NoError(t, v.DeleteKey("sig"))
	require.NoError(t, v.DeleteKey("dh"))
	_, err = v.Signer("sig")
	require.ErrorIs(t, err, vault.ErrNotFound)
	_, err = v.DH("dh")
	require.ErrorIs(t, err, vault.ErrNotFound)
}

// TestVaultRefusesFileVaultDir: a pkcs11 spec pointed at a directory that
// holds a file identity must not take it over.
func TestVaultRefusesFileVaultDir(t *testing.T) {
	v, dir := newTestVault(t, nil)
	files, err := vault.OpenFile(dir, nil)
	require.NoError(t, err)
	_, err = secure.CreateIdentity(files, time.Now())
	require.NoError(t, err)
	_, err = secure.CreateIdentity(v, time.Now())
	require.ErrorIs(t, err, vault.ErrExists)
	_, err = secure.LoadIdentity(v)
	require.ErrorIs(t, err, vault.ErrNotFound)
}

// TestIdentityInToken creates an identity whose identity key is in the
// token: the directory holds the purpose key and the attestation, and no
// identity key.
func TestIdentityInToken(t *testing.T) {
	for _, passphrase := range [][]byte{nil, []byte("correct horse")} {
		t.Run("passphrase="+string(passphrase), func(t *testing.T) {
			v, dir := newTestVault(t, passphrase)
			now := time.Now()
			id, err := secure.CreateIdentity(v, now)
			require.NoError(t, err)
			requireDir(t, dir, "purpose-a.key", "purpose.attestation.rec")

			loaded, err := secure.LoadIdentity(v)
			require.NoError(t, err)
			require.Equal(t, id.Identifier(), loaded.Identifier())
			signer, err := v.token.Signer(DefaultLabelPrefix + "identity")
			require.NoError(t, err)
			require.Equal(t, signer.Public(), loaded.Public().Key(), "the attestation is signed by the token's key")

			require.NoError(t, loaded.RotatePurposeKey(v, now, time.Hour))
			requireDir(t, dir, "purpose-b.key", "purpose.attestation.rec")
			again, err := secure.LoadIdentity(v)
			require.NoError(t, err)
			require.Equal(t, id.Identifier(), again.Identifier())
			require.NotEqual(t, id.Public().Attestation().PurposeKey, again.Public().Attestation().PurposeKey)
		})
	}
}

func requireDir(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	require.Equal(t, want, got)
}
