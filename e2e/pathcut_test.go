package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/testproxy"
)

// TestPathCutLosesNothing puts a TCP proxy between the device and the
// listener and cuts the path three times in the middle of a finite stream:
// every connection through it is closed, and new ones are refused for at
// least 2 s (two device flush intervals), then the path is restored. Every
// metric must be in InfluxDB, each once with its own values, and the
// device's buffer must be empty at the end.
func TestPathCutLosesNothing(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	sensor := cli.identity("device", "")
	cli.issue(authority, sensor, "720h", "role=sensor", "site=plant-7")

	// 40 a second: 30 s of traffic. The stream must outlast the three cuts,
	// since each is noticed by a write that fails, and a device with nothing
	// left to send writes nothing. A cut begins every 120 stored (3 s of
	// traffic) or once the previous one recovered; each takes ≈4-5 s here
	// (≥2 s down, a flush or two to notice, the redial), so the third began
	// ≈12 s into the stream: 30 s leave room for a machine twice as slow.
	const n, perRun, step = 1200, 20, 120
	pts := sequence("e2e_seq", n)
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	px := testproxy.Start(t, l.addr)
	via := *l
	via.addr = px.Addr() // the device dials the proxy
	start := time.Now()
	dev := startDevice(t, bin.telegraf, sensor, authority, &via, "500ms", execInputs(t, pts, perRun))

	stored := func() int { return len(db.seqs("e2e_seq")[sensor.id]) }
	var at, cut []int
	var down, recovered []time.Duration
	for k := 1; k <= 3; k++ {
		eventually(t, 60*time.Second, "the stream to go on", func() (bool, string) {
			return stored() >= k*step, ""
		})
		at = append(at, stored())
		before := dev.count(deviceWriteErrors)
		px.SetDown(true)
		cutAt := time.Now()
		cut = append(cut, px.Cut())
		eventually(t, 30*time.Second, "the device to notice the cut", func() (bool, string) {
			return dev.count(deviceWriteErrors) > before, ""
		})
		if d := time.Since(cutAt); d < 2*time.Second { // the outage, not an assertion
			time.Sleep(2*time.Second - d)
		}
		down = append(down, time.Since(cutAt))
		px.SetDown(false)
		recovered = append(recovered, recovery(t, "the path was restored", stored))
	}

	eventually(t, 120*time.Second, "the whole stream", func() (bool, string) { return stored() >= n, "" })
	elapsed := time.Since(start)
	requireDrained(t, dev)
	rows := db.rows("e2e_seq")
	if want := storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent", len(rows), len(want))
	}
	w := written(l.proc)
	t.Logf("figures: %d metrics sent, %d stored (each once, values as sent), %d points written to InfluxDB "+
		"(%d re-deliveries of the same values) in %.1fs; path cut at %v stored, %v connections closed each time, "+
		"down %s; %d connections through the proxy; the device retried %d failed writes; new rows %s after "+
		"each restore; the device's buffer drained",
		n, len(rows), w, w-n, elapsed.Seconds(), at, cut, seconds(down), len(px.Conns()),
		dev.count(deviceWriteErrors), seconds(recovered))
}
