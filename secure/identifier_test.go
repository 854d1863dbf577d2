package secure

import (
	"crypto/ed25519"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// rfc8032Test1Public is the public key of RFC 8032, section 7.1, TEST 1.
const rfc8032Test1Public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

// rfc8032Test1Identifier is SHA-256("telegraf-ockam identifier v1\x00" ||
// that key), computed independently (Python hashlib).
const rfc8032Test1Identifier = "I048d529c212cb793b490018ca8385dbeaa81264dc7e7d68b507ceb277d3fbab6"

func TestIdentifierOf(t *testing.T) {
	pub, err := hex.DecodeString(rfc8032Test1Public)
	require.NoError(t, err)
	id := IdentifierOf(ed25519.PublicKey(pub))
	require.Equal(t, rfc8032Test1Identifier, id.String())
	require.Equal(t, "I048d529c…", id.Short())
	require.False(t, id.IsZero())
	require.True(t, Identifier{}.IsZero())

	parsed, err := ParseIdentifier(id.String())
	require.NoError(t, err)
	require.Equal(t, id, parsed)
	require.True(t, parsed.Equal(id))
	require.False(t, parsed.Equal(Identifier{}))
}

func TestParseIdentifierStrict(t *testing.T) {
	good := rfc8032Test1Identifier
	for _, tc := range []struct {
		name, in string
	}{
		{"empty", ""},
		{"prefix only", "I"},
		{"no prefix", good[1:]},
		{"lowercase prefix", "i" + good[1:]},
		{"other prefix", "X" + good[1:]},
		{"63 digits", good[:64]},
		{"65 digits", good + "0"},
		{"uppercase hex", "I" + strings.ToUpper(good[1:])},
		{"non-hex digit", good[:64] + "g"},
		{"leading space", " " + good[:64]},
		{"trailing newline", good[:64] + "\n"},
		{"0x prefix", "I0x" + good[3:]},
		{"multibyte rune", good[:63] + "é"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ParseIdentifier(tc.in)
			require.ErrorIs(t, err, ErrMalformed)
			require.True(t, id.IsZero())
		})
	}
}
