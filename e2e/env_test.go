package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binaries are the programs an end-to-end test runs, as absolute paths.
type binaries struct {
	ockam    string // the ockam command
	telegraf string // the custom Telegraf with both plugins
	influxd  string // InfluxDB 1.8
}

// requireBinaries skips the test unless OCKAM_E2E=1; with it, a missing
// binary fails the test. OCKAM_BIN defaults to ../bin and INFLUXD to
// ../.tools/bin/influxd, where make puts them.
func requireBinaries(t *testing.T) binaries {
	t.Helper()
	if os.Getenv("OCKAM_E2E") != "1" {
		t.Skip("end-to-end test skipped: set OCKAM_E2E=1, OCKAM_BIN=<dir with ockam and telegraf> " +
			"and INFLUXD=<influxd 1.8> to run it (make test does)")
	}
	bin := envOr("OCKAM_BIN", filepath.Join("..", "bin"))
	b := binaries{
		ockam:    executable(t, filepath.Join(bin, "ockam")),
		telegraf: executable(t, filepath.Join(bin, "telegraf")),
		influxd:  executable(t, envOr("INFLUXD", filepath.Join("..", ".tools", "bin", "influxd"))),
	}
	return b
}

// executable returns the absolute path of the program at p, or fails t.
func executable(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err == nil {
		_, err = exec.LookPath(abs)
	}
	if err != nil {
		t.Fatalf("OCKAM_E2E=1 but %s is not an executable (run make build tools): %v", p, err)
	}
	return abs
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
