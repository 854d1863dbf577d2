package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The end-to-end tests of ockamd (cmd/ockamd): devices' Telegraf
// (outputs.ockam) → ockamd → influxd, with no gateway Telegraf.

// ockamd is a running ockamd. Its listener field lets startDevice point
// devices at it.
type ockamd struct {
	*listener
	health string // host:port of /health and /metrics
}

// servingHealth is the line ockamd logs once /health is bound.
var servingHealth = regexp.MustCompile(`\[ockamd\] Serving /health and /metrics on http://(\S+)`)

// startOckamd runs ockamd as m on a free loopback port, trusting devices
// from authority whose policy lets role=sensor write the measurements in
// allow (a TOML array), and writing to db with the [influxdb] settings
// influx (TOML lines; url is set).
func startOckamd(t *testing.T, m, authority *member, db *influxDB, allow, influx string) *ockamd {
	t.Helper()
	requireBinaries(t)
	bin := executable(t, filepath.Join(envOr("OCKAM_BIN", filepath.Join("..", "bin")), "ockamd"))
	conf := filepath.Join(t.TempDir(), "ockamd.toml")
	text := fmt.Sprintf(`debug = true
health_address = "127.0.0.1:0"

[listener]
  service_address = "tcp://127.0.0.1:0"
  vault_path = %q
  vault_passphrase = %q
  credential_path = %q
  authority_paths = [%q]
  attribute_tags = ["site"]
  max_undelivered_messages = 64
  [[listener.allow]]
    attributes = { role = "sensor" }
    measurements = %s

[influxdb]
  url = %q
%s
`, m.vault, m.passphrase, m.credential, authority.identity, allow, db.url(), influx)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startProcess(t, "ockamd", bin, "--config", conf)
	listening := proc.waitLog(listeningOckam, 30*time.Second)
	if listening[2] != m.id {
		t.Fatalf("ockamd runs as %s, want %s", listening[2], m.id)
	}
	return &ockamd{
		listener: &listener{t: t, member: m, addr: listening[1], proc: proc},
		health:   proc.waitLog(servingHealth, 30*time.Second)[1],
	}
}

// stat returns the value of an internal metric field from /metrics: the
// first line of measurement (with tags, if any, such as ",reason=policy")
// that has it.
func (d *ockamd) stat(measurement, field string) int64 {
	d.t.Helper()
	resp, err := http.Get("http://" + d.health + "/metrics")
	if err != nil {
		d.t.Fatalf("ockamd /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(measurement) + ` .*\b` + regexp.QuoteMeta(field) + `=(-?\d+)i`)
	m := re.FindSubmatch(body)
	if m == nil {
		d.t.Fatalf("ockamd /metrics has no %s %s:\n%s", measurement, field, body)
	}
	v, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return v
}

// stopCleanly sends SIGTERM and requires exit status 0.
func (d *ockamd) stopCleanly() {
	d.t.Helper()
	d.proc.stop()
	if d.proc.err != nil {
		d.t.Fatalf("ockamd exited with %v after SIGTERM, want status 0", d.proc.err)
	}
	d.proc.waitLog(regexp.MustCompile(`I! \[ockamd\] Stopped`), time.Second)
}

// ockamdFleet is InfluxDB, an authority and ockamd's identity, for one test.
type ockamdFleet struct {
	t         *testing.T
	bin       binaries
	db        *influxDB
	cli       *ockamCLI
	authority *member
	gateway   *member // ockamd's identity, role=listener
}

func newOckamdFleet(t *testing.T) *ockamdFleet {
	t.Helper()
	f := &ockamdFleet{t: t, bin: requireBinaries(t)}
	f.db = startInfluxDB(t, f.bin.influxd)
	f.cli = newOckamCLI(t, f.bin.ockam)
	f.authority = f.cli.identity("authority", "")
	f.gateway = f.cli.identity("ockamd", "")
	f.cli.issue(f.authority, f.gateway, "720h", "role=listener")
	return f
}

// device creates a device's identity and a credential with role=sensor and
// the attributes attrs ("k=v").
func (f *ockamdFleet) device(name string, attrs ...string) *member {
	f.t.Helper()
	m := f.cli.identity(name, "")
	f.cli.issue(f.authority, m, "720h", append([]string{"role=sensor"}, attrs...)...)
	return m
}

// start runs ockamd as the fleet's gateway (startOckamd).
func (f *ockamdFleet) start(allow, influx string) *ockamd {
	f.t.Helper()
	return startOckamd(f.t, f.gateway, f.authority, f.db, allow, influx)
}

// run starts m's Telegraf, which hands perRun of pts to outputs.ockam every
// 500 ms, sending to d.
func (f *ockamdFleet) run(d *ockamd, m *member, pts []point, perRun int) *process {
	f.t.Helper()
	return startDevice(f.t, f.bin.telegraf, m, f.authority, d.listener, "500ms", execInputs(f.t, pts, perRun))
}

// TestOckamdDelivery is TestDeliveryStampsVerifiedIdentity with ockamd in
// place of the gateway Telegraf: every metric arrives once, with the tags
// ockamd's listener verified (forged identity and site tags replaced, a
// site tag removed for a credential without that attribute). Then ockamd's
// counters agree, and SIGTERM ends it with status 0.
func TestOckamdDelivery(t *testing.T) {
	var d *ockamd
	testStamping(t, "ockamd", func(_ binaries, gateway, authority *member, db *influxDB) *listener {
		d = startOckamd(t, gateway, authority, db, `["cpu", "temp*"]`, `  bucket = "db/autogen"`)
		return d.listener
	})
	// InfluxDB shows the last rows before ockamd has its answer to that
	// write: metrics_written and groups_written move once the answer is
	// in, messages_delivered once the ack is queued after it. Wait for the
	// counters to settle (the streams are finite) instead of reading them at
	// the instant the rows appeared; what they must then say is exact.
	var written, groups, delivered int64
	eventually(t, 30*time.Second, "ockamd's counters to agree", func() (bool, string) {
		written = d.stat("internal_ockamd", "metrics_written")
		groups = d.stat("internal_ockamd", "groups_written")
		delivered = d.stat("internal_ockam_listener", "messages_delivered")
		return written >= 320 && groups == delivered,
			fmt.Sprintf("metrics_written %d, groups_written %d, messages_delivered %d", written, groups, delivered)
	})
	require.GreaterOrEqual(t, written, int64(320), "metrics_written")
	require.Equal(t, groups, delivered, "every message acked once written")
	// Messages queued behind each other are written together: never more
	// requests than messages.
	writes := d.stat("internal_ockamd", "writes")
	require.Positive(t, writes)
	require.LessOrEqual(t, writes, groups, "writes")
	d.stopCleanly()
	t.Logf("figures: ockamd wrote %d metrics of %d messages in %d requests (a message whose ack was lost is written again); "+
		"SIGTERM → exit status 0", written, delivered, writes)
}

// TestOckamdInfluxDBDown stops InfluxDB in the middle of a finite stream
// and starts it again some seconds later: ockamd nacks (transient) while it
// is down, the device keeps its metrics, and in the end InfluxDB holds
// exactly what the device sent.
func TestOckamdInfluxDBDown(t *testing.T) {
	f := newOckamdFleet(t)
	db := f.db
	sensor := f.device("device", "site=plant-7")

	const n, perRun = 800, 20 // 40 a second: 20 s of traffic
	pts := sequence("e2e_seq", n)
	d := f.start(`["e2e_*"]`, `  bucket = "db"`)
	start := time.Now()
	dev := f.run(d, sensor, pts, perRun)
	stored := func() int { return len(db.seqs("e2e_seq")[sensor.id]) }
	writeErrors := regexp.MustCompile(`Error writing to outputs\.ockam.*influxdb unreachable`)

	eventually(t, 60*time.Second, "a quarter of the stream", func() (bool, string) { return stored() >= n/4, "" })
	stoppedAt := stored()
	db.stop()
	downSince := time.Now()
	d.proc.waitLog(regexp.MustCompile(`E! \[ockamd\.influxdb\] InfluxDB at \S+ is unreachable`), 30*time.Second)
	eventually(t, 30*time.Second, "the device to be told to retry three times", func() (bool, string) {
		return dev.count(writeErrors) >= 3, ""
	})
	db.restart()
	down := time.Since(downSince)

	eventually(t, 120*time.Second, "the whole stream", func() (bool, string) { return stored() >= n, "" })
	elapsed := time.Since(start)
	rows := db.rows("e2e_seq")
	if want := storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent", len(rows), len(want))
	}
	d.proc.waitLog(regexp.MustCompile(`I! \[ockamd\.influxdb\] InfluxDB accepts writes again`), 30*time.Second)
	failed := d.stat("internal_ockamd,reason=unreachable", "groups_failed")
	require.Positive(t, failed)
	d.stopCleanly()
	t.Logf("figures: %d metrics sent, %d stored (exactly the rows sent) in %.1fs; InfluxDB stopped at %d stored "+
		"and down for %.1fs; ockamd nacked %d messages as unreachable, the device logged %d retries",
		n, len(rows), elapsed.Seconds(), stoppedAt, down.Seconds(), failed, dev.count(writeErrors))
}

// TestOckamdFieldTypeConflict: InfluxDB already holds e2e_conflict.value as
// a string; a device that writes it as a float gets a permanent nack with
// InfluxDB's message, logs why and drops those metrics (no retry loop),
// while another device writing at the same time loses nothing.
func TestOckamdFieldTypeConflict(t *testing.T) {
	f := newOckamdFleet(t)
	db := f.db
	good := f.device("good", "site=plant-7")
	bad := f.device("bad", "site=plant-9")

	// The seed fixes the type of value in the shard the devices write to.
	const n, perRun = 200, 20
	conflicting := sequence("e2e_conflict", n)
	seedAt := conflicting[0].time.UnixNano()
	resp, err := http.Post(db.url()+"/write?db="+database, "text/plain",
		strings.NewReader(fmt.Sprintf("e2e_conflict,src=seed value=\"a string\" %d\n", seedAt)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	pts := sequence("e2e_ok", n)
	d := f.start(`["e2e_*"]`, `  bucket = "db/autogen"`)
	goodDev := f.run(d, good, pts, perRun)
	badDev := f.run(d, bad, conflicting, perRun)

	refused := regexp.MustCompile(`E! \[outputs\.ockam\] Listener I[0-9a-f]+… refused (\d+) metrics permanently, they will be dropped: ` +
		`"influxdb 400: partial write: field type conflict: input field \\"value\\" on measurement \\"e2e_conflict\\" is type float, already exists as type string dropped=\d+"`)
	droppedByBad := func() int {
		total := 0
		for _, m := range refused.FindAllStringSubmatch(badDev.text(), -1) {
			k, _ := strconv.Atoi(m[1])
			total += k
		}
		return total
	}
	eventually(t, 90*time.Second, "the good device's stream, and the bad one's refused", func() (bool, string) {
		return len(db.seqs("e2e_ok")[good.id]) >= n && droppedByBad() >= n, fmt.Sprintf("bad device: %d dropped", droppedByBad())
	})
	require.Equal(t, storedAll(pts, good.id, "plant-7"), db.rows("e2e_ok"), "the good device's rows")
	require.Equal(t, n, droppedByBad(), "each metric of the bad device refused once: no retry")
	seqs := db.seqs("e2e_conflict")
	require.Empty(t, seqs[bad.id], "none of the bad device's points stored")
	require.Zero(t, goodDev.count(regexp.MustCompile(`permanently|Error writing`)), "the good device saw no refusal and no error")
	require.Zero(t, badDev.count(regexp.MustCompile(`Error writing to outputs\.ockam`)), "the bad device was never told to retry")
	refusedGroups := d.stat("internal_ockamd", "groups_refused")
	require.Positive(t, refusedGroups)
	require.Equal(t, 1, d.proc.count(regexp.MustCompile(`W! \[ockamd\.influxdb\] InfluxDB refused \d+ metrics for bucket "db/autogen" for good`)),
		"logged once a minute")
	d.stopCleanly()
	t.Logf("figures: good device %d/%d rows stored; bad device %d metrics refused permanently in %d messages, "+
		"0 stored, 0 retries; its log says:\n  %s",
		len(db.seqs("e2e_ok")[good.id]), n, droppedByBad(), refusedGroups, refused.FindString(badDev.text()))
}

// TestOckamdMissingDatabase (issue 17, item 3): ockamd writes to a
// database nobody created. Real influxd 1.8 answers 404; the device's log
// names the database and the fix (before, it said only `influxdb 404:
// database not found: "missing"`), /health says so, and once the database
// is created the whole stream arrives: the device kept every metric.
func TestOckamdMissingDatabase(t *testing.T) {
	f := newOckamdFleet(t)
	db := f.db
	sensor := f.device("device", "site=plant-7")

	const n, perRun = 200, 20
	pts := sequence("e2e_missing", n)
	d := f.start(`["e2e_*"]`, `  bucket = "missing"`)
	dev := f.run(d, sensor, pts, perRun)

	reason := `influxdb 404: database not found: "missing" (the gateway's InfluxDB has no database or bucket ` +
		`"missing": its operator must create it, or set create_database = true in ockamd's [influxdb] for InfluxDB 1.x)`
	asked := regexp.MustCompile(`E! \[agent\] Error writing to outputs\.ockam: listener I[0-9a-f]+… asked to retry \d+ metrics later: ` +
		regexp.QuoteMeta(strconv.Quote(reason)))
	dev.waitLog(asked, 60*time.Second)
	d.proc.waitLog(regexp.MustCompile(`E! \[ockamd\.influxdb\] InfluxDB at \S+ has no bucket or database "missing" `+
		`\(.*database not found.*\): create it, or set create_database = true \(InfluxDB 1\.x\)`), 30*time.Second)

	resp, err := http.Get("http://" + d.health + "/health")
	require.NoError(t, err)
	var health struct {
		Status   string `json:"status"`
		InfluxDB struct {
			Failing string `json:"failing"`
		} `json:"influxdb"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&health))
	resp.Body.Close()
	require.Equal(t, "warn", health.Status)
	require.Equal(t, reason, health.InfluxDB.Failing)

	// The operator follows the advice.
	resp, err = http.PostForm(db.url()+"/query", url.Values{"q": {`CREATE DATABASE "missing"`}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	want := storedAll(pts, sensor.id, "plant-7")
	var rows []string
	eventually(t, 120*time.Second, "the whole stream in the new database", func() (bool, string) {
		rows = db.rowsIn("missing/autogen", "e2e_missing")
		return len(rows) >= n, fmt.Sprintf("%d rows", len(rows))
	})
	require.Equal(t, want, rows, "exactly the rows sent: nothing lost while the database was missing")
	failed := d.stat("internal_ockamd,reason=not_found", "groups_failed")
	require.Positive(t, failed)
	d.stopCleanly()
	t.Logf("figures: %d metrics, all stored after the database was created; ockamd nacked %d messages as not_found, "+
		"the device logged %d retries; its log says:\n  %s", n, failed, dev.count(asked), asked.FindString(dev.text()))
}

// TestOckamdBucketRouting: with bucket_attribute = "site" and
// create_database = true, each site's device lands in a database of its own
// (telemetry_<site>), created on its first write, and a device without a
// site attribute in the base database.
func TestOckamdBucketRouting(t *testing.T) {
	f := newOckamdFleet(t)
	db := f.db
	sites := map[string]*member{}
	for _, site := range []string{"plant-7", "plant-9"} {
		sites[site] = f.device("device-"+site, "site="+site)
	}
	siteless := f.device("siteless")

	const n, perRun = 100, 20
	pts := sequence("e2e_route", n)
	d := f.start(`["e2e_*"]`, `  bucket = "telemetry"
  bucket_attribute = "site"
  bucket_template = "telemetry_{{site}}"
  create_database = true`)
	for _, m := range append([]*member{siteless}, sites["plant-7"], sites["plant-9"]) {
		f.run(d, m, pts, perRun)
	}

	want := map[string][]string{
		"telemetry_plant-7": storedAll(pts, sites["plant-7"].id, "plant-7"),
		"telemetry_plant-9": storedAll(pts, sites["plant-9"].id, "plant-9"),
		"telemetry":         storedAll(pts, siteless.id, ""),
	}
	got := map[string][]string{}
	eventually(t, 90*time.Second, "every device's stream in its database", func() (bool, string) {
		if !slices.Equal(databases(t, db), []string{"db", "telemetry", "telemetry_plant-7", "telemetry_plant-9"}) {
			return false, fmt.Sprintf("databases %v", databases(t, db))
		}
		for b := range want {
			got[b] = db.rowsIn(b+"/autogen", "e2e_route")
		}
		for b, rows := range want {
			if len(got[b]) < len(rows) {
				return false, fmt.Sprintf("%s: %d rows", b, len(got[b]))
			}
		}
		return true, ""
	})
	require.Equal(t, want, got, "each database holds its site's rows, and only those")
	require.Empty(t, db.rows("e2e_route"), "nothing in the test's default database")
	created := d.stat("internal_ockamd", "databases_created")
	require.Equal(t, 3, d.proc.count(regexp.MustCompile(`I! \[ockamd\.influxdb\] Created database "telemetry(_plant-[79])?"`)))
	d.stopCleanly()
	t.Logf("figures: 3 devices × %d metrics; databases %v; %d rows in telemetry_plant-7, %d in telemetry_plant-9, "+
		"%d in telemetry (no site attribute); ockamd created %d databases",
		n, databases(t, db), len(got["telemetry_plant-7"]), len(got["telemetry_plant-9"]), len(got["telemetry"]), created)
}

// databases lists InfluxDB's databases, sorted, without _internal.
func databases(t *testing.T, db *influxDB) []string {
	t.Helper()
	resp, err := http.PostForm(db.url()+"/query", url.Values{"q": {"SHOW DATABASES"}})
	if err != nil {
		t.Fatalf("SHOW DATABASES: %v", err)
	}
	defer resp.Body.Close()
	var answer struct {
		Results []struct {
			Series []struct {
				Values [][]string `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("SHOW DATABASES: %v", err)
	}
	var out []string
	for _, r := range answer.Results {
		for _, s := range r.Series {
			for _, v := range s.Values {
				if len(v) == 1 && v[0] != "_internal" {
					out = append(out, v[0])
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
