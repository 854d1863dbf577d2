package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/stretchr/testify/require"
)

// The inlet's clients write to a database of their own, which the gateway
// reaches through the _ockam_bucket tag (deploy/listener.conf.tmpl); its
// default bucket must stay free of their points.
const (
	inletDatabase = "inlet"
	inletBucket   = inletDatabase + "/autogen"
	inletToken    = "local-s3cret"
)

// listeningInlet is the line `ockam inlet influxdb` logs once it serves.
var listeningInlet = regexp.MustCompile(`I! \[inlet\] Listening on http://(\S+) `)

// inlet is a running `ockam inlet influxdb` for a device.
type inlet struct {
	proc *process
	url  string // http://host:port
}

// startInlet runs the inlet of device m, sending to l, with the token
// inletToken, on a free loopback port.
func startInlet(t *testing.T, bin string, m, authority *member, l *listener) *inlet {
	t.Helper()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(inletToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, m.name+"-inlet", bin, "inlet", "influxdb", "--listen", "127.0.0.1:0",
		"--vault", m.vault, "--credential", m.credential, "--authority", authority.identity,
		"--address", "tcp://"+l.addr, "--listener-identity", l.member.id, "--token-file", token, "--debug")
	return &inlet{proc: p, url: "http://" + p.waitLog(listeningInlet, 30*time.Second)[1]}
}

// post sends body to the inlet at target (a path and query) with the token,
// and returns the status and the decoded JSON error body, if any.
func (in *inlet) post(t *testing.T, target, body string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, in.url+target, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Token "+inletToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]string
	if resp.StatusCode != http.StatusNoContent {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m), "status %s", resp.Status)
	}
	return resp.StatusCode, m
}

// counter returns a counter of the inlet's /health ("ockam.messages_sent", …).
func (in *inlet) counter(t *testing.T, name string) int64 {
	t.Helper()
	resp, err := http.Get(in.url + "/health")
	require.NoError(t, err)
	defer resp.Body.Close()
	var h struct{ Counters map[string]int64 }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	return h.Counters[name]
}

// startInletDevice starts a device's Telegraf that writes what inputs
// gather to the inlet with its stock outputs.influxdb_v2, into inletBucket.
func startInletDevice(t *testing.T, bin, name string, in *inlet, interval, inputs string) *process {
	t.Helper()
	conf := filepath.Join(t.TempDir(), name+".conf")
	renderTemplate(t, "device-inlet.conf.tmpl", conf, map[string]string{
		"Interval": interval,
		"Inputs":   inputs,
		"InletURL": in.url,
		"Token":    inletToken,
		"Bucket":   inletBucket,
	})
	return startProcess(t, name, bin, "--config", conf)
}

// createDatabase creates a database in db.
func createDatabase(t *testing.T, db *influxDB, name string) {
	t.Helper()
	resp, err := http.PostForm(db.url()+"/query", url.Values{"q": {"CREATE DATABASE " + name}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// inletFleet is what every inlet test needs: InfluxDB with the inlet's
// database, an authority, a gateway, and a device with site=plant-7.
type inletFleet struct {
	bin               binaries
	db                *influxDB
	cli               *ockamCLI
	authority, device *member
	gateway           *member
}

func newInletFleet(t *testing.T) *inletFleet {
	bin := requireBinaries(t)
	f := &inletFleet{bin: bin, db: startInfluxDB(t, bin.influxd), cli: newOckamCLI(t, bin.ockam)}
	createDatabase(t, f.db, inletDatabase)
	f.authority = f.cli.identity("authority", "")
	f.gateway = f.cli.identity("listener", "")
	f.cli.issue(f.authority, f.gateway, "720h", "role=listener")
	f.device = f.cli.identity("device", "")
	f.cli.issue(f.authority, f.device, "720h", "role=sensor", "site=plant-7")
	return f
}

// TestInletStockTelegraf sends a finite stream from a Telegraf whose only
// output is the stock outputs.influxdb_v2, to the inlet, through the
// channel and the gateway, into InfluxDB: every point arrives once, in the
// bucket the device named, with the identity and site the listener
// verified, and without the routing tag.
func TestInletStockTelegraf(t *testing.T) {
	f := newInletFleet(t)
	const n, perRun = 300, 50
	pts := sequence("e2e_inlet", n)
	pts[3].tags["ockam_identity"] = "evil" // forged: replaced by the listener
	want := storedAll(pts, f.device.id, "plant-7")

	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)
	start := time.Now()
	dev := startInletDevice(t, f.bin.telegraf, "device", in, "500ms", execInputs(t, pts, perRun))

	var got []string
	eventually(t, 90*time.Second, "every point in InfluxDB", func() (bool, string) {
		got = f.db.rowsIn(inletBucket, "e2e_inlet")
		return len(got) >= len(want), fmt.Sprintf("%d of %d", len(got), len(want))
	})
	elapsed := time.Since(start)
	require.Equal(t, want, got, "rows in %s", inletBucket)
	require.Empty(t, f.db.rows("e2e_inlet"), "nothing in the gateway's default bucket")
	failed := dev.count(regexp.MustCompile(`E! \[outputs\.influxdb_v2\]`))
	acked := in.proc.count(regexp.MustCompile(`D! \[inlet\] POST /api/v2/write bucket "inlet/autogen": \d+ points acknowledged`))
	require.Positive(t, acked)
	t.Logf("figures: %d points sent by stock outputs.influxdb_v2 in %d acknowledged writes (%d failed writes "+
		"retried), all stored %.1fs after the device started; the forged point was sent as\n  %s\nand is stored as\n  %s",
		n, acked, failed, elapsed.Seconds(), pts[3].sent(), pts[3].stored(f.device.id, "plant-7"))
}

// TestInletClients writes through the inlet with influxdb-client-go's
// blocking write API (v2, nanoseconds) and with a 1.x /write request in
// seconds: the exact points and timestamps are stored.
func TestInletClients(t *testing.T) {
	f := newInletFleet(t)
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)

	// v2: the client of InfluxDB 2, nanosecond timestamps.
	client := influxdb2.NewClientWithOptions(in.url, inletToken, influxdb2.DefaultOptions().SetHTTPRequestTimeout(20))
	defer client.Close()
	w := client.WriteAPIBlocking("any-org", inletBucket)
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	var want []string
	for i := range 5 {
		ts := base.Add(time.Duration(i)*time.Second + time.Duration(123456789+i))
		p := influxdb2.NewPoint("e2e_client", map[string]string{"src": "go"},
			map[string]any{"seq": int64(i), "value": value(int64(i))}, ts)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		require.NoError(t, w.WritePoint(ctx, p), "point %d", i)
		cancel()
		want = append(want, fmt.Sprintf("e2e_client,ockam_identity=%s,site=plant-7,src=go seq=%di,value=%s %d",
			f.device.id, i, fmtFloat(value(int64(i))), ts.UnixNano()))
	}

	// 1.x: /write?db=…&precision=s, the points without a time get the
	// inlet's clock.
	status, body := in.post(t, "/write?db="+inletDatabase+"&rp=autogen&precision=s",
		"e2e_v1,src=v1 seq=0i,value=0 1700000000\ne2e_v1,src=v1 seq=1i,value=0.25 1700000001\n")
	require.Equal(t, http.StatusNoContent, status, "%v", body)
	before := time.Now().Truncate(time.Second)
	status, body = in.post(t, "/write?db="+inletDatabase+"&precision=s", "e2e_v1,src=now seq=2i,value=0.5\n")
	require.Equal(t, http.StatusNoContent, status, "%v", body)
	after := time.Now()
	wantV1 := []string{
		fmt.Sprintf("e2e_v1,ockam_identity=%s,site=plant-7,src=v1 seq=0i,value=0 %d", f.device.id, int64(1700000000)*1e9),
		fmt.Sprintf("e2e_v1,ockam_identity=%s,site=plant-7,src=v1 seq=1i,value=0.25 %d", f.device.id, int64(1700000001)*1e9),
	}

	// The writes were answered after the listener's ack: the rows are there.
	require.Equal(t, want, f.db.rowsIn(inletBucket, "e2e_client"))
	v1 := f.db.rowsIn(inletBucket, "e2e_v1")
	require.Len(t, v1, 3)
	var nowRow string
	for _, r := range v1 {
		if strings.Contains(r, "src=now") {
			nowRow = r
		}
	}
	var ns int64
	_, err := fmt.Sscanf(nowRow[strings.LastIndex(nowRow, " ")+1:], "%d", &ns)
	require.NoError(t, err)
	stamped := time.Unix(0, ns)
	require.Zero(t, ns%1e9, "truncated to the precision, s")
	require.False(t, stamped.Before(before) || stamped.After(after), "%v is the inlet's clock at the write", stamped)
	require.Equal(t, wantV1, without(v1, nowRow))
	t.Logf("figures: 5 points through influxdb-client-go (ns, e.g. %s) and 3 through /write?precision=s stored exactly; "+
		"the point without a time got %s", want[1], stamped.Format(time.RFC3339Nano))
}

// TestInletListenerDown stops the gateway for longer than a flush interval
// while a stock Telegraf writes through the inlet: the inlet answers 503,
// Telegraf keeps the points and retries, and once the gateway is back every
// point sent is stored, once.
func TestInletListenerDown(t *testing.T) {
	f := newInletFleet(t)
	const n, perRun = 400, 20 // 40 a second: 10 s of traffic
	pts := sequence("e2e_down", n)
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)
	dev := startInletDevice(t, f.bin.telegraf, "device", in, "500ms", execInputs(t, pts, perRun))

	stored := func() int { return len(f.db.rowsIn(inletBucket, "e2e_down")) }
	eventually(t, 60*time.Second, "a quarter of the stream", func() (bool, string) { return stored() >= n/4, "" })
	unavailable := regexp.MustCompile(`\[inlet\] POST /api/v2/write bucket "inlet/autogen" from \S+: 503 `)
	retried := regexp.MustCompile(`\[outputs\.influxdb_v2\].*will retry`)
	l.proc.kill()
	downAt, storedAtKill := time.Now(), stored()
	eventually(t, 30*time.Second, "the inlet to answer 503 and Telegraf to retry", func() (bool, string) {
		return in.proc.count(unavailable) > 0 && dev.count(retried) > 0, ""
	})
	time.Sleep(3 * time.Second) // down for several flush intervals (1s)
	l.restart()
	down := time.Since(downAt)

	eventually(t, 90*time.Second, "the whole stream", func() (bool, string) {
		return stored() >= n, fmt.Sprintf("%d of %d", stored(), n)
	})
	require.Equal(t, storedAll(pts, f.device.id, "plant-7"), f.db.rowsIn(inletBucket, "e2e_down"),
		"every point sent through the inlet is stored, once")
	t.Logf("figures: %d points sent, %d stored; gateway down %.1fs (killed at %d stored); the inlet answered %d "+
		"writes with 503 and the device's Telegraf logged %d retries",
		n, stored(), down.Seconds(), storedAtKill, in.proc.count(unavailable), dev.count(retried))
}

// TestInletRevokedDevice revokes the device while its inlet has a channel
// open: its next write is answered 400 in InfluxDB's error shape, with a
// reason that says revoked (a nack on the open channel, then the listener's
// refusal of the next one), /health fails with that reason, and nothing
// more of it is stored.
func TestInletRevokedDevice(t *testing.T) {
	f := newInletFleet(t)
	revoked := filepath.Join(t.TempDir(), "revoked.list")
	f.cli.revoke(f.authority, revoked, f.cli.identity("retired", ""))
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, revoked)
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)

	status, body := in.post(t, "/api/v2/write?bucket="+url.QueryEscape(inletBucket)+"&precision=s", "e2e_rev seq=1i 1700000000\n")
	require.Equal(t, http.StatusNoContent, status, "%v", body)

	f.cli.revoke(f.authority, revoked, f.device)
	l.proc.waitLog(regexp.MustCompile(`Revocation list .* applied: sequence 2`), 30*time.Second)
	status, body = in.post(t, "/api/v2/write?bucket="+url.QueryEscape(inletBucket)+"&precision=s", "e2e_rev seq=2i 1700000001\n")
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "invalid", body["code"])
	require.Contains(t, body["message"], "revoked")
	status, body = in.post(t, "/write?db="+inletDatabase+"&precision=s", "e2e_rev seq=3i 1700000002\n")
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "revoked")
	// The listener refused the next channel and said why: /health fails
	// with that reason.
	resp, err := http.Get(in.url + "/health")
	require.NoError(t, err)
	defer resp.Body.Close()
	var health struct{ Status, Message string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&health))
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%+v", health)
	require.Equal(t, "fail", health.Status)
	require.Contains(t, health.Message, "refused by listener")
	require.Contains(t, health.Message, "revoked")

	require.Equal(t, []string{fmt.Sprintf("e2e_rev,ockam_identity=%s,site=plant-7 seq=1i %d", f.device.id, int64(1700000000)*1e9)},
		f.db.rowsIn(inletBucket, "e2e_rev"))
	t.Logf("figures: after the revocation the inlet answered 400 %q", body["error"])
}

// fmtFloat formats a field value as lineOf does.
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// without returns rows without the row r.
func without(rows []string, r string) []string {
	var out []string
	for _, x := range rows {
		if x != r {
			out = append(out, x)
		}
	}
	return out
}
