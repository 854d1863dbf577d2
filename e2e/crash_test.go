package e2e

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

// TestCrashesLoseNothing kills the listener's Telegraf with SIGKILL three
// times in the middle of a finite stream, starting it again each time;
// stops InfluxDB for longer than the listener's flush interval (1 s) and
// starts it again; then stops the listener with SIGTERM and starts it
// again. Every metric the device gathered must be in InfluxDB, each once
// with its own values, and the device's buffer must be empty at the end.
func TestCrashesLoseNothing(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	sensor := cli.identity("device", "")
	cli.issue(authority, sensor, "720h", "role=sensor", "site=plant-7")

	// 20 a second for 80 s: the stream outlasts the faults, so the device
	// always has metrics in flight when one begins (each fault is noticed
	// by a write that fails, and a device with nothing left to send writes
	// nothing). A fault begins every 80 stored (4 s of traffic) or once the
	// previous one recovered; the last, SIGTERM, came after ≈27 s of the
	// stream on a loaded 2-core machine, mostly influxd's start-up (Flux
	// initialises for seconds of CPU): 80 s leave room for a machine more
	// than twice as slow.
	const n, perRun, step = 1600, 10, 80
	pts := sequence("e2e_seq", n)
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	procs := []*process{l.proc}
	start := time.Now()
	dev := startDevice(t, bin.telegraf, sensor, authority, l, "500ms", execInputs(t, pts, perRun))

	stored := func() int { return len(db.seqs("e2e_seq")[sensor.id]) }
	atLeast := func(k int) func() (bool, string) {
		return func() (bool, string) { return stored() >= k, "" }
	}
	influxErrors := regexp.MustCompile(`Error writing to outputs\.influxdb_v2`)
	// restartAfter waits for the device to notice that the listener is
	// gone, starts the listener again and returns how long InfluxDB took to
	// get new rows.
	restartAfter := func(what string) time.Duration {
		before := dev.count(deviceWriteErrors)
		eventually(t, 30*time.Second, "the device to notice "+what, func() (bool, string) {
			return dev.count(deviceWriteErrors) > before, ""
		})
		l.restart()
		procs = append(procs, l.proc)
		return recovery(t, "the listener restarted after "+what, stored)
	}

	var at []int // stored when each fault began
	var recovered []time.Duration
	for k := 1; k <= 3; k++ {
		eventually(t, 60*time.Second, "the stream to go on", atLeast(k*step))
		at = append(at, stored())
		l.proc.kill()
		recovered = append(recovered, restartAfter("SIGKILL"))
	}

	eventually(t, 60*time.Second, "the stream to go on", atLeast(4*step))
	at = append(at, stored())
	db.stop()
	downAt := time.Now()
	eventually(t, 30*time.Second, "the listener to fail two writes to InfluxDB", func() (bool, string) {
		return l.proc.count(influxErrors) >= 2, ""
	})
	if d := time.Since(downAt); d < 3*time.Second { // longer than a flush interval, by far
		time.Sleep(3*time.Second - d)
	}
	down := time.Since(downAt)
	db.restart()
	recovered = append(recovered, recovery(t, "InfluxDB restarted", stored))

	eventually(t, 60*time.Second, "the stream to go on", atLeast(5*step))
	at = append(at, stored())
	l.proc.stop() // SIGTERM: what the listener had not delivered is not acked
	recovered = append(recovered, restartAfter("SIGTERM"))

	eventually(t, 120*time.Second, "the whole stream", atLeast(n))
	elapsed := time.Since(start)
	requireDrained(t, dev)
	if got := db.seqs("e2e_seq"); len(got) != 1 || len(got[sensor.id]) != n {
		t.Fatalf("InfluxDB holds seqs of %d identities, %d of the device; want %d of it alone",
			len(got), len(got[sensor.id]), n)
	}
	rows := db.rows("e2e_seq")
	if want := storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent", len(rows), len(want))
	}
	w := written(procs...)
	t.Logf("figures: %d metrics sent, %d stored (each once, values as sent), %d points written to InfluxDB "+
		"(%d re-deliveries of the same values) in %.1fs; faults at %v stored: SIGKILL ×3, InfluxDB down %.1fs, "+
		"SIGTERM; the device retried %d failed writes; new rows %s after each fault ended; "+
		"the device's buffer drained",
		n, len(rows), w, w-n, elapsed.Seconds(), at, down.Seconds(), dev.count(deviceWriteErrors), seconds(recovered))
}
