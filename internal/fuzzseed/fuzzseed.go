// Package fuzzseed keeps the committed seed corpora of fuzz targets with
// one argument in step with the code that makes them. For tests only.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Check writes, when update is set, and then checks the seed corpus of the
// fuzz target: for each seed the file testdata/fuzz/<target>/seed-<name>,
// in the corpus form of go test ("go test fuzz v1" and the value as a Go
// literal of type typ, "[]byte" or "string"). Files the fuzzer adds
// (crashers kept as regression seeds) are left alone. hint is the command
// that regenerates the corpus.
func Check[S ~string | ~[]byte](t *testing.T, target, typ string, seeds map[string]S, update bool, hint string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if update {
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	for name, b := range seeds {
		path := filepath.Join(dir, "seed-"+name)
		want := fmt.Sprintf("go test fuzz v1\n%s(%q)\n", typ, b)
		if update {
			require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err, "run: %s", hint)
		require.Equal(t, want, string(got), path)
	}
}

// Require fails a fuzz target whose seed corpus (testdata/fuzz/<name>) is
// missing or empty, so that it cannot silently fuzz from nothing. hint is
// the command that writes the corpus.
func Require(f *testing.F, hint string) {
	f.Helper()
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", f.Name()))
	if err != nil || len(entries) == 0 {
		f.Fatalf("no seed corpus in testdata/fuzz/%s (%s): %v", f.Name(), hint, err)
	}
}
