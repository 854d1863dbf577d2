package secure

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	dir := filepath.Join("testdata", "fuzz", "FuzzParseIdentifier")
	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	for name, s := range identifierSeeds() {
		path := filepath.Join(dir, "seed-"+name)
		want := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", s)
		if *update {
			require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err, "run: go test ./secure -run TestIdentifierFuzzSeeds -update")
		require.Equal(t, want, string(got), path)
	}
}
