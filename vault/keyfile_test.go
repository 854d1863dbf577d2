package vault

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz/FuzzParseKeyFile")

const corpusDir = "testdata/fuzz/FuzzParseKeyFile"

// plainFile returns a plain key file for kind holding 1, 2, …, 32.
func plainFile(kind byte) []byte {
	b := []byte{'O', 'C', 'K', 'V', keyFileVersion, kind, encNone}
	for i := range keySize {
		b = append(b, byte(i+1))
	}
	return b
}

// sealedFile returns an encrypted key file for kind holding 1, 2, …, 32,
// sealed with testPassphrase at logN with a salt of saltFill bytes and a
// nonce of nonceFill bytes, so that it is the same on every run.
func sealedFile(kind, logN, saltFill, nonceFill byte) []byte {
	k := &keyFile{kind: kind, encrypted: true, logN: logN}
	copy(k.salt[:], bytes.Repeat([]byte{saltFill}, saltSize))
	copy(k.nonce[:], bytes.Repeat([]byte{nonceFill}, len(k.nonce)))
	key := [keySize]byte(plainFile(kind)[7:])
	k.seal(&key, []byte(testPassphrase))
	return k.marshal()
}

// with returns a copy of b with b[i] set to c.
func with(b []byte, i int, c byte) []byte {
	b = bytes.Clone(b)
	b[i] = c
	return b
}

func TestParseKeyFile(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		want      error
		kind      byte
		encrypted bool
	}{
		{"plain Ed25519", plainFile(kindEd25519), nil, kindEd25519, false},
		{"plain X25519", plainFile(kindX25519), nil, kindX25519, false},
		{"sealed logN 10", sealedFile(kindEd25519, 10, 0xaa, 0xbb), nil, kindEd25519, true},
		{"sealed logN 20", with(sealedFile(kindX25519, 10, 0xaa, 0xbb), 7, 20), nil, kindX25519, true},
		{"sealed logN 9", with(sealedFile(kindEd25519, 10, 0xaa, 0xbb), 7, 9), errLogN, 0, false},
		{"sealed logN 21", with(sealedFile(kindEd25519, 10, 0xaa, 0xbb), 7, 21), errLogN, 0, false},
		{"lowercase magic", with(plainFile(kindEd25519), 0, 'o'), errMalformed, 0, false},
		{"version 0", with(plainFile(kindEd25519), 4, 0), errMalformed, 0, false},
		{"version 255", with(plainFile(kindEd25519), 4, 255), errMalformed, 0, false},
		{"kind 0", with(plainFile(kindEd25519), 5, 0), errMalformed, 0, false},
		{"kind 3", with(plainFile(kindEd25519), 5, 3), errMalformed, 0, false},
		{"encryption 2", with(plainFile(kindEd25519), 6, 2), errMalformed, 0, false},
		{"encryption 255", with(sealedFile(kindEd25519, 10, 0xaa, 0xbb), 6, 255), errMalformed, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := parseKeyFile(tt.in)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
				require.ErrorIs(t, err, errMalformed)
				require.Nil(t, k)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.kind, k.kind)
			require.Equal(t, tt.encrypted, k.encrypted)
			require.Equal(t, tt.in, k.marshal())
		})
	}
}

// TestParseKeyFileLengths accepts exactly 39 bytes for a plain file and 96
// for a sealed one.
func TestParseKeyFileLengths(t *testing.T) {
	plain := append(plainFile(kindEd25519), make([]byte, 100)...)
	sealed := append(sealedFile(kindEd25519, 10, 0xaa, 0xbb), make([]byte, 100)...)
	for n := range 130 {
		_, err := parseKeyFile(plain[:n])
		if n == plainFileSize {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, errMalformed, "plain, %d bytes", n)
		}
		_, err = parseKeyFile(sealed[:n])
		if n == sealedFileSize {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, errMalformed, "sealed, %d bytes", n)
		}
	}
}

// TestKeyFileRoundTrip seals and opens keys of both kinds.
func TestKeyFileRoundTrip(t *testing.T) {
	for _, kind := range []byte{kindEd25519, kindX25519} {
		for _, pw := range [][]byte{nil, []byte("pw")} {
			key := [keySize]byte(bytes.Repeat([]byte{kind}, keySize))
			b := newKeyFile(kind, &key, pw, minLogN).marshal()
			k, err := parseKeyFile(b)
			require.NoError(t, err)
			require.Equal(t, kind, k.kind)
			require.Equal(t, pw != nil, k.encrypted)
			got, err := k.open(pw)
			require.NoError(t, err)
			require.Equal(t, key, got)
		}
	}
	// Two seals of one key differ (fresh salt and nonce).
	key := [keySize]byte{1}
	a := newKeyFile(kindEd25519, &key, []byte("pw"), minLogN).marshal()
	b := newKeyFile(kindEd25519, &key, []byte("pw"), minLogN).marshal()
	require.NotEqual(t, a, b)
}

// FuzzParseKeyFile: the attacker controls the whole key file (planted in, or
// restored into, a vault directory). Parsing must not panic, must accept only
// the canonical encoding (re-encoding a parsed file gives its bytes back), and
// must not let the file order scrypt work beyond 2^maxLogN. The seed corpus
// is in testdata/fuzz/FuzzParseKeyFile (regenerate with -update).
func FuzzParseKeyFile(f *testing.F) {
	entries, err := os.ReadDir(corpusDir)
	require.NoError(f, err)
	require.NotEmpty(f, entries, "the seed corpus is empty")
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parseKeyFile(b)
		if err != nil {
			require.ErrorIs(t, err, errMalformed)
			require.Nil(t, k)
			return
		}
		require.Equal(t, b, k.marshal())
		require.Contains(t, []byte{kindEd25519, kindX25519}, k.kind)
		if !k.encrypted {
			key, err := k.open(nil)
			require.NoError(t, err)
			require.Equal(t, b[7:], key[:])
			_, err = k.open([]byte(testPassphrase))
			require.ErrorIs(t, err, errNotEncrypted)
			return
		}
		require.GreaterOrEqual(t, k.logN, byte(minLogN))
		require.LessOrEqual(t, k.logN, byte(maxLogN))
		_, err = k.open(nil)
		require.ErrorIs(t, err, ErrPassphrase)
		if k.logN != minLogN {
			return // opening costs 2^logN; try only the cheapest
		}
		key, err := k.open([]byte(testPassphrase))
		if err != nil {
			require.ErrorIs(t, err, ErrPassphrase)
			require.Equal(t, [keySize]byte{}, key)
			return
		}
		// Sealing the key again with the same salt and nonce gives b back.
		again := &keyFile{kind: k.kind, encrypted: true, logN: k.logN, salt: k.salt, nonce: k.nonce}
		again.seal(&key, []byte(testPassphrase))
		require.Equal(t, b, again.marshal())
	})
}

// TestUpdateFuzzCorpus writes the seed corpus when run with -update.
func TestUpdateFuzzCorpus(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite the seed corpus")
	}
	seeds := map[string][]byte{
		"plain-ed25519":         plainFile(kindEd25519),
		"plain-x25519":          plainFile(kindX25519),
		"sealed-ed25519-logn10": sealedFile(kindEd25519, 10, 0xaa, 0xbb),
		"sealed-x25519-logn10":  sealedFile(kindX25519, 10, 0x55, 0x66),
		"sealed-logn20":         with(sealedFile(kindEd25519, 10, 0x11, 0x22), 7, 20), // parses; never opened
		"plain-truncated":       plainFile(kindEd25519)[:plainFileSize-1],
		"sealed-trailing-byte":  append(sealedFile(kindX25519, 10, 0x55, 0x66), 0),
		"sealed-logn21":         with(sealedFile(kindEd25519, 10, 0xaa, 0xbb), 7, 21),
		"version-2":             with(plainFile(kindEd25519), 4, 2),
		"empty":                 {},
	}
	require.NoError(t, os.RemoveAll(corpusDir))
	require.NoError(t, os.MkdirAll(corpusDir, 0o755))
	for name, b := range seeds {
		data := "go test fuzz v1\n[]byte(\"" + quoteBytes(b) + "\")\n"
		require.NoError(t, os.WriteFile(filepath.Join(corpusDir, name), []byte(data), 0o644))
	}
}

// quoteBytes escapes b for a Go string literal: printable ASCII as is, all
// else as \xHH, so that the corpus files show the key file byte by byte.
func quoteBytes(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, "\\x%02x", c)
		}
	}
	return s.String()
}
