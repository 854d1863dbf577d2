package vault

import (
	"bytes"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// backends lists every Vault implementation; the tests in this file run
// against each, so they must behave the same.
var backends = []struct {
	name string
	open func(t *testing.T) Vault
}{
	{"memory", func(t *testing.T) Vault { return NewMemory() }},
	{"file", func(t *testing.T) Vault { return openTestFile(t, vaultDir(t), nil) }},
	{"file-encrypted", func(t *testing.T) Vault { return openTestFile(t, vaultDir(t), []byte("correct horse")) }},
}

// openTestFile opens a File vault with the cheapest scrypt cost the reader
// accepts, so that tests stay fast.
func openTestFile(t *testing.T, dir string, passphrase []byte) *File {
	t.Helper()
	v, err := OpenFile(dir, passphrase)
	require.NoError(t, err)
	v.logN = minLogN
	return v
}

// vaultDir returns a path for a new vault directory (t.TempDir itself is
// usually 0755, which OpenFile refuses).
func vaultDir(t *testing.T) string { return filepath.Join(t.TempDir(), "vault") }

func forEachBackend(t *testing.T, f func(t *testing.T, v Vault)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.open(t))
		})
	}
}

func TestVaultSigner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, v Vault) {
		s, err := v.GenerateSigner("identity")
		require.NoError(t, err)
		loaded, err := v.Signer("identity")
		require.NoError(t, err)
		require.Equal(t, s.Public(), loaded.Public())
		require.Len(t, s.Public(), ed25519.PublicKeySize)

		msg := []byte("purpose key attestation")
		sig, err := loaded.Sign(msg)
		require.NoError(t, err)
		require.Len(t, sig, ed25519.SignatureSize)
		require.True(t, ed25519.Verify(s.Public(), msg, sig))

		other, err := v.GenerateSigner("other")
		require.NoError(t, err)
		require.NotEqual(t, s.Public(), other.Public())
	})
}

func TestVaultDH(t *testing.T) {
	forEachBackend(t, func(t *testing.T, v Vault) {
		a, err := v.GenerateDH("a")
		require.NoError(t, err)
		b, err := v.GenerateDH("b")
		require.NoError(t, err)
		require.NotEqual(t, a.PublicKey(), b.PublicKey())

		ab, err := a.DH(b.PublicKey())
		require.NoError(t, err)
		ba, err := b.DH(a.PublicKey())
		require.NoError(t, err)
		require.Equal(t, ab, ba)
		require.NotEqual(t, [32]byte{}, ab)

		loaded, err := v.DH("a")
		require.NoError(t, err)
		require.Equal(t, a.PublicKey(), loaded.PublicKey())
		again, err := loaded.DH(b.PublicKey())
		require.NoError(t, err)
		require.Equal(t, ab, again)
	})
}

func TestVaultErrors(t *testing.T) {
	tests := []struct {
		name string
		op   func(v Vault) error
		want error
	}{
		{"Signer missing", func(v Vault) error { _, err := v.Signer("missing"); return err }, ErrNotFound},
		{"DH missing", func(v Vault) error { _, err := v.DH("missing"); return err }, ErrNotFound},
		{"DeleteKey missing", func(v Vault) error { return v.DeleteKey("missing") }, ErrNotFound},
		{"ReadRecord missing", func(v Vault) error { _, err := v.ReadRecord("missing"); return err }, ErrNotFound},
		{"ReadRecord of a key name", func(v Vault) error { _, err := v.ReadRecord("sig"); return err }, ErrNotFound},
		{"GenerateSigner taken by Signer", func(v Vault) error { _, err := v.GenerateSigner("sig"); return err }, ErrExists},
		{"GenerateSigner taken by DH", func(v Vault) error { _, err := v.GenerateSigner("dh"); return err }, ErrExists},
		{"GenerateDH taken by DH", func(v Vault) error { _, err := v.GenerateDH("dh"); return err }, ErrExists},
		{"GenerateDH taken by Signer", func(v Vault) error { _, err := v.GenerateDH("sig"); return err }, ErrExists},
		{"Signer of a DH key", func(v Vault) error { _, err := v.Signer("dh"); return err }, errWrongKind},
		{"DH of a Signer key", func(v Vault) error { _, err := v.DH("sig"); return err }, errWrongKind},
		{"WriteRecord too large", func(v Vault) error { return v.WriteRecord("r", make([]byte, MaxRecordSize+1)) }, errTooLarge},
	}
	forEachBackend(t, func(t *testing.T, v Vault) {
		s, err := v.GenerateSigner("sig")
		require.NoError(t, err)
		d, err := v.GenerateDH("dh")
		require.NoError(t, err)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				require.ErrorIs(t, tt.op(v), tt.want)
			})
		}
		// Failed operations changed nothing.
		s2, err := v.Signer("sig")
		require.NoError(t, err)
		require.Equal(t, s.Public(), s2.Public())
		d2, err := v.DH("dh")
		require.NoError(t, err)
		require.Equal(t, d.PublicKey(), d2.PublicKey())
	})
}

func TestVaultDeleteKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, v Vault) {
		old, err := v.GenerateSigner("k")
		require.NoError(t, err)
		require.NoError(t, v.DeleteKey("k"))
		_, err = v.Signer("k")
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorIs(t, v.DeleteKey("k"), ErrNotFound)

		// The name is free again, and now holds a different kind of key.
		_, err = v.GenerateDH("k")
		require.NoError(t, err)
		_, err = v.DH("k")
		require.NoError(t, err)
		_ = old
	})
}

func TestVaultRecords(t *testing.T) {
	forEachBackend(t, func(t *testing.T, v Vault) {
		in := []byte("first")
		require.NoError(t, v.WriteRecord("r", in))
		in[0] = 'X' // the vault kept its own copy
		got, err := v.ReadRecord("r")
		require.NoError(t, err)
		require.Equal(t, []byte("first"), got)
		got[0] = 'Y' // and hands out copies
		got, err = v.ReadRecord("r")
		require.NoError(t, err)
		require.Equal(t, []byte("first"), got)

		require.NoError(t, v.WriteRecord("r", []byte("second, longer")))
		got, err = v.ReadRecord("r")
		require.NoError(t, err)
		require.Equal(t, []byte("second, longer"), got)

		require.NoError(t, v.WriteRecord("r", nil))
		got, err = v.ReadRecord("r")
		require.NoError(t, err)
		require.Empty(t, got)

		max := bytes.Repeat([]byte{0xa5}, MaxRecordSize)
		require.NoError(t, v.WriteRecord("max", max))
		got, err = v.ReadRecord("max")
		require.NoError(t, err)
		require.Equal(t, max, got)

		// Records and keys are separate: a record does not make a key.
		_, err = v.Signer("r")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

func TestVaultNames(t *testing.T) {
	valid := []string{"a", "0", "-", "_x", "a.", "identity", "purpose-key.v1_2", strings.Repeat("z", 64)}
	invalid := []string{"", ".", "..", ".hidden", "A", "Identity", "a/b", "../x", "a\\b", "a b", "a:b",
		"a\x00", "é", "a\n", strings.Repeat("z", 65)}
	forEachBackend(t, func(t *testing.T, v Vault) {
		for _, name := range valid {
			require.NoError(t, v.WriteRecord(name, []byte(name)), "%q", name)
			got, err := v.ReadRecord(name)
			require.NoError(t, err, "%q", name)
			require.Equal(t, []byte(name), got)
			_, err = v.GenerateDH(name)
			require.NoError(t, err, "%q", name)
			_, err = v.DH(name)
			require.NoError(t, err, "%q", name)
			require.NoError(t, v.DeleteKey(name), "%q", name)
		}
		for _, name := range invalid {
			_, err := v.GenerateSigner(name)
			require.ErrorIs(t, err, errInvalidName, "%q", name)
			_, err = v.Signer(name)
			require.ErrorIs(t, err, errInvalidName, "%q", name)
			_, err = v.GenerateDH(name)
			require.ErrorIs(t, err, errInvalidName, "%q", name)
			_, err = v.DH(name)
			require.ErrorIs(t, err, errInvalidName, "%q", name)
			require.ErrorIs(t, v.DeleteKey(name), errInvalidName, "%q", name)
			require.ErrorIs(t, v.WriteRecord(name, nil), errInvalidName, "%q", name)
			_, err = v.ReadRecord(name)
			require.ErrorIs(t, err, errInvalidName, "%q", name)
		}
	})
}

// TestVaultConcurrentGenerate races generators for one name: exactly one
// wins, the others get ErrExists, and the winner's key is the one stored.
func TestVaultConcurrentGenerate(t *testing.T) {
	const n = 8
	forEachBackend(t, func(t *testing.T, v Vault) {
		var wg sync.WaitGroup
		signers := make([]Signer, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { signers[i], errs[i] = v.GenerateSigner("contested") })
		}
		wg.Wait()
		var winner Signer
		for i := range n {
			if errs[i] == nil {
				require.Nil(t, winner, "two generators won")
				winner = signers[i]
			} else {
				require.ErrorIs(t, errs[i], ErrExists)
				require.Nil(t, signers[i])
			}
		}
		require.NotNil(t, winner)
		stored, err := v.Signer("contested")
		require.NoError(t, err)
		require.Equal(t, winner.Public(), stored.Public())
		if f, ok := v.(*File); ok {
			requireDirEntries(t, f.dir, "contested.key")
		}
	})
}
