package e2e

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

// TestCrashesLoseNothing kills the listener's Telegraf with SIGKILL in the
// middle of a finite stream and starts it again, stops InfluxDB and starts
// it again, then stops the listener with SIGTERM and starts it again: every
// metric the device gathered must be in InfluxDB, each once.
func TestCrashesLoseNothing(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	sensor := cli.identity("device", "")
	cli.issue(authority, sensor, "720h", "role=sensor", "site=plant-7")

	const n, perRun = 800, 20 // 40 a second: 20 s of traffic
	pts := sequence("e2e_seq", n)
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	start := time.Now()
	dev := startDevice(t, bin.telegraf, sensor, authority, l, "500ms", execInputs(t, pts, perRun))

	stored := func() int { return len(db.seqs("e2e_seq")[sensor.id]) }
	atLeast := func(k int) func() (bool, string) {
		return func() (bool, string) { return stored() >= k, "" }
	}
	writeErrors := regexp.MustCompile(`Error writing to outputs\.ockam`)
	influxErrors := regexp.MustCompile(`Error writing to outputs\.influxdb_v2`)

	eventually(t, 60*time.Second, "a quarter of the stream", atLeast(n/4))
	killedAt := stored()
	l.proc.kill()
	before := dev.count(writeErrors)
	eventually(t, 30*time.Second, "the device to notice the listener is gone", func() (bool, string) {
		return dev.count(writeErrors) > before, ""
	})
	l.restart()

	eventually(t, 60*time.Second, "half of the stream", atLeast(n/2))
	stoppedAt := stored()
	db.stop()
	eventually(t, 30*time.Second, "the listener to fail two writes to InfluxDB", func() (bool, string) {
		return l.proc.count(influxErrors) >= 2, ""
	})
	db.restart()

	eventually(t, 60*time.Second, "three quarters of the stream", atLeast(3*n/4))
	termAt := stored()
	l.proc.stop() // SIGTERM: what the listener had not delivered is not acked
	before = dev.count(writeErrors)
	eventually(t, 30*time.Second, "the device to notice the listener stopped", func() (bool, string) {
		return dev.count(writeErrors) > before, ""
	})
	l.restart()

	eventually(t, 120*time.Second, "the whole stream", atLeast(n))
	elapsed := time.Since(start)
	if got := db.seqs("e2e_seq"); len(got) != 1 || len(got[sensor.id]) != n {
		t.Fatalf("InfluxDB holds seqs of %d identities, %d of the device; want %d of it alone",
			len(got), len(got[sensor.id]), n)
	}
	rows := db.rows("e2e_seq")
	if want := storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent", len(rows), len(want))
	}
	t.Logf("figures: %d metrics sent, %d distinct stored in %.1fs; listener killed at %d stored, "+
		"InfluxDB stopped at %d, listener stopped at %d; the device logged %d failed writes",
		n, len(rows), elapsed.Seconds(), killedAt, stoppedAt, termAt, dev.count(writeErrors))
}
