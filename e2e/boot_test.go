package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// TestDeviceStartsWithExpiredCredential: a device whose credential expired
// while it was off starts all the same (the stock Telegraf used to refuse:
// "could not initialize output outputs.ockam: ... credential expired"),
// gathers, keeps what it gathered in Telegraf's buffer while every write
// fails, and delivers all of it once the operator renews the credential
// file, without a restart.
func TestDeviceStartsWithExpiredCredential(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	dev := cli.identity("device", "")
	cli.issue(authority, dev, "1s", "role=sensor", "site=plant-7")
	eventually(t, 10*time.Second, "the 1s credential to expire", func() (bool, string) {
		out, err := exec.Command(bin.ockam, "credential", "verify", "--authority", authority.identity,
			dev.credential).CombinedOutput()
		return err != nil, string(out)
	})

	const n, perRun = 100, 10
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	p := startDevice(t, bin.telegraf, dev, authority, l, "500ms", execInputs(t, sequence("e2e_boot", n), perRun))
	starting := regexp.MustCompile(`Starting without a valid credential .*credential_path \S+: credential expired at .*renew it with ockam credential issue`)
	p.waitLog(starting, 30*time.Second)
	// Telegraf runs, gathers, and buffers: its writes fail, saying why.
	writeFailed := regexp.MustCompile(`Error writing to outputs\.ockam: .*credential expired at .*renew it with ockam credential issue`)
	p.waitLog(writeFailed, 30*time.Second)
	if p.exited() {
		t.Fatal("the device's Telegraf exited")
	}
	if got := len(db.seqs("e2e_boot")[dev.id]); got != 0 {
		t.Fatalf("InfluxDB holds %d rows of the device before its credential was renewed", got)
	}

	// The operator renews the file in place, as docs/OPERATIONS.md says.
	cli.run(authority.passphrase, "credential", "issue", "--vault", authority.vault, "--subject", dev.identity,
		"--ttl", "720h", "--out", dev.credential, "--force", "--attr", "role=sensor", "--attr", "site=plant-7")
	eventually(t, 60*time.Second, "every row of the device in InfluxDB", func() (bool, string) {
		got := db.seqs("e2e_boot")[dev.id]
		return len(got) == n, fmt.Sprintf("%d of %d rows", len(got), n)
	})
	got := db.seqs("e2e_boot")[dev.id]
	for i := range int64(n) {
		if !got[i] {
			t.Errorf("row %d missing", i)
		}
	}
	if p.exited() || p.count(starting) != 1 {
		t.Errorf("the device restarted (exited %v, started %d times)", p.exited(), p.count(starting))
	}
	t.Logf("figures: %d failed writes logged before the renewal, %d rows delivered after it",
		p.count(writeFailed), len(got))
}
