//go:build cgo

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11/softhsmtest"
)

// TestPKCS11Device runs a device whose identity key is in a SoftHSM2 token:
// `ockam identity create --vault pkcs11:…` generates it there, the
// authority issues it a credential, the device's Telegraf (vault_path =
// the same spec) delivers a finite stream to InfluxDB through the listener,
// and `ockam purpose-key rotate` on the running device takes effect at the
// next channel, without a new credential and without losing a metric. The
// key object is read with the PKCS#11 binding directly: sensitive, not
// extractable, and its value cannot be read.
func TestPKCS11Device(t *testing.T) {
	bin := requireBinaries(t)
	tk := softhsmtest.New(t, "", "device") // SOFTHSM2_CONF, inherited by every process below
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")

	sensor := &member{
		name:     "device",
		vault:    tk.Spec("device", filepath.Join(cli.dir, "device")),
		identity: filepath.Join(cli.dir, "device.identity"),
	}
	sensor.id = cli.run("", "identity", "create", "--vault", sensor.vault)
	cli.run("", "identity", "export", "--vault", sensor.vault, "--out", sensor.identity)
	cli.issue(authority, sensor, "720h", "role=sensor", "site=plant-7")
	require.NoFileExists(t, filepath.Join(cli.dir, "device", "identity.key"), "the identity key is not in the directory")
	k := tk.PrivateKey(t, "device", pkcs11.DefaultLabelPrefix+"identity")
	require.True(t, k.Sensitive && k.AlwaysSensitive, "CKA_SENSITIVE")
	require.False(t, k.Extractable, "CKA_EXTRACTABLE")
	require.True(t, k.NeverExtractable, "CKA_NEVER_EXTRACTABLE")
	require.True(t, k.ValueIsSensitive(), "C_GetAttributeValue(CKA_VALUE): %v", k.ValueErr)
	credential, err := os.ReadFile(sensor.credential)
	require.NoError(t, err)

	const n, perRun = 400, 20 // 40 a second: 10 s of traffic
	pts := sequence("e2e_hsm", n)
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	start := time.Now()
	dev := startDevice(t, bin.telegraf, sensor, authority, l, "500ms", execInputs(t, pts, perRun))
	stored := func() int { return len(db.seqs("e2e_hsm")[sensor.id]) }
	eventually(t, 60*time.Second, "a quarter of the stream", func() (bool, string) { return stored() >= n/4, "" })

	before := cli.run("", "identity", "show", "--vault", sensor.vault)
	cli.run("", "purpose-key", "rotate", "--vault", sensor.vault)
	rotatedAt := stored()
	// The device's channel is open; the next one starts after the listener
	// restarts.
	l.proc.stop()
	l.restart()
	dev.waitLog(regexp.MustCompile(`Loaded the rotated purpose key`), 60*time.Second)
	eventually(t, 120*time.Second, "the whole stream", func() (bool, string) { return stored() >= n, "" })
	elapsed := time.Since(start)

	rows := db.rows("e2e_hsm")
	if want := storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent", len(rows), len(want))
	}
	after := cli.run("", "identity", "show", "--vault", sensor.vault)
	require.NotEqual(t, before, after, "the purpose key changed")
	require.Contains(t, after, "identifier:   "+sensor.id)
	again, err := os.ReadFile(sensor.credential)
	require.NoError(t, err)
	require.Equal(t, credential, again, "no credential re-issued")
	t.Logf("figures: %d metrics from a device whose identity key is in SoftHSM, all stored once in %.1fs; "+
		"purpose key rotated at %d stored", n, elapsed.Seconds(), rotatedAt)
}
