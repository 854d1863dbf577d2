package secure

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWeakIdentifiers: every encoding IsWeak lists is refused as an
// identity key, and the neutral point's one fixed signature verifies under
// any message with crypto/ed25519 (the attack IsWeak keeps credentials
// from). A genuine identity is not weak.
func TestWeakIdentifiers(t *testing.T) {
	require.Len(t, weakIdentifiers, 14)
	neutral, _ := hex.DecodeString("0100000000000000000000000000000000000000000000000000000000000000")
	require.True(t, IdentifierOf(neutral).IsWeak())
	require.ErrorIs(t, CheckIdentityKey(neutral), ErrMalformed)
	sig := append(append([]byte(nil), neutral...), make([]byte, 32)...) // R = the neutral point, S = 0
	for _, m := range []string{"a", "telegraf-ockam", "anything at all"} {
		require.True(t, ed25519.Verify(neutral, []byte(m), sig), "the fixed signature verifies %q", m)
	}
	require.False(t, newIdentity(t).Identifier().IsWeak())
	require.False(t, Identifier{}.IsWeak())
}
