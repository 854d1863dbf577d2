package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// listeningAuthority is what `ockam authority serve` prints once bound.
var listeningAuthority = regexp.MustCompile(`listening on tcp://(\S+) as (I[0-9a-f]{64})`)

// enrollMember creates nothing by hand: the vault, its identity and its
// credential all come from `ockam enroll` with a token minted by the
// authority, through the running service at address.
func (o *ockamCLI) enrollMember(name string, authority *member, db, address string, attrs ...string) *member {
	o.t.Helper()
	tokens := filepath.Join(o.dir, name+".tokens")
	args := []string{"enroll", "token", "create", "--vault", authority.vault, "--db", db, "--count", "1", "--out", tokens}
	for _, a := range attrs {
		args = append(args, "--attr", a)
	}
	o.run(authority.passphrase, args...)
	m := &member{name: name, vault: filepath.Join(o.dir, name), credential: filepath.Join(o.dir, name+".cred")}
	o.run("", "enroll", "--vault", m.vault, "--authority", authority.identity, "--address", address,
		"--token-file", tokens, "--out", m.credential)
	m.id = o.run("", "identity", "show", "--vault", m.vault, "--identifier")
	m.identity = filepath.Join(o.dir, name+".identity")
	o.run("", "identity", "export", "--vault", m.vault, "--out", m.identity)
	return m
}

// serveAuthority runs `ockam authority serve` as authority, with its store
// authority.db in the CLI's directory, and waits until it listens as
// authority's identifier. It returns the service, the store and the
// service's address (tcp://host:port).
func (o *ockamCLI) serveAuthority(authority *member) (svc *process, store, address string) {
	o.t.Helper()
	store = filepath.Join(o.dir, "authority.db")
	svc = startProcess(o.t, "authority-service", o.bin, "authority", "serve", "--vault", authority.vault,
		"--db", store, "--listen", "tcp://127.0.0.1:0")
	m := svc.waitLog(listeningAuthority, 30*time.Second)
	if m[2] != authority.id {
		o.t.Fatalf("the service runs as %s, want %s", m[2], authority.id)
	}
	return svc, store, "tcp://" + m[1]
}

// TestEnrollThroughService runs `ockam authority serve`, enrolls a gateway
// and a device with `ockam enroll` (the tokens minted while the service
// runs), and delivers a finite stream from the device's Telegraf through
// the gateway's into InfluxDB with the credentials enrollment gave them.
func TestEnrollThroughService(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	_, store, address := cli.serveAuthority(authority)

	gateway := cli.enrollMember("gateway", authority, store, address, "role=listener")
	sensor := cli.enrollMember("sensor", authority, store, address, "role=sensor", "site=plant-7")

	const n, perRun = 100, 25
	pts := sequence("e2e_enrolled", n)
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	startDevice(t, bin.telegraf, sensor, authority, l, "500ms", execInputs(t, pts, perRun))
	eventually(t, 90*time.Second, "the device's stream in InfluxDB", func() (bool, string) {
		return len(db.seqs("e2e_enrolled")[sensor.id]) >= n, ""
	})
	if rows, want := db.rows("e2e_enrolled"), storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent", len(rows), len(want))
	}

	status := cli.run("", "authority", "status", "--vault", authority.vault, "--db", store)
	if !strings.Contains(status, "credentials issued:  2\n") || !strings.Contains(status, "consistent:          yes") {
		t.Fatalf("ockam authority status:\n%s", status)
	}
	if _, err := os.Stat(store + ".sock"); err != nil {
		t.Fatalf("the service's control socket: %v", err)
	}
}
