package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRevocationStopsDevice runs two devices and revokes the first one while
// it sends: once the listener re-read its revocation list, nothing more of
// device A reaches InfluxDB, while device B keeps going.
func TestRevocationStopsDevice(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	a := cli.identity("device-a", "")
	cli.issue(authority, a, "720h", "role=sensor", "site=plant-7")
	b := cli.identity("device-b", "")
	cli.issue(authority, b, "720h", "role=sensor", "site=plant-9")

	// The list exists before the listener starts: a retired device is on it.
	revoked := filepath.Join(t.TempDir(), "revoked.list")
	cli.revoke(authority, revoked, cli.identity("retired", ""))

	// Enough points to outlast the test: 20 a second each.
	const n, perRun = 3000, 10
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, revoked)
	devA := startDevice(t, bin.telegraf, a, authority, l, "500ms", execInputs(t, sequence("e2e_seq", n), perRun))
	startDevice(t, bin.telegraf, b, authority, l, "500ms", execInputs(t, sequence("e2e_seq", n), perRun))

	counts := func() (int, int) {
		s := db.seqs("e2e_seq")
		return len(s[a.id]), len(s[b.id])
	}
	eventually(t, 60*time.Second, "rows from both devices", func() (bool, string) {
		na, nb := counts()
		return na >= 40 && nb >= 40, ""
	})

	cli.revoke(authority, revoked, a)
	revokedAt := time.Now()
	a0 := len(db.seqs("e2e_seq")[a.id])
	// One re-read of the list (revocation_check_interval = 1s).
	l.proc.waitLog(regexp.MustCompile(`Revocation list .* applied: sequence 2, 2 subjects`), 30*time.Second)
	appliedAfter := time.Since(revokedAt)
	// Grace: what A had in flight, delivered with the next flushes. The
	// listener closes A's channel as soon as it applied the list (or, if a
	// message of A comes first, refuses it permanently and closes the
	// channel). What it emitted from A before is ahead of B's later rows in
	// the gateway's output, so once B's rows grow, A's are all stored,
	// however far behind the gateway's output runs on a slow machine. B's
	// rows count the time: 60 rows are 3 s of its traffic.
	devA.waitLog(regexp.MustCompile(`refused \d+ metrics permanently, they will be dropped: "revoked"|`+
		`Channel to listener \S+ ended: .*"revoked"`), 30*time.Second)
	_, b0 := counts()
	growB := func(from, by int) func() (bool, string) {
		return func() (bool, string) {
			_, nb := counts()
			return nb >= from+by, ""
		}
	}
	eventually(t, 30*time.Second, "device B to keep sending after the revocation", growB(b0, 60))
	a1, b1 := counts()
	eventually(t, 30*time.Second, "device B to keep sending", growB(b1, 60))
	a2, b2 := counts()
	if a2 != a1 {
		t.Errorf("device A was revoked, yet %d more of its rows reached InfluxDB (%d → %d) "+
			"while B went %d → %d", a2-a1, a1, a2, b1, b2)
	}
	// A's channel was closed (revoked); it dials again, and the listener
	// refuses it at the handshake and tells it why: its log says so, once.
	refusedByListener := regexp.MustCompile(`refused by listener ` + regexp.QuoteMeta(l.member.id[:9]) + `…: revoked`)
	devA.waitLog(refusedByListener, 60*time.Second)
	firstRefusal := time.Now()
	if n := devA.count(regexp.MustCompile(`W! \[outputs\.ockam\] Cannot open a channel: .*refused by listener .*: revoked`)); n != 1 {
		t.Errorf("device A logged its refusal %d times, want 1", n)
	}
	// And it backs off: at least 2.5 s, then 5 s, ... between its dials
	// (a Telegraf flush every second no longer wakes its dialer). Counted
	// loosely over the window since its first refusal.
	window := time.Since(firstRefusal)
	dials := l.proc.count(regexp.MustCompile(`Handshake from \S+ failed \(revoked\)`))
	if most := 2 + int(window/(2500*time.Millisecond)); dials > most {
		t.Errorf("device A dialed %d times in the %.1fs after its first refusal, want at most %d", dials, window.Seconds(), most)
	}
	refused := regexp.MustCompile(`Refused a message from ` + regexp.QuoteMeta(a.id[:9]) + `… \(revoked\)`)
	closed := regexp.MustCompile(`Closed 1 channels of identities revoked by the new revocation list \(first: ` +
		regexp.QuoteMeta(a.id[:9]) + `…`)
	nRefused, nClosed := l.proc.count(refused), l.proc.count(closed)
	if nRefused > 1 {
		t.Errorf("the listener logged %d refusals of A as revoked, want at most 1 (then only counted)", nRefused)
	}
	if nRefused+nClosed == 0 {
		t.Errorf("the listener logged neither that it closed A's channel nor that it refused A's message")
	}
	t.Logf("figures: list applied %.1fs after ockam revocation add; A had %d rows when revoked, "+
		"%d after the grace period (%d in flight), %d at the end; B went %d → %d → %d; test window %.1fs; "+
		"A refused at %d handshakes; A's channel closed when the list was applied: %d, A's message refused first: %d",
		appliedAfter.Seconds(), a0, a1, a1-a0, a2, b0, b1, b2, time.Since(revokedAt).Seconds(), dials, nClosed, nRefused)
}

// renderPatched renders the deploy template name to out like
// renderTemplate, then inserts extra after the first occurrence of the line
// after, which the template must hold.
func renderPatched(t *testing.T, name, out string, data map[string]string, after, extra string) {
	t.Helper()
	renderTemplate(t, name, out, data)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), after) {
		t.Fatalf("%s no longer has %q", name, after)
	}
	if err := os.WriteFile(out, []byte(strings.Replace(string(b), after, after+extra, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startDeviceWithList runs a device like startDevice whose outputs.ockam
// also holds revocation_list (checked every second): the gateway's
// credential is checked against it.
func startDeviceWithList(t *testing.T, bin string, m, authority *member, l *listener, inputs, list string) *process {
	t.Helper()
	conf := filepath.Join(t.TempDir(), m.name+".conf")
	renderPatched(t, "device.conf.tmpl", conf, map[string]string{
		"Interval": "500ms", "Inputs": inputs, "ListenerAddress": l.addr, "ListenerIdentity": l.member.id,
		"VaultPath": m.vault, "VaultPassphrase": m.passphrase, "CredentialPath": m.credential,
		"AuthorityPath": authority.identity,
	}, "  timeout = \"10s\"\n", fmt.Sprintf("  revocation_list = %q\n  revocation_check_interval = \"1s\"\n", list))
	return startProcess(t, m.name, bin, "--config", conf)
}

// TestDeviceRefusesRevokedGateway (docs/SECURITY.md W15) runs the real
// binaries: a gateway whose key was stolen keeps running without any list,
// and the authority revokes it. Device A holds the authority's list: once
// it re-read it, it closes its channel and delivers nothing more; device C,
// started with the list, never delivers anything; both logs say "revoked".
// Device B holds no list and keeps delivering (it counts the time). Before
// the fix outputs.ockam had no revocation_list and delivered to the
// revoked gateway.
func TestDeviceRefusesRevokedGateway(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	members := map[string]*member{}
	for _, name := range []string{"device-a", "device-b", "device-c"} {
		members[name] = cli.identity(name, "")
		cli.issue(authority, members[name], "720h", "role=sensor", "site=plant-7")
	}
	a, b, c := members["device-a"], members["device-b"], members["device-c"]
	dir := t.TempDir()
	list := filepath.Join(dir, "revoked.list")
	cli.revoke(authority, list, cli.identity("retired", ""))

	const n, perRun = 3000, 10
	// The stolen gateway runs with no list of its own (the file never
	// appears).
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, filepath.Join(dir, "gateway.list"))
	devA := startDeviceWithList(t, bin.telegraf, a, authority, l, execInputs(t, sequence("e2e_seq", n), perRun), list)
	startDevice(t, bin.telegraf, b, authority, l, "500ms", execInputs(t, sequence("e2e_seq", n), perRun))
	counts := func() (int, int, int) {
		s := db.seqs("e2e_seq")
		return len(s[a.id]), len(s[b.id]), len(s[c.id])
	}
	eventually(t, 60*time.Second, "rows from devices A and B", func() (bool, string) {
		na, nb, _ := counts()
		return na >= 40 && nb >= 40, ""
	})

	cli.revoke(authority, list, gateway)
	revokedAt := time.Now()
	a0, _, _ := counts()
	devA.waitLog(regexp.MustCompile(`Channel to listener .* lost: listener .* is no longer trusted, channel closed: .*revoked`),
		30*time.Second)
	closedAfter := time.Since(revokedAt)
	devA.waitLog(regexp.MustCompile(`Cannot open a channel: .*the listener's credential is revoked`), 30*time.Second)
	devC := startDeviceWithList(t, bin.telegraf, c, authority, l, execInputs(t, sequence("e2e_seq", n), perRun), list)
	devC.waitLog(regexp.MustCompile(`Cannot open a channel: .*the listener's credential is revoked`), 60*time.Second)

	// Grace: what A sent before it applied the list (one batch at most, as
	// it sends the next only once the last was answered) reaches the
	// gateway, which stores it in its own time; B's rows count the time.
	growB := func(from int) func() (bool, string) {
		return func() (bool, string) {
			_, nb, _ := counts()
			return nb >= from+60, ""
		}
	}
	_, b0, _ := counts()
	eventually(t, 30*time.Second, "device B to keep sending", growB(b0))
	a1, b1, c1 := counts()
	eventually(t, 30*time.Second, "device B to keep sending", growB(b1))
	a2, b2, c2 := counts()
	if a2 != a1 || c1 != 0 || c2 != 0 {
		t.Errorf("the gateway is revoked, yet rows reached it: A %d → %d, C %d → %d (B %d → %d)", a1, a2, c1, c2, b1, b2)
	}
	t.Logf("figures: device A closed its channel %.1fs after ockam revocation add; A had %d rows at the revocation, "+
		"%d after the grace period, %d at the end; C %d; B went %d → %d",
		closedAfter.Seconds(), a0, a1, a2, c2, b1, b2)
}

// startListenerWithSource runs the gateway like startListener, asking the
// authority service at source for its list every second; the list is kept
// in the default revocation_state next to m's credential.
func startListenerWithSource(t *testing.T, bin string, m, authority *member, db *influxDB, source, name string) *listener {
	t.Helper()
	l := &listener{t: t, bin: bin, member: m, data: map[string]string{
		"ListenAddress": "127.0.0.1:0", "VaultPath": m.vault, "VaultPassphrase": m.passphrase,
		"CredentialPath": m.credential, "AuthorityPath": authority.identity,
		"RevocationList":    filepath.Join(t.TempDir(), "none.list"), // never appears
		"AllowMeasurements": `["e2e_*"]`, "InfluxURL": db.url(),
	}}
	conf := filepath.Join(t.TempDir(), "listener.conf")
	renderPatched(t, "listener.conf.tmpl", conf, l.data, "  revocation_check_interval = \"1s\"\n",
		fmt.Sprintf("  revocation_source = %q\n  revocation_poll_interval = \"1s\"\n", source))
	l.proc = startProcess(t, name, bin, "--config", conf)
	l.addr = l.proc.waitLog(listeningOckam, 30*time.Second)[1]
	return l
}

// TestRevocationSurvivesRestart (docs/SECURITY.md W16) runs the real
// binaries: the gateway gets the list revoking device A from the authority
// service, then restarts while the service is down. The restarted gateway
// applies the list it kept and refuses A, while device B delivers. Before
// the fix the list lived in memory only and A was accepted after the
// restart.
func TestRevocationSurvivesRestart(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	svc, store, source := cli.serveAuthority(authority)
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	a, b := cli.identity("device-a", ""), cli.identity("device-b", "")
	cli.issue(authority, a, "720h", "role=sensor", "site=plant-7")
	cli.issue(authority, b, "720h", "role=sensor", "site=plant-9")
	cli.run(authority.passphrase, "revocation", "add", "--vault", authority.vault, "--db", store, "--subject", a.id)

	first := startListenerWithSource(t, bin.telegraf, gateway, authority, db, source, "listener-1")
	first.proc.waitLog(regexp.MustCompile(`Revocation list from revocation_source .* applied: sequence 2, 1 subjects`),
		30*time.Second)
	first.proc.stop()
	svc.stop()

	// The authority is down: its address refuses connections.
	l := startListenerWithSource(t, bin.telegraf, gateway, authority, db, source, "listener-2")
	l.proc.waitLog(regexp.MustCompile(`Revocation list sequence 2 from revocation_state .* applied`), 30*time.Second)
	const n, perRun = 3000, 10
	startDevice(t, bin.telegraf, a, authority, l, "500ms", execInputs(t, sequence("e2e_seq", n), perRun))
	startDevice(t, bin.telegraf, b, authority, l, "500ms", execInputs(t, sequence("e2e_seq", n), perRun))
	l.proc.waitLog(regexp.MustCompile(`Handshake from .* failed \(revoked\)`), 60*time.Second)
	eventually(t, 60*time.Second, "device B's rows", func() (bool, string) {
		return len(db.seqs("e2e_seq")[b.id]) >= 60, ""
	})
	if got := len(db.seqs("e2e_seq")[a.id]); got != 0 {
		t.Errorf("device A is revoked, yet %d of its rows reached InfluxDB after the restart", got)
	}
	// And it says that it keeps the kept list while the source is down.
	l.proc.waitLog(regexp.MustCompile(`revocation_source .*keeping the current list \(sequence 2\)`), 30*time.Second)
}

// TestInletRefusesRevokedGateway (W15): `ockam inlet influxdb
// --revocation-list` with a list that revokes the gateway answers writes
// with 503 (no channel), stores nothing, and logs "revoked".
func TestInletRefusesRevokedGateway(t *testing.T) {
	f := newInletFleet(t)
	list := filepath.Join(t.TempDir(), "revoked.list")
	f.cli.revoke(f.authority, list, f.gateway)
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(inletToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "device-inlet", f.bin.ockam, "inlet", "influxdb", "--listen", "127.0.0.1:0",
		"--vault", f.device.vault, "--credential", f.device.credential, "--authority", f.authority.identity,
		"--address", "tcp://"+l.addr, "--token-file", token, "--timeout", "5s", "--revocation-list", list)
	in := &inlet{proc: p, url: "http://" + p.waitLog(listeningInlet, 30*time.Second)[1]}

	status, body := in.post(t, "/api/v2/write?bucket="+inletBucket+"&precision=s", "e2e_inlet value=1 1700000000\n")
	if status != 503 {
		t.Fatalf("a write to a revoked gateway: status %d %v, want 503", status, body)
	}
	p.waitLog(regexp.MustCompile(`Cannot open a channel: .*the listener's credential is revoked`), 30*time.Second)
	if rows := f.db.rowsIn(inletBucket, "e2e_inlet"); len(rows) != 0 {
		t.Fatalf("the revoked gateway stored %d rows", len(rows))
	}
	if n := l.proc.count(regexp.MustCompile(`Channel from .* open`)); n != 0 {
		t.Fatalf("the gateway opened %d channels", n)
	}
}
