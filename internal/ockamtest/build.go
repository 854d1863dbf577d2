package ockamtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildMu   sync.Mutex
	buildDirs = map[string]string{} // packages → directory of their binaries
)

// raceFlags is ["-race"] when the test runs under the race detector.
var raceFlags []string

// Build compiles the main packages pkgs (paths relative to the test's
// directory, such as "." or "../ockam-listener-execd") with go build, once
// per test binary, and returns the directory that holds the binaries, named
// after their packages. Under the race detector they are built with -race
// too. RemoveBuilds deletes them; call it from TestMain.
func Build(t testing.TB, pkgs ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries")
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	key := strings.Join(pkgs, "\x00")
	if dir, ok := buildDirs[key]; ok {
		return dir
	}
	dir, err := os.MkdirTemp("", "ockamtest-bin-")
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"build"}, raceFlags...), "-o", dir+string(filepath.Separator))
	start := time.Now()
	if out, err := exec.Command("go", append(args, pkgs...)...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	t.Logf("go build %s: %v", strings.Join(append(append([]string{}, raceFlags...), pkgs...), " "),
		time.Since(start).Round(100*time.Millisecond))
	buildDirs[key] = dir
	return dir
}

// RemoveBuilds deletes what Build made.
func RemoveBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	for key, dir := range buildDirs {
		os.RemoveAll(dir)
		delete(buildDirs, key)
	}
}
