package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/testproxy"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

var (
	// relayListening is the line `ockam relay serve` prints once bound.
	relayListening = regexp.MustCompile(`relay listening on (\S+)`)
	// registeredAtRelay is the line inputs.ockam_listener logs once a relay
	// accepted its name.
	registeredAtRelay = regexp.MustCompile(`\[inputs\.ockam_listener\] Registered "([^"]+)" at relay (\S+)`)
)

// relayNode is an `ockam relay serve` process.
type relayNode struct {
	t      *testing.T
	bin    string
	name   string
	args   []string // after --listen
	addr   string   // host:port, once started
	proc   *process
	starts int
}

// startRelay runs a relay on a free loopback port that lets names be
// registered by credentials from authority; extra are more flags
// (--next-hop ...).
func startRelay(t *testing.T, bin, name string, authority *member, extra ...string) *relayNode {
	t.Helper()
	r := &relayNode{t: t, bin: bin, name: name, addr: "127.0.0.1:0",
		args: append([]string{"--authority", authority.identity, "--log-level", "debug"}, extra...)}
	r.start()
	return r
}

// start runs the relay on r.addr and waits until it listens.
func (r *relayNode) start() {
	r.t.Helper()
	r.starts++
	args := append([]string{"relay", "serve", "--listen", "tcp://" + r.addr}, r.args...)
	r.proc = startProcess(r.t, fmt.Sprintf("%s-%d", r.name, r.starts), r.bin, args...)
	r.addr = strings.TrimPrefix(r.proc.waitLog(relayListening, 30*time.Second)[1], "tcp://")
}

// url is the relay's address as routes name it.
func (r *relayNode) url() string { return "tcp://" + r.addr }

// replaceOnce replaces the one line of conf that starts with prefix (after
// indentation) by repl, failing t unless there is exactly one.
func replaceOnce(t *testing.T, path, prefix, repl string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	found := 0
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			lines[i] = repl
			found++
		}
	}
	if found != 1 {
		t.Fatalf("%s: %d lines start with %q, want 1", path, found, prefix)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listenerConf renders the gateway's configuration for m, trusting
// authority, writing to db, with where (TOML lines) in place of its
// service_address line.
func listenerConf(t *testing.T, m, authority *member, db *influxDB, allow, where string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), m.name+"-listener.conf")
	renderTemplate(t, "listener.conf.tmpl", conf, map[string]string{
		"ListenAddress":     "unused:0",
		"VaultPath":         m.vault,
		"VaultPassphrase":   m.passphrase,
		"CredentialPath":    m.credential,
		"AuthorityPath":     authority.identity,
		"RevocationList":    "",
		"AllowMeasurements": allow,
		"InfluxURL":         db.url(),
	})
	replaceOnce(t, conf, "service_address =", where)
	return conf
}

// relayedListenerConf is listenerConf for a gateway with no open port
// that registers name at the relay.
func relayedListenerConf(t *testing.T, m, authority *member, db *influxDB, allow, relayURL, name string) string {
	return listenerConf(t, m, authority, db, allow,
		fmt.Sprintf("  service_address = \"\"\n  relay_address = %q\n  relay_name = %q", relayURL, name))
}

// startRelayedListener starts the gateway's Telegraf with no open port: it
// registers name at the relay and takes its channels from there. Its
// credential must carry relay=name.
func startRelayedListener(t *testing.T, bin string, m, authority *member, db *influxDB, allow, relayURL, name string) *listener {
	t.Helper()
	l := &listener{t: t, bin: bin, member: m}
	conf := relayedListenerConf(t, m, authority, db, allow, relayURL, name)
	l.proc = startProcess(t, "listener-"+name, bin, "--config", conf)
	if got := l.proc.waitLog(registeredAtRelay, 30*time.Second)[1]; got != name {
		t.Fatalf("the listener registered %q, want %q", got, name)
	}
	return l
}

// startRoutedDevice starts a device's Telegraf whose outputs.ockam sends
// through the relays of route (TOML array) instead of to an address.
func startRoutedDevice(t *testing.T, bin string, m, authority, gateway *member, route []string, interval, inputs string) *process {
	t.Helper()
	conf := filepath.Join(t.TempDir(), m.name+".conf")
	renderTemplate(t, "device.conf.tmpl", conf, map[string]string{
		"Interval":         interval,
		"Inputs":           inputs,
		"ListenerAddress":  "unused:0",
		"ListenerIdentity": gateway.id,
		"VaultPath":        m.vault,
		"VaultPassphrase":  m.passphrase,
		"CredentialPath":   m.credential,
		"AuthorityPath":    authority.identity,
	})
	quoted := make([]string, len(route))
	for i, h := range route {
		quoted[i] = fmt.Sprintf("%q", h)
	}
	replaceOnce(t, conf, "address =", "  route = ["+strings.Join(quoted, ", ")+"]")
	return startProcess(t, m.name, bin, "--config", conf)
}

// relayFleet is an authority, a gateway whose credential lets it register
// plant-7-gateway, and two sensors at two sites.
type relayFleet struct {
	authority, gateway, sensor1, sensor2 *member
}

const gatewayName = "plant-7-gateway"

func newRelayFleet(t *testing.T, cli *ockamCLI) relayFleet {
	f := relayFleet{authority: cli.identity("authority", "")}
	f.gateway = cli.identity("gateway", "")
	cli.issue(f.authority, f.gateway, "720h", "role=listener", "relay="+gatewayName)
	f.sensor1 = cli.identity("sensor-1", "")
	cli.issue(f.authority, f.sensor1, "720h", "role=sensor", "site=plant-3")
	f.sensor2 = cli.identity("sensor-2", "")
	cli.issue(f.authority, f.sensor2, "720h", "role=sensor", "site=plant-9")
	return f
}

// TestRelayOneAndTwoHops: the gateway opens no port and registers at relay
// B; sensor-1 reaches it through B, sensor-2 through A then B (A may
// forward to B only). Every point lands in InfluxDB exactly as sent,
// stamped with the identity each device proved end to end. Then
// everything the relays saw, captured on every TCP connection to them, is
// searched for the line protocol, the credential attribute values and the
// keys: none of it is there.
func TestRelayOneAndTwoHops(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	f := newRelayFleet(t, cli)

	relayB := startRelay(t, bin.ockam, "relay-b", f.authority)
	// Every connection to B goes through a recording proxy: from the
	// gateway, from sensor-1 and from relay A.
	tapB := testproxy.StartRaw(t, relayB.addr)
	relayA := startRelay(t, bin.ockam, "relay-a", f.authority, "--next-hop", "tcp://"+tapB.Addr())
	tapA := testproxy.StartRaw(t, relayA.addr)

	l := startRelayedListener(t, bin.telegraf, f.gateway, f.authority, db, `["e2e_*"]`, "tcp://"+tapB.Addr(), gatewayName)
	const n = 200
	pts1, pts2 := sequence("e2e_relay", n), sequence("e2e_relay", n)
	d1 := startRoutedDevice(t, bin.telegraf, f.sensor1, f.authority, f.gateway,
		[]string{"tcp://" + tapB.Addr(), gatewayName}, "500ms", execInputs(t, pts1, 50))
	d2 := startRoutedDevice(t, bin.telegraf, f.sensor2, f.authority, f.gateway,
		[]string{"tcp://" + tapA.Addr(), "tcp://" + tapB.Addr(), gatewayName}, "500ms", execInputs(t, pts2, 50))

	want := append(storedAll(pts1, f.sensor1.id, "plant-3"), storedAll(pts2, f.sensor2.id, "plant-9")...)
	sort.Strings(want)
	eventually(t, 90*time.Second, "both devices' points through the relays", func() (bool, string) {
		rows := db.rows("e2e_relay")
		return len(rows) >= len(want), fmt.Sprintf("%d of %d rows", len(rows), len(want))
	})
	requireDrained(t, d1)
	requireDrained(t, d2)
	if rows := db.rows("e2e_relay"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent:\n%s", len(rows), len(want), diffRows(rows, want))
	}

	// What the relays saw.
	var seen [][]byte
	for _, px := range []*testproxy.Proxy{tapA, tapB} {
		for _, c := range px.Conns() {
			seen = append(seen, c.Bytes(testproxy.ToTarget), c.Bytes(testproxy.ToClient))
		}
	}
	total := 0
	for _, b := range seen {
		total += len(b)
	}
	if total < 2*n*20 {
		t.Fatalf("the taps recorded %d bytes: too few for %d points, the capture is broken", total, 2*n)
	}
	secrets := map[string][]byte{
		"the measurement name": []byte("e2e_relay"),
		"a field":              []byte("seq=1"),
		"site attribute 1":     []byte("plant-3"),
		"site attribute 2":     []byte("plant-9"),
		"role attribute":       []byte("sensor"),
	}
	for _, m := range []*member{f.sensor1, f.sensor2, f.gateway} {
		for name, key := range vaultKeys(t, m.vault) {
			secrets[m.name+" private key "+name] = key
		}
	}
	for _, m := range []*member{f.sensor1, f.sensor2} {
		secrets[m.name+" identifier"] = []byte(strings.TrimPrefix(m.id, "I"))
		secrets[m.name+" credential"] = credentialBody(t, m.credential)
	}
	for what, s := range secrets {
		for _, b := range seen {
			if bytes.Contains(b, s) {
				t.Errorf("a relay saw %s in clear", what)
			}
		}
	}
	t.Logf("figures: %d + %d points stored exactly (one hop, two hops); the relays saw %d bytes on %d + %d connections "+
		"and none of %d secrets (line protocol, attribute values, private keys, device identifiers and credentials); "+
		"the gateway wrote %d points", n, n, total, len(tapA.Conns()), len(tapB.Conns()), len(secrets), written(l.proc))
}

// TestRelayRestartLosesNothing kills the relay twice in the middle of a
// finite stream and starts it again on the same port: the gateway
// registers again by itself, the device redials and resends what was not
// acknowledged, and InfluxDB ends with every point exactly once.
func TestRelayRestartLosesNothing(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	f := newRelayFleet(t, cli)
	r := startRelay(t, bin.ockam, "relay", f.authority)
	l := startRelayedListener(t, bin.telegraf, f.gateway, f.authority, db, `["e2e_*"]`, r.url(), gatewayName)

	const n, perRun = 600, 20
	pts := sequence("e2e_seq", n)
	dev := startRoutedDevice(t, bin.telegraf, f.sensor1, f.authority, f.gateway, []string{r.url(), gatewayName},
		"500ms", execInputs(t, pts, perRun))
	stored := func() int { return len(db.seqs("e2e_seq")[f.sensor1.id]) }
	var at []int
	var recovered []time.Duration
	for k := 1; k <= 2; k++ {
		eventually(t, 60*time.Second, "the stream to go on", func() (bool, string) {
			return stored() >= k*n/3, fmt.Sprintf("%d stored", stored())
		})
		at = append(at, stored())
		before := l.proc.count(registeredAtRelay)
		r.proc.kill()
		time.Sleep(time.Second) // in-flight batches fail
		r.start()
		eventually(t, 30*time.Second, "the gateway to register again", func() (bool, string) {
			return l.proc.count(registeredAtRelay) > before, ""
		})
		recovered = append(recovered, recovery(t, "the relay restarted", stored))
	}
	eventually(t, 120*time.Second, "the whole stream", func() (bool, string) {
		return stored() >= n, fmt.Sprintf("%d of %d stored", stored(), n)
	})
	requireDrained(t, dev)
	if rows, want := db.rows("e2e_seq"), storedAll(pts, f.sensor1.id, "plant-3"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent:\n%s", len(rows), len(want), diffRows(rows, want))
	}
	t.Logf("figures: %d sent, %d stored exactly once; relay killed at %v stored; new rows %s after each restart; "+
		"the device retried %d failed writes; the gateway wrote %d points (%d re-deliveries)",
		n, n, at, seconds(recovered), dev.count(deviceWriteErrors), written(l.proc), written(l.proc)-n)
}

// TestRelayNameTakeoverRefused: with the gateway registered, other
// listeners try the same name: with a credential that lacks
// relay=plant-7-gateway, with one from another authority, and with a valid
// one for that name but another identity while the gateway holds it. The
// relay refuses each with its reason (a listener without any credential is
// refused in transport/relay's TestRegistrationRefused), and the device's
// points keep reaching the real gateway.
func TestRelayNameTakeoverRefused(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	f := newRelayFleet(t, cli)
	r := startRelay(t, bin.ockam, "relay", f.authority)
	startRelayedListener(t, bin.telegraf, f.gateway, f.authority, db, `["e2e_*"]`, r.url(), gatewayName)

	impostor := cli.identity("impostor", "")
	cli.issue(f.authority, impostor, "720h", "role=listener") // no relay attribute
	other := cli.identity("other-authority", "")
	foreign := cli.identity("foreign", "")
	cli.issue(other, foreign, "720h", "role=listener", "relay="+gatewayName)

	rival := cli.identity("rival", "")
	cli.issue(f.authority, rival, "720h", "role=listener", "relay="+gatewayName) // valid, but another identity

	imp := startTakeover(t, bin.telegraf, impostor, f.authority, db, r.url())
	imp.waitLog(regexp.MustCompile(`refused to register.*lacks the attribute relay`), 30*time.Second)
	frn := startTakeover(t, bin.telegraf, foreign, other, db, r.url())
	frn.waitLog(regexp.MustCompile(`refused to register.*unknown issuer`), 30*time.Second)

	riv := startTakeover(t, bin.telegraf, rival, f.authority, db, r.url())
	riv.waitLog(regexp.MustCompile(`refused to register.*name "`+gatewayName+`" held by I`), 30*time.Second)

	pts := sequence("e2e_relay", 40)
	dev := startRoutedDevice(t, bin.telegraf, f.sensor1, f.authority, f.gateway, []string{r.url(), gatewayName},
		"500ms", execInputs(t, pts, 20))
	want := storedAll(pts, f.sensor1.id, "plant-3")
	eventually(t, 60*time.Second, "the device's points at the real gateway", func() (bool, string) {
		rows := db.rows("e2e_relay")
		return slices.Equal(rows, want), fmt.Sprintf("%d of %d rows", len(rows), len(want))
	})
	requireDrained(t, dev)
	if imp.count(registeredAtRelay)+frn.count(registeredAtRelay)+riv.count(registeredAtRelay) != 0 {
		t.Fatal("an impostor registered the gateway's name")
	}
	t.Logf("figures: 3 takeovers refused (no relay attribute; foreign authority; a valid credential for the name "+
		"held by another identity), %d points reached the real gateway",
		len(want))
}

// startTakeover starts a listener that tries to register the gateway's
// name; it does not wait for the registration.
func startTakeover(t *testing.T, bin string, m, authority *member, db *influxDB, relayURL string) *process {
	t.Helper()
	conf := relayedListenerConf(t, m, authority, db, `["e2e_*"]`, relayURL, gatewayName)
	return startProcess(t, m.name, bin, "--config", conf)
}

// vaultKeys returns the private keys of an unencrypted file vault: the
// 32 bytes after the 7-byte header of each plain .key file (vault/keyfile.go).
func vaultKeys(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.key"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no key files in %s: %v", dir, err)
	}
	keys := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 39 || !bytes.HasPrefix(b, []byte("OCKV\x01")) {
			t.Fatalf("%s is not a plain key file (%d bytes)", f, len(b))
		}
		keys[filepath.Base(f)] = b[7:]
	}
	return keys
}

// credentialBody returns 32 bytes from the middle of a credential's binary
// form, which a relay must never see in clear for a device.
func credentialBody(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := secure.ParseCredentialFile(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	raw := c.Marshal()
	if len(raw) < 96 {
		t.Fatalf("%s: credential of %d bytes", path, len(raw))
	}
	return raw[32:64]
}

// diffRows lists the rows missing from got and the extra ones, at most 10
// of each.
func diffRows(got, want []string) string {
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range s {
			m[x] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var b strings.Builder
	k := 0
	for _, x := range want {
		if !g[x] && k < 10 {
			fmt.Fprintf(&b, "missing: %s\n", x)
			k++
		}
	}
	k = 0
	for _, x := range got {
		if !w[x] && k < 10 {
			fmt.Fprintf(&b, "extra:   %s\n", x)
			k++
		}
	}
	return b.String()
}

// TestRelayRevokedGatewayLosesItsName: the relay runs with the authority's
// revocation list. Revoking the gateway's identity (ockam revocation add,
// as an operator would) ends its registration within seconds, its
// re-registrations are refused as revoked, and the name is free.
func TestRelayRevokedGatewayLosesItsName(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	f := newRelayFleet(t, cli)
	list := filepath.Join(t.TempDir(), "revoked.list")
	cli.revoke(f.authority, list, f.sensor2) // a list exists from the start
	r := startRelay(t, bin.ockam, "relay", f.authority, "--revocation-list", list)
	l := startRelayedListener(t, bin.telegraf, f.gateway, f.authority, db, `["e2e_*"]`, r.url(), gatewayName)

	start := time.Now()
	cli.revoke(f.authority, list, f.gateway)
	r.proc.waitLog(regexp.MustCompile(`Credential of "`+gatewayName+`" \(\S+ from \S+\) revoked: closing its connection`), 30*time.Second)
	l.proc.waitLog(regexp.MustCompile(`refused to register "`+gatewayName+`": credential revoked`), 30*time.Second)
	took := time.Since(start)
	if n := r.proc.count(regexp.MustCompile(`Applied revocation list 2 `)); n != 1 {
		t.Fatalf("the relay applied the new list %d times, want 1", n)
	}
	t.Logf("figures: the revoked gateway lost its name and was refused again %.1fs after ockam revocation add", took.Seconds())
}
