package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// series is one series of an InfluxQL answer: its tags (GROUP BY) and
// rows.
type series struct {
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// influxQLSeries runs an InfluxQL query and returns every series.
func influxQLSeries(t *testing.T, db *influxDB, q string) []series {
	t.Helper()
	resp, err := http.Get(db.url() + "/query?" + url.Values{"db": {database}, "q": {q}}.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var answer struct {
		Results []struct {
			Error  string   `json:"error"`
			Series []series `json:"series"`
		} `json:"results"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
	require.Len(t, answer.Results, 1)
	require.Empty(t, answer.Results[0].Error, q)
	return answer.Results[0].Series
}

// rollout is the rollout status query of docs/OPERATIONS.md: per device
// and result, the last code and reason of one instruction's outcomes.
func rollout(t *testing.T, db *influxDB, id string) map[string]string {
	t.Helper()
	out := map[string]string{}
	q := fmt.Sprintf(`SELECT last("code") AS "code", last("reason") AS "reason" FROM "ockam_control" `+
		`WHERE "instruction" = '%s' GROUP BY "ockam_identity", "result"`, id)
	for _, s := range influxQLSeries(t, db, q) {
		require.Len(t, s.Values, 1)
		out[s.Tags["ockam_identity"]+" "+s.Tags["result"]] = fmt.Sprintf("code=%v reason=%v", s.Values[0][1], s.Values[0][2])
	}
	return out
}

// rolloutSummary is the summary query of docs/OPERATIONS.md: how many
// devices answered an instruction with each result.
const rolloutSummary = `SELECT count("code") FROM (SELECT last("code") AS "code" FROM "ockam_control" ` +
	`WHERE "instruction" = '%s' GROUP BY "ockam_identity", "result") GROUP BY "result"`

var (
	controlID      = regexp.MustCompile(`(?m)^id:\s+([0-9a-f]{32})$`)
	configReloaded = regexp.MustCompile(`Configuration changed \(--watch-config\)`)
)

// TestControlConfigRollout: an operator signs a configuration fragment
// that changes the device's sampling interval from 10 s to 1 s and hands it
// to the gateway's control socket with the ockam command; the device's
// outputs.ockam verifies it, writes it into the directory its Telegraf
// watches, Telegraf reloads, the rows arrive at the new interval, and the
// outcome row (applied, with the device's verified identity) is in
// InfluxDB. Two refusals end to end: an instruction signed by the
// gateway's own identity (its credential is valid, but no operator's), and
// the operator's first instruction handed over again (a replay).
func TestControlConfigRollout(t *testing.T) { testControlRollout(t, false) }

// TestControlConfigRolloutThroughRelay is TestControlConfigRollout with a
// gateway that opens no port: it registers at a relay, and the device's
// route goes through it. Instructions and outcomes travel the channel the
// device dialed, through the relay, as its readings do.
func TestControlConfigRolloutThroughRelay(t *testing.T) { testControlRollout(t, true) }

func testControlRollout(t *testing.T, viaRelay bool) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("gateway", "")
	cli.issue(authority, gateway, "720h", "role=listener", "relay="+gatewayName)
	device := cli.identity("device", "")
	cli.issue(authority, device, "720h", "role=sensor", "site=plant-7")
	operator := cli.identity("operator", "")
	cli.issue(authority, operator, "720h", "role=operator")

	// The gateway: a control socket next to its pending store.
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")
	where := "  service_address = \"tcp://127.0.0.1:0\""
	var relay *relayNode
	if viaRelay {
		relay = startRelay(t, bin.ockam, "relay", authority)
		where = fmt.Sprintf("  service_address = \"\"\n  relay_address = %q\n  relay_name = %q", relay.url(), gatewayName)
	}
	conf := listenerConf(t, gateway, authority, db, `["mem"]`, where+fmt.Sprintf("\n  control_socket = %q", socket))
	l := &listener{t: t, bin: bin.telegraf, member: gateway, addr: "unused:0"}
	l.proc = startProcess(t, "gateway", bin.telegraf, "--config", conf)
	if viaRelay {
		l.proc.waitLog(registeredAtRelay, 30*time.Second)
	} else {
		l.addr = l.proc.waitLog(listeningOckam, 30*time.Second)[1]
	}
	fi, err := os.Stat(socket)
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket|0o600, fi.Mode(), "the control socket")

	// The device: mem every 10 s, a watched configuration directory, and
	// operators (role=operator) allowed to send config.
	watched := filepath.Join(t.TempDir(), "telegraf.d")
	require.NoError(t, os.Mkdir(watched, 0o700))
	devConf := filepath.Join(t.TempDir(), "device.conf")
	renderTemplate(t, "device.conf.tmpl", devConf, map[string]string{
		"Interval": "10s", "Inputs": "[[inputs.mem]]\n  fieldinclude = [\"total\"]",
		"ListenerAddress": l.addr, "ListenerIdentity": gateway.id,
		"VaultPath": device.vault, "VaultPassphrase": "", "CredentialPath": device.credential,
		"AuthorityPath": authority.identity,
	})
	if viaRelay {
		replaceOnce(t, devConf, "address =", fmt.Sprintf("  route = [%q, %q]", relay.url(), gatewayName))
	}
	f, err := os.OpenFile(devConf, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	// Its revocation list (none yet) names the operators it no longer obeys.
	revoked := filepath.Join(t.TempDir(), "revoked.list")
	_, err = fmt.Fprintf(f, "  revocation_list = %q\n  revocation_check_interval = \"1s\"\n"+
		"  control_state = %q\n  control_config_dir = %q\n"+
		"  [[outputs.ockam.control_policy]]\n    attributes = { role = \"operator\" }\n    kinds = [\"config\"]\n",
		revoked, filepath.Join(t.TempDir(), "control.seq"), watched)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	dev := startProcess(t, "device", bin.telegraf, "--config", devConf, "--config-directory", watched, "--watch-config", "poll")
	eventually(t, 60*time.Second, "the device's first row", func() (bool, string) {
		return len(db.rows("mem")) > 0, ""
	})

	// The operator signs the new interval for the site and sends it.
	fragment := filepath.Join(cli.dir, "interval.conf")
	require.NoError(t, os.WriteFile(fragment, []byte("[agent]\n  interval = \"1s\"\n"), 0o644))
	sign := func(signer *member, target, out string) string {
		return controlID.FindStringSubmatch(cli.run("", "control", "sign", "--vault", signer.vault, "--credential",
			signer.credential, target, "--kind", "config", "--file", fragment, "-o", filepath.Join(cli.dir, out)))[1]
	}
	send := func(file string) string {
		return cli.run("", "control", "send", "--socket", socket, filepath.Join(cli.dir, file))
	}
	// A copy of the operator's vault as it is now: it will sign a
	// sequence number the device has already seen.
	stale := copyVault(t, operator, filepath.Join(cli.dir, "operator-copy"))
	applied := sign(operator, "--select=site=plant-7", "interval.bin")
	require.Contains(t, send("interval.bin"), "accepted: instruction "+applied+" pending for site=plant-7")
	outcome := fmt.Sprintf("%s %s", device.id, "applied")
	eventually(t, 90*time.Second, "the applied outcome row", func() (bool, string) {
		got := rollout(t, db, applied)
		return got[outcome] != "", fmt.Sprint(got)
	})
	require.Equal(t, map[string]string{outcome: "code=0 reason="}, rollout(t, db, applied))
	written, err := os.ReadFile(filepath.Join(watched, "ockam-interval.conf"))
	require.NoError(t, err)
	require.Equal(t, "[agent]\n  interval = \"1s\"\n", string(written))
	dev.waitLog(configReloaded, 60*time.Second)

	// Rows at the new interval: 6 gathered after the outcome span well
	// under the 50 s they would at 10 s (gather times, not delivery times).
	since := time.Now()
	var times []int64
	eventually(t, 90*time.Second, "6 rows after the change", func() (bool, string) {
		times = times[:0]
		for _, v := range influxQLSeries(t, db, fmt.Sprintf(`SELECT "total" FROM "mem" WHERE time > %d`, since.UnixNano())) {
			for _, row := range v.Values {
				ts, err := time.Parse(time.RFC3339Nano, row[0].(string))
				require.NoError(t, err)
				times = append(times, ts.UnixNano())
			}
		}
		return len(times) >= 6, fmt.Sprintf("%d rows", len(times))
	})
	span := time.Duration(times[5] - times[0])
	require.Less(t, span, 20*time.Second, "6 rows at the new interval of 1 s")

	// Refused on the device, each with its row: signed by the gateway,
	// whose credential is valid but has no operator's attribute...
	forged := sign(gateway, "--to="+device.identity, "forged.bin")
	require.Contains(t, send("forged.bin"), "accepted")
	// ...and a new instruction of the operator's with the sequence number
	// of the applied one (signed from the old copy of its vault).
	replayed := sign(stale, "--to="+device.identity, "replayed.bin")
	require.Contains(t, send("replayed.bin"), "accepted")
	eventually(t, 90*time.Second, "both refusal rows", func() (bool, string) {
		f, r := rollout(t, db, forged), rollout(t, db, replayed)
		return len(f) == 1 && len(r) == 1, fmt.Sprint(f, r)
	})
	require.Regexp(t, `^code=8 reason=.*the policy lets no attribute of operator`, rollout(t, db, forged)[device.id+" refused"])
	require.Regexp(t, `^code=12 reason=.*`, rollout(t, db, replayed)[device.id+" refused"])

	// Signed by a device of the site (a valid credential, no operator's
	// attribute), and by the operator once the authority revoked it.
	byDevice := sign(device, "--to="+device.identity, "by-device.bin")
	require.Contains(t, send("by-device.bin"), "accepted")
	cli.revoke(authority, revoked, operator)
	dev.waitLog(regexp.MustCompile(`Revocation list ".*" applied: sequence 1, 1 subjects`), 60*time.Second)
	byRevoked := sign(operator, "--to="+device.identity, "by-revoked.bin")
	require.Contains(t, send("by-revoked.bin"), "accepted")
	eventually(t, 90*time.Second, "two more refusal rows", func() (bool, string) {
		d, r := rollout(t, db, byDevice), rollout(t, db, byRevoked)
		return len(d) == 1 && len(r) == 1, fmt.Sprint(d, r)
	})
	require.Regexp(t, `^code=8 reason=.*the policy lets no attribute of operator`, rollout(t, db, byDevice)[device.id+" refused"])
	require.Regexp(t, `^code=6 reason=.*revoked`, rollout(t, db, byRevoked)[device.id+" refused"])
	// A payload over the bound is refused before it leaves the operator.
	big := filepath.Join(cli.dir, "big.conf")
	require.NoError(t, os.WriteFile(big, []byte("# "+strings.Repeat("x", 40<<10)+"\n"), 0o644))
	require.Contains(t, strings.Join(cli.fail("control", "sign", "--vault", operator.vault, "--credential", operator.credential,
		"--to="+device.identity, "--kind", "config", "--file", big, "-o", filepath.Join(cli.dir, "big.bin")), "\n"),
		"is larger than 32768 bytes")
	// The selector's instruction is still pending (for devices that join
	// the site); handed over again it is refused at the gateway's door.
	require.Contains(t, strings.Join(cli.fail("control", "send", "--socket", socket, filepath.Join(cli.dir, "interval.bin")), "\n"),
		"refused: control: instruction already pending")

	if !viaRelay { // the gateway's door: the same with or without a relay
		// An instruction past its expiry is refused at the gateway's door
		// (and by a device, PROTOCOL.md section 17.2): signed to last 1 s,
		// handed over once the clock passed its expiry.
		out := cli.run("", "control", "sign", "--vault", operator.vault, "--credential", operator.credential,
			"--to="+device.identity, "--kind", "config", "--file", fragment, "--expires-in", "1s",
			"-o", filepath.Join(cli.dir, "expired.bin"))
		require.Regexp(t, controlID, out)
		expires, err := time.Parse(time.RFC3339, regexp.MustCompile(`(?m)^expires:\s+(\S+)$`).FindStringSubmatch(
			cli.run("", "control", "inspect", filepath.Join(cli.dir, "expired.bin")))[1])
		require.NoError(t, err)
		eventually(t, time.Minute, "the clock past the instruction's expiry", func() (bool, string) {
			return time.Now().After(expires.Add(time.Second)), ""
		})
		require.Contains(t, strings.Join(cli.fail("control", "send", "--socket", socket, filepath.Join(cli.dir, "expired.bin")), "\n"),
			"expired")

		// A flood: instructions for a device that is not connected pile up
		// until the bound of one target (64), then are refused.
		absent := cli.identity("absent", "")
		for i := range 65 {
			file := fmt.Sprintf("flood-%d.bin", i)
			sign(operator, "--to="+absent.identity, file)
			if i < 64 {
				require.Contains(t, send(file), "accepted")
				continue
			}
			require.Contains(t, strings.Join(cli.fail("control", "send", "--socket", socket, filepath.Join(cli.dir, file)), "\n"),
				"64 instructions pending for "+absent.id)
		}
	}

	// The fleet-wide status of the rollout: one device applied it. (Its
	// outcome may be stored twice: sent again from the outbox when
	// Telegraf reloaded before the gateway's ack; the query counts
	// devices.)
	counts := map[string]any{}
	for _, s := range influxQLSeries(t, db, fmt.Sprintf(rolloutSummary, applied)) {
		counts[s.Tags["result"]] = s.Values[0][1]
	}
	require.Equal(t, map[string]any{"applied": float64(1)}, counts)
	t.Logf("rows 6 at the new interval spanned %v; the device's log:\n%s", span,
		strings.Join(regexp.MustCompile(`(?m)^.*Control.*$`).FindAllString(dev.text(), -1), "\n"))
}

// copyVault copies m's vault directory to dir (files 0600) and returns a
// member that signs with it.
func copyVault(t *testing.T, m *member, dir string) *member {
	t.Helper()
	require.NoError(t, os.CopyFS(dir, os.DirFS(m.vault)))
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o700)
		}
		return os.Chmod(p, 0o600)
	}))
	c := *m
	c.vault = dir
	return &c
}

// fail runs ockam with args, requires it to fail, and returns its output
// lines.
func (o *ockamCLI) fail(args ...string) []string {
	o.t.Helper()
	out, err := exec.Command(o.bin, args...).CombinedOutput()
	require.Error(o.t, err, "ockam %s", strings.Join(args, " "))
	return strings.Split(string(out), "\n")
}
