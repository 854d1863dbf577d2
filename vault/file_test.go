package vault

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireDirEntries checks that dir holds exactly the named files (so no
// temporary file was left behind).
func requireDirEntries(t *testing.T, dir string, want ...string) {
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

func requireMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, fi.Mode().Perm(), "%s", path)
}

func TestOpenFileCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "vault")
	_, err := OpenFile(dir, nil)
	require.NoError(t, err)
	requireMode(t, dir, 0o700)
	requireDirEntries(t, dir)
}

func TestOpenFileDirPermissions(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		want error
	}{
		{0o700, nil},
		{0o500, nil},
		{0o750, errUnprotected},
		{0o710, errUnprotected},
		{0o705, errUnprotected},
		{0o701, errUnprotected},
		{0o770, errUnprotected},
		{0o777, errUnprotected},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vault")
			require.NoError(t, os.Mkdir(dir, 0o700))
			require.NoError(t, os.Chmod(dir, tt.mode))
			_, err := OpenFile(dir, nil)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			// The message names the path and the fix.
			require.Contains(t, err.Error(), "UNPROTECTED VAULT DIRECTORY "+dir)
			require.Contains(t, err.Error(), "chmod 700 "+dir)
		})
	}
}

func TestOpenFileNotDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	_, err := OpenFile(path, nil)
	require.Error(t, err)
}

func TestFileKeyPermissions(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		want error
	}{
		{0o600, nil},
		{0o400, nil},
		{0o640, errUnprotected},
		{0o604, errUnprotected},
		{0o660, errUnprotected},
		{0o644, errUnprotected},
		{0o620, errUnprotected},
		{0o602, errUnprotected},
		{0o610, errUnprotected},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			v := openTestFile(t, vaultDir(t), nil)
			_, err := v.GenerateSigner("id")
			require.NoError(t, err)
			path := filepath.Join(v.dir, "id.key")
			require.NoError(t, os.Chmod(path, tt.mode))
			_, err = v.Signer("id")
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			require.Contains(t, err.Error(), "UNPROTECTED PRIVATE KEY FILE "+path)
			require.Contains(t, err.Error(), "chmod 600 "+path)
		})
	}
}

func TestFileLayout(t *testing.T) {
	for _, passphrase := range [][]byte{nil, []byte("pw")} {
		v := openTestFile(t, vaultDir(t), passphrase)
		s, err := v.GenerateSigner("id")
		require.NoError(t, err)
		d, err := v.GenerateDH("purpose")
		require.NoError(t, err)
		require.NoError(t, v.WriteRecord("att", []byte("a")))
		require.NoError(t, v.WriteRecord("att", []byte("b")))

		requireDirEntries(t, v.dir, "att.rec", "id.key", "purpose.key")
		for _, name := range []string{"att.rec", "id.key", "purpose.key"} {
			requireMode(t, filepath.Join(v.dir, name), 0o600)
		}
		id, err := os.ReadFile(filepath.Join(v.dir, "id.key"))
		require.NoError(t, err)
		purpose, err := os.ReadFile(filepath.Join(v.dir, "purpose.key"))
		require.NoError(t, err)
		if passphrase == nil {
			require.Equal(t, []byte("OCKV\x01\x01\x00"), id[:7])
			require.Len(t, id, plainFileSize)
			require.Equal(t, []byte("OCKV\x01\x02\x00"), purpose[:7])
			// A plain X25519 file holds the scalar: check it is the one in use.
			want := NewDHFromScalar([32]byte(purpose[7:])).PublicKey()
			require.Equal(t, d.PublicKey(), want)
			wantPub := NewSignerFromSeed([32]byte(id[7:])).Public()
			require.Equal(t, s.Public(), wantPub)
		} else {
			require.Equal(t, []byte("OCKV\x01\x01\x01\x0a"), id[:8])
			require.Len(t, id, sealedFileSize)
			require.Equal(t, []byte("OCKV\x01\x02\x01\x0a"), purpose[:8])
		}
	}
}

// TestFileDefaultLogN writes one key at the real cost.
func TestFileDefaultLogN(t *testing.T) {
	v, err := OpenFile(vaultDir(t), []byte("pw"))
	require.NoError(t, err)
	require.Equal(t, byte(15), v.logN)
	s, err := v.GenerateSigner("id")
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(v.dir, "id.key"))
	require.NoError(t, err)
	require.Equal(t, byte(15), b[7])
	loaded, err := v.Signer("id")
	require.NoError(t, err)
	require.Equal(t, s.Public(), loaded.Public())
}

func TestFilePassphrase(t *testing.T) {
	tests := []struct {
		name        string
		write, read []byte
		want        error
	}{
		{"plain", nil, nil, nil},
		{"encrypted", []byte("pw"), []byte("pw"), nil},
		{"wrong passphrase", []byte("pw"), []byte("pW"), ErrPassphrase},
		{"missing passphrase", []byte("pw"), nil, ErrPassphrase},
		{"empty passphrase", []byte("pw"), []byte{}, ErrPassphrase},
		{"plain key, passphrase set", nil, []byte("pw"), errNotEncrypted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := vaultDir(t)
			w := openTestFile(t, dir, tt.write)
			s, err := w.GenerateSigner("id")
			require.NoError(t, err)
			d, err := w.GenerateDH("dh")
			require.NoError(t, err)

			r := openTestFile(t, dir, tt.read)
			gotS, err := r.Signer("id")
			require.ErrorIs(t, err, tt.want)
			gotD, errD := r.DH("dh")
			require.ErrorIs(t, errD, tt.want)
			if tt.want == nil {
				require.Equal(t, s.Public(), gotS.Public())
				require.Equal(t, d.PublicKey(), gotD.PublicKey())
			}
		})
	}
}

func TestFilePassphraseErrorText(t *testing.T) {
	dir := vaultDir(t)
	_, err := openTestFile(t, dir, []byte("pw")).GenerateSigner("id")
	require.NoError(t, err)
	for _, pw := range [][]byte{nil, []byte("wrong")} {
		_, err = openTestFile(t, dir, pw).Signer("id")
		require.ErrorIs(t, err, ErrPassphrase)
		require.Contains(t, err.Error(), "OCKAM_VAULT_PASSPHRASE")
		require.Contains(t, err.Error(), "vault_passphrase")
		require.Contains(t, err.Error(), filepath.Join(dir, "id.key"))
	}
}

func TestFilePassphraseCopied(t *testing.T) {
	dir := vaultDir(t)
	pw := []byte("pw")
	v := openTestFile(t, dir, pw)
	pw[0] = 'X'
	_, err := v.GenerateSigner("id")
	require.NoError(t, err)
	_, err = openTestFile(t, dir, []byte("pw")).Signer("id")
	require.NoError(t, err)
}

// TestFileCorrupt damages a stored key file in each field and checks the
// error: a structural fault is errMalformed, an authenticated field that was
// changed is ErrPassphrase (the AEAD cannot tell it from a wrong passphrase).
func TestFileCorrupt(t *testing.T) {
	set := func(i int, c byte) func([]byte) []byte {
		return func(b []byte) []byte { b[i] = c; return b }
	}
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte { b[i] ^= 0x01; return b }
	}
	tests := []struct {
		name      string
		encrypted bool
		edit      func([]byte) []byte
		want      error
	}{
		{"empty", false, func([]byte) []byte { return nil }, errMalformed},
		{"plain truncated", false, func(b []byte) []byte { return b[:len(b)-1] }, errMalformed},
		{"plain trailing byte", false, func(b []byte) []byte { return append(b, 0) }, errMalformed},
		{"plain magic", false, flip(0), errMalformed},
		{"plain version 0", false, set(4, 0), errMalformed},
		{"plain version 2", false, set(4, 2), errMalformed},
		{"plain kind 0", false, set(5, 0), errMalformed},
		{"plain kind 3", false, set(5, 3), errMalformed},
		{"plain kind X25519", false, set(5, kindX25519), errWrongKind},
		{"plain encryption 2", false, set(6, 2), errMalformed},
		{"plain marked encrypted", false, set(6, encScrypt), errMalformed},
		{"encrypted truncated", true, func(b []byte) []byte { return b[:len(b)-1] }, errMalformed},
		{"encrypted trailing byte", true, func(b []byte) []byte { return append(b, 0) }, errMalformed},
		{"encrypted cut to plain size", true, func(b []byte) []byte { return b[:plainFileSize] }, errMalformed},
		{"encrypted marked plain", true, set(6, encNone), errMalformed},
		{"encrypted magic", true, flip(3), errMalformed},
		{"encrypted version", true, set(4, 2), errMalformed},
		{"encrypted kind X25519", true, set(5, kindX25519), errWrongKind},
		{"logN 0", true, set(7, 0), errLogN},
		{"logN 9", true, set(7, 9), errLogN},
		{"logN 21", true, set(7, 21), errLogN},
		{"logN 255", true, set(7, 255), errLogN},
		{"logN 11", true, set(7, 11), ErrPassphrase},
		{"salt", true, flip(8), ErrPassphrase},
		{"nonce", true, flip(8 + saltSize + 23), ErrPassphrase},
		{"ciphertext", true, flip(sealedHeaderLen), ErrPassphrase},
		{"tag", true, flip(sealedFileSize - 1), ErrPassphrase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pw []byte
			if tt.encrypted {
				pw = []byte("pw")
			}
			v := openTestFile(t, vaultDir(t), pw)
			_, err := v.GenerateSigner("id")
			require.NoError(t, err)
			path := filepath.Join(v.dir, "id.key")
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tt.edit(b), 0o600))
			_, err = v.Signer("id")
			require.ErrorIs(t, err, tt.want)
		})
	}
}

// TestFileKindAuthenticated relabels a sealed Ed25519 key as X25519: the
// kind is in the AEAD additional data, so DH refuses to open it.
func TestFileKindAuthenticated(t *testing.T) {
	v := openTestFile(t, vaultDir(t), []byte("pw"))
	_, err := v.GenerateSigner("id")
	require.NoError(t, err)
	path := filepath.Join(v.dir, "id.key")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[5] = kindX25519
	require.NoError(t, os.WriteFile(path, b, 0o600))
	_, err = v.DH("id")
	require.ErrorIs(t, err, ErrPassphrase)
}

func TestFileNotRegular(t *testing.T) {
	v := openTestFile(t, vaultDir(t), nil)
	require.NoError(t, os.Mkdir(filepath.Join(v.dir, "id.key"), 0o700))
	require.NoError(t, os.Mkdir(filepath.Join(v.dir, "r.rec"), 0o700))
	_, err := v.Signer("id")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotFound)
	_, err = v.ReadRecord("r")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotFound)
}

func TestFileRecordTooLargeOnDisk(t *testing.T) {
	v := openTestFile(t, vaultDir(t), nil)
	path := filepath.Join(v.dir, "big.rec")
	require.NoError(t, os.WriteFile(path, make([]byte, MaxRecordSize+1), 0o600))
	_, err := v.ReadRecord("big")
	require.ErrorIs(t, err, errTooLarge)
}

// TestWriteAtomicExisting checks that a key write that loses to an existing
// file keeps the existing file and leaves no temporary file.
func TestWriteAtomicExisting(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, writeAtomic(dir, "k.key", []byte("first"), false))
	err := writeAtomic(dir, "k.key", []byte("second"), false)
	require.ErrorIs(t, err, fs.ErrExist)
	got, err := os.ReadFile(filepath.Join(dir, "k.key"))
	require.NoError(t, err)
	require.Equal(t, []byte("first"), got)

	require.NoError(t, writeAtomic(dir, "r.rec", []byte("first"), true))
	require.NoError(t, writeAtomic(dir, "r.rec", []byte("second"), true))
	got, err = os.ReadFile(filepath.Join(dir, "r.rec"))
	require.NoError(t, err)
	require.Equal(t, []byte("second"), got)
	requireDirEntries(t, dir, "k.key", "r.rec")
}

// TestFileSharedDir checks that two File values on one directory (as two
// processes would have) see each other's keys and records.
func TestFileSharedDir(t *testing.T) {
	dir := vaultDir(t)
	a := openTestFile(t, dir, nil)
	b := openTestFile(t, dir, nil)
	s, err := a.GenerateSigner("id")
	require.NoError(t, err)
	_, err = b.GenerateSigner("id")
	require.ErrorIs(t, err, ErrExists)
	got, err := b.Signer("id")
	require.NoError(t, err)
	require.Equal(t, s.Public(), got.Public())
	require.NoError(t, b.WriteRecord("r", []byte("x")))
	rec, err := a.ReadRecord("r")
	require.NoError(t, err)
	require.True(t, bytes.Equal([]byte("x"), rec))
}
