package secure

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// cheatingSigner is a vault that returns what it is told to, not a
// signature.
type cheatingSigner struct {
	sig []byte
	err error
}

func (c cheatingSigner) Public() ed25519.PublicKey {
	return make(ed25519.PublicKey, ed25519.PublicKeySize)
}
func (c cheatingSigner) Sign(_ []byte) ([]byte, error) { return c.sig, c.err }

func TestSignBody(t *testing.T) {
	signer := vault.NewSignerFromSeed(vectorfile.Key("sign body"))
	sig, err := SignBody(signer, credentialContext, []byte("body"), "credential")
	require.NoError(t, err)
	require.True(t, ed25519.Verify(signer.Public(), SignedMessage(credentialContext, []byte("body")), sig))

	boom := errors.New("token removed")
	_, err = SignBody(cheatingSigner{err: boom}, credentialContext, []byte("body"), "credential")
	require.ErrorIs(t, err, boom)
	require.EqualError(t, err, "secure: sign credential: token removed")

	for _, n := range []int{0, 63, 65} {
		_, err = SignBody(cheatingSigner{sig: make([]byte, n)}, revocationContext, []byte("body"), "revocation list")
		require.EqualError(t, err, fmt.Sprintf("secure: signer returned a %d-byte signature", n))
	}

	// Every signing path goes through it: a short signature issues nothing.
	_, err = IssueCredential(cheatingSigner{sig: make([]byte, 63)}, Identifier{}, nil, t0, time.Hour, nil)
	require.EqualError(t, err, "secure: signer returned a 63-byte signature")
}
