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
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// parityCase is a write body sent to the inlet and to influxd 1.8.10 alike.
// "{m}" in body is replaced by the case's own measurement, so that cases do
// not meet in the database (a type conflict with stored data is the
// database's to know).
type parityCase struct {
	name, api, precision, body string
	setup                      string // written first to both, "" for none
}

// parityCases are the bodies of issue 22 (escapes influxd accepts, leading
// zeros, bodies with nothing to store, unsigned integers) and partial
// writes (issue 17, item 7), with the points influxd drops when it stores
// them.
var parityCases = []parityCase{
	{"string escapes", "v1", "", `{m} value="{Hello\"{\,}\" World}",str="foo\,bar" 1700000000000000001` + "\n" +
		`{m} v="\r" 1700000000000000002` + "\n" + `{m} v="\t",w="a\\b\"c" 1700000000000000003`, ""},
	{"escaped keys and tag values", "v1", "", `{m},t\ k=a\,b\=c f\=k=T,g\,h=1i 1700000000000000001`, ""},
	{"leading zeros", "v1", "", "{m} value=0009223372036854775807i,f=007.5 1700000000000000001", ""},
	{"empty body", "v1", "", "", ""},
	{"only newlines", "v2", "", "\n\n\n", ""},
	{"only comments", "v1", "", "# a comment\n   # another\n\n", ""},
	{"unsigned integer", "v1", "", "{m} value=42u 1700000000000000001", ""},
	{"unsigned integer, v2", "v2", "", "{m} value=42u 1700000000000000001", ""},
	{"partial write", "v1", "", "{m} v=1 1700000000000000001\n{m} v= 1700000000000000002\n{m} v=3 1700000000000000003\n", ""},
	{"partial write, v2, s", "v2", "s", "{m} v=1 1700000001\n{m},t= v=2 1700000002\n{m} v=3 1700000003", ""},
	{"two bad lines, one good", "v1", "ms", "{m} v=1 1700000000001\nnot line protocol\n{m} v=1 2\r\n", ""},
	{"only bad lines", "v1", "", "{m} v=\n{m} v=NaN 1\n", ""},
	{"a tag key time", "v1", "", "{m},time=x v=1 1700000000000000001\n{m} v=2 1700000000000000002", ""},
	{"only a field time", "v1", "", "{m} time=1 1700000000000000001\n{m} time=2,v=2 1700000000000000002", ""},
	// A field with two types in one body, when the database has it as a
	// float already. (When the field is new to influxd 1.8, it stores
	// nothing of the body and answers "field type conflict"; the inlet cannot
	// know, and stores the points of the type seen first: inlet/README.md.)
	{"field type conflict in the body", "v1", "", `{m} v=1 1700000000000000001` + "\n" + `{m} v="a" 1700000000000000002` + "\n" +
		`{m} v=3i 1700000000000000003` + "\n" + `{m} v=4 1700000000000000004`, "{m} v=0 1700000000000000000"},
	{"timestamp out of range", "v1", "s", "{m} v=1 9300000000\n{m} v=2 1700000000", ""},
	{"duplicate field, trailing blanks", "v1", "", "{m} v=1,v=2 1700000000000000001   \n", ""},
	{"duplicate tag", "v1", "", "{m},a=1,a=2 v=1 1700000000000000001", ""},
}

// TestInletParity sends each body of parityCases to the inlet (through the
// channel, the gateway's Telegraf and into influxd) and straight to influxd
// 1.8.10: the status is the same, the error message is influxd's (its text,
// in the error shape of the API), and the same points are stored.
func TestInletParity(t *testing.T) {
	f := newInletFleet(t)
	const direct = "parity"
	createDatabase(t, f.db, direct)
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)
	identityTags := regexp.MustCompile(`,ockam_identity=I[0-9a-f]+|,site=plant-7`)

	for i, c := range parityCases {
		m := fmt.Sprintf("e2e_parity_%02d", i)
		body := strings.ReplaceAll(c.body, "{m}", m)
		target := func(db string) string {
			if c.api == "v2" {
				return "/api/v2/write?bucket=" + url.QueryEscape(db+"/autogen") + "&precision=" + c.precision
			}
			return "/write?db=" + db + "&rp=autogen&precision=" + c.precision
		}
		if c.setup != "" {
			setup := strings.ReplaceAll(c.setup, "{m}", m)
			status, msg := postRaw(t, f.db.url()+target(direct), "", setup)
			require.Equal(t, http.StatusNoContent, status, msg)
			status, msg = postRaw(t, in.url+target(inletDatabase), inletToken, setup)
			require.Equal(t, http.StatusNoContent, status, msg)
		}
		wantStatus, wantMsg := postRaw(t, f.db.url()+target(direct), "", body)
		gotStatus, gotMsg := postRaw(t, in.url+target(inletDatabase), inletToken, body)
		require.Equal(t, wantStatus, gotStatus, "%s: influxd %q, inlet %q", c.name, wantMsg, gotMsg)
		require.Equal(t, wantMsg, gotMsg, c.name)

		want := f.db.rowsIn(direct+"/autogen", m)
		var got []string
		for _, r := range f.db.rowsIn(inletBucket, m) { // answered after the listener's ack: stored
			got = append(got, identityTags.ReplaceAllString(r, ""))
		}
		require.Equal(t, want, got, "%s: stored points", c.name)
		t.Logf("%s: %d %q, %d points stored", c.name, gotStatus, gotMsg, len(got))
	}
}

// postRaw posts body to u, with token if not "", and returns the status and
// the error message: influxd 1.8's {"error": …} on either endpoint, the
// inlet's {"error": …} on /write and {"code", "message"} on /api/v2/write.
func postRaw(t *testing.T, u, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusNoContent {
		require.Empty(t, b)
		return resp.StatusCode, ""
	}
	var e struct{ Error, Code, Message string }
	require.NoError(t, json.Unmarshal(b, &e), "%s: %s", resp.Status, b)
	if e.Code != "" {
		require.Equal(t, "invalid", e.Code, "%s", b)
		return resp.StatusCode, e.Message
	}
	return resp.StatusCode, e.Error
}

// TestInletStockTelegrafV1 writes through the inlet with the stock
// outputs.influxdb (the 1.x /write endpoint, skip_database_creation, gzip)
// of the custom Telegraf: every point arrives once.
func TestInletStockTelegrafV1(t *testing.T) {
	f := newInletFleet(t)
	const n, perRun = 100, 25
	pts := sequence("e2e_inlet_v1", n)
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)
	conf := filepath.Join(t.TempDir(), "device-v1.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[agent]
  interval = "500ms"
  flush_interval = "1s"
  flush_jitter = "0s"
  omit_hostname = true
  debug = true

%s

[[outputs.influxdb]]
  urls = [%q]
  database = %q
  retention_policy = "autogen"
  skip_database_creation = true
  password = %q
  content_encoding = "gzip"
  timeout = "15s"
`, execInputs(t, pts, perRun), in.url, inletDatabase, inletToken)), 0o600))
	dev := startProcess(t, "device-v1", f.bin.telegraf, "--config", conf)

	want := storedAll(pts, f.device.id, "plant-7")
	var got []string
	eventually(t, 90*time.Second, "every point in InfluxDB", func() (bool, string) {
		got = f.db.rowsIn(inletBucket, "e2e_inlet_v1")
		return len(got) >= len(want), fmt.Sprintf("%d of %d", len(got), len(want))
	})
	require.Equal(t, want, got)
	require.Zero(t, dev.count(regexp.MustCompile(`E! \[outputs\.influxdb\]`)), "no failed write")
	require.Zero(t, in.counter(t, "ockam_inlet.browser_requests_refused"))
}
