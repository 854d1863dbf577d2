package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDeliveryStampsVerifiedIdentity sends a finite stream of metrics from a
// device through outputs.ockam and the listener into InfluxDB. Every metric
// must arrive once, with the ockam_identity and site tags the listener
// verified, including one metric on which the device forged both tags. A
// second device, whose credential has no site attribute, forges a site tag
// on every metric: the listener must remove it.
func TestDeliveryStampsVerifiedIdentity(t *testing.T) {
	testStamping(t, "the gateway Telegraf", func(bin binaries, gateway, authority *member, db *influxDB) *listener {
		return startListener(t, bin.telegraf, gateway, authority, db, `["cpu", "temp*"]`, "")
	})
}

// testStamping is TestDeliveryStampsVerifiedIdentity with the receiver that
// start starts (its vault is encrypted; the policy lets role=sensor write
// cpu and temp*, into the database db).
func testStamping(t *testing.T, receiver string, start func(bin binaries, gateway, authority *member, db *influxDB) *listener) {
	t.Helper()
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "gateway passphrase") // an encrypted vault
	cli.issue(authority, gateway, "720h", "role=listener")
	sensor := cli.identity("device", "")
	cli.issue(authority, sensor, "720h", "role=sensor", "site=plant-7")
	siteless := cli.identity("siteless", "")
	cli.issue(authority, siteless, "720h", "role=sensor")

	// Two measurements, both allowed by the policy ["cpu", "temp*"].
	const n, perRun = 300, 50
	pts := sequence("cpu", n)
	for i := range pts {
		if i%2 == 1 {
			pts[i].measurement = "temp_probe"
		}
	}
	pts[7].tags["ockam_identity"] = "evil"
	pts[7].tags["site"] = "elsewhere"
	forged := sequence("temp_siteless", 20)
	for i := range forged {
		forged[i].tags["site"] = "elsewhere"
	}
	want := storedAll(pts, sensor.id, "plant-7")
	wantSiteless := storedAll(forged, siteless.id, "")

	l := start(bin, gateway, authority, db)
	begin := time.Now()
	startDevice(t, bin.telegraf, sensor, authority, l, "500ms", execInputs(t, pts, perRun))
	startDevice(t, bin.telegraf, siteless, authority, l, "500ms", execInputs(t, forged, 10))

	var got, gotSiteless []string
	eventually(t, 90*time.Second, "every metric in InfluxDB", func() (bool, string) {
		got = db.rows("cpu", "temp_probe")
		gotSiteless = db.rows("temp_siteless")
		return len(got) >= len(want) && len(gotSiteless) >= len(wantSiteless), ""
	})
	elapsed := time.Since(begin)
	require.Equal(t, want, got, "rows of the device in InfluxDB")
	require.Equal(t, wantSiteless, gotSiteless, "rows of the device without a site attribute")
	t.Logf("figures (%s): %d metrics sent, %d stored, all delivered %.1fs after the device started "+
		"(it gathers %d every 500ms, so the last was gathered after ≈%.1fs); the forged metric was sent as\n  %s\n"+
		"and is stored as\n  %s",
		receiver, n+len(forged), len(got)+len(gotSiteless), elapsed.Seconds(), perRun, float64(n/perRun-1)*0.5,
		pts[7].sent(), pts[7].stored(sensor.id, "plant-7"))
}
