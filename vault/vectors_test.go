package vault

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

// testPassphrase seals the test vectors and the sealed seed corpus entries.
const testPassphrase = "correct horse battery staple"

// sealedVector is an encrypted Ed25519 key file: the key is the bytes 1, 2,
// …, 32, sealed with testPassphrase, logN 10, a salt of 16 0xaa bytes and a
// nonce of 24 0xbb bytes. It was cross-checked against an independent
// implementation (testdata/xcheck_keyfile.py: Python hashlib.scrypt, a
// hand-written HChaCha20 and pyca/cryptography's ChaCha20-Poly1305).
const sealedVector = "4f434b560101010a" + // "OCKV", version 1, kind Ed25519, scrypt, logN 10
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + // salt
	"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" + // nonce
	"50e9d39d65aaeee9ab08900e37b2b96f22f997c817da4352c9ab95292ebc87f2" + // sealed key
	"4ab3513290f647cb9b994cd15c320bfa" // tag

func TestSealedVector(t *testing.T) {
	want, err := hex.DecodeString(sealedVector)
	require.NoError(t, err)
	require.Equal(t, want, sealedFile(kindEd25519, 10, 0xaa, 0xbb))

	k, err := parseKeyFile(want)
	require.NoError(t, err)
	key, err := k.open([]byte(testPassphrase))
	require.NoError(t, err)
	require.Equal(t, [keySize]byte(plainFile(kindEd25519)[7:]), key)
}
