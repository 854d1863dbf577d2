package fuzzseed

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	t.Chdir(t.TempDir())
	Check(t, "FuzzBytes", "[]byte", map[string][]byte{"a": {0, 'x', 0xff}}, true, "hint")
	Check(t, "FuzzString", "string", map[string]string{"b": "I\"1\n"}, true, "hint")

	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzBytes", "seed-a"))
	require.NoError(t, err)
	require.Equal(t, "go test fuzz v1\n[]byte(\"\\x00x\\xff\")\n", string(b))
	s, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzString", "seed-b"))
	require.NoError(t, err)
	require.Equal(t, "go test fuzz v1\nstring(\"I\\\"1\\n\")\n", string(s))

	// Without update, the committed files are what is checked.
	Check(t, "FuzzBytes", "[]byte", map[string][]byte{"a": {0, 'x', 0xff}}, false, "hint")
}
