package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers of the fault runs (crash_test.go, pathcut_test.go): the figures
// they print, and the check that the device's buffer drained.

var (
	// deviceWriteErrors: a Write of outputs.ockam failed; Telegraf keeps the
	// batch and retries it at the next flush.
	deviceWriteErrors = regexp.MustCompile(`Error writing to outputs\.ockam`)
	// listenerWrites: a batch the listener's Telegraf wrote to InfluxDB.
	listenerWrites = regexp.MustCompile(`\[outputs\.influxdb_v2\] Wrote batch of (\d+) metrics`)
	// bufferFullness: Telegraf logs it after every flush (debug = true).
	bufferFullness = regexp.MustCompile(`\[outputs\.ockam\] Buffer fullness: (\d+) / \d+ metrics`)
	bufferOverflow = regexp.MustCompile(`\[outputs\.ockam\] Metric buffer overflow`)
)

// written returns how many points the listener processes wrote to
// InfluxDB, duplicates included.
func written(procs ...*process) int { return sumMatches(listenerWrites, procs...) }

// requireDrained waits until the device's last flush left its outputs.ockam
// buffer empty, and fails t if the buffer ever overflowed (metrics dropped).
func requireDrained(t *testing.T, dev *process) {
	t.Helper()
	eventually(t, 30*time.Second, dev.name+"'s outputs.ockam buffer to drain", func() (bool, string) {
		all := bufferFullness.FindAllStringSubmatch(dev.text(), -1)
		if len(all) == 0 {
			return false, "no buffer fullness logged"
		}
		last := all[len(all)-1]
		return last[1] == "0", strings.TrimSpace(last[0])
	})
	if n := dev.count(bufferOverflow); n > 0 {
		t.Errorf("%s logged %d buffer overflows: metrics were dropped", dev.name, n)
	}
}

// recovery measures how long after a fault ended stored() grew again.
func recovery(t *testing.T, what string, stored func() int) time.Duration {
	t.Helper()
	from, start := stored(), time.Now()
	eventually(t, 60*time.Second, "new rows after "+what, func() (bool, string) {
		return stored() > from, ""
	})
	return time.Since(start)
}

// seconds formats durations for the figures.
func seconds(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return strings.Join(s, ", ")
}
