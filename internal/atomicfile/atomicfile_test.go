package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	require.NoError(t, Write(path, []byte("one"), 0o600))
	require.NoError(t, Write(path, []byte("two"), 0o640))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "two", string(got))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left")

	// a symbolic link is refused, its target untouched
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, []byte("kept"), 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(target, link))
	require.ErrorContains(t, Write(link, []byte("x"), 0o600), "not a regular file")
	got, err = os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, "kept", string(got))

	// a failed write leaves nothing behind
	require.Error(t, Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600))
	entries, err = os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 3)
}
