package secure

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
)

// FuzzParseIdentifier: the attacker controls an identifier's text form:
// listener_identity in a configuration it hands an operator, a --subject
// flag, a line of a file. Whatever parses is canonical: its String is the
// input.
func FuzzParseIdentifier(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentifier(s)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		require.Equal(t, s, id.String())
		require.True(t, strings.HasPrefix(s, id.Short()[:9]))
	})
}

// identifierSeeds is the seed corpus of FuzzParseIdentifier, by file name.
func identifierSeeds() map[string]string {
	id := IdentifierOf(make([]byte, 32)).String()
	return map[string]string{
		"valid":     id,
		"zero":      Identifier{}.String(),
		"uppercase": strings.ToUpper(id),
		"no-prefix": id[1:],
		"short":     id[:64],
		"long":      id + "0",
		"not-hex":   id[:64] + "g",
		"non-ascii": id[:63] + "é",
		"empty":     "",
	}
}

// TestIdentifierFuzzSeeds writes the seed corpus of FuzzParseIdentifier
// with -update; otherwise it checks that the committed seeds are what the
// code makes now.
func TestIdentifierFuzzSeeds(t *testing.T) {
	fuzzseed.Check(t, "FuzzParseIdentifier", "string", identifierSeeds(), *update, "go test ./secure -run TestIdentifierFuzzSeeds -update")
}
