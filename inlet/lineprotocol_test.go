package inlet

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/sender"
)

// TestInfluxDBAnswers checks the answer and the points sent for the bodies
// of issue 22 and for partial writes, with influxd 1.8.10's messages (as
// e2e TestInletParity found them on a real influxd).
func TestInfluxDBAnswers(t *testing.T) {
	ts := func(ns int64) time.Time { return time.Unix(0, ns) }
	m := func(fields map[string]any, ns int64) telegraf.Metric {
		return metric.New("m", map[string]string{BucketTag: "db"}, fields, ts(ns))
	}
	tests := []struct {
		name, body string
		status     int
		msg        string
		sent       []telegraf.Metric
	}{
		{"string escapes", `m value="{Hello\"{\,}\" World}",str="foo\,bar" 1` + "\n" + `m v="\r",w="\t",x="a\\b" 2`,
			http.StatusNoContent, "", []telegraf.Metric{
				m(map[string]any{"value": `{Hello"{\,}" World}`, "str": `foo\,bar`}, 1),
				m(map[string]any{"v": `\r`, "w": `\t`, "x": `a\b`}, 2),
			}},
		{"leading zeros", "m value=0009223372036854775807i 1", http.StatusNoContent, "",
			[]telegraf.Metric{m(map[string]any{"value": int64(9223372036854775807)}, 1)}},
		{"empty", "", http.StatusNoContent, "", nil},
		{"only newlines", "\n\n\n", http.StatusNoContent, "", nil},
		{"only comments", "# one\n   # two\n", http.StatusNoContent, "", nil},
		{"unsigned", "m value=42u 1", http.StatusBadRequest, "unable to parse 'm value=42u 1': invalid number", nil},
		{"partial write", "m v=1 1\nm v= 2\nm v=3 3\n", http.StatusBadRequest,
			"partial write: unable to parse 'm v= 2': missing field value dropped=0",
			[]telegraf.Metric{m(map[string]any{"v": 1.0}, 1), m(map[string]any{"v": 3.0}, 3)}},
		{"two bad lines", "x\nm v=1 1\nm,t= v=2 2", http.StatusBadRequest,
			"partial write: unable to parse 'x': missing fields\nunable to parse 'm,t= v=2 2': missing tag value dropped=0",
			[]telegraf.Metric{m(map[string]any{"v": 1.0}, 1)}},
		{"only bad lines", "m v=\nm v=NaN 1", http.StatusBadRequest,
			"unable to parse 'm v=': missing field value\nunable to parse 'm v=NaN 1': invalid number", nil},
		{"tag time", "m,time=x v=1 1\nm v=2 2", http.StatusBadRequest,
			`partial write: invalid tag key: input tag "time" on measurement "m" is invalid dropped=1`,
			[]telegraf.Metric{m(map[string]any{"v": 2.0}, 2)}},
		{"only tag time, and a bad line", "m,time=x v=1 1\nbad", http.StatusBadRequest,
			`partial write: invalid tag key: input tag "time" on measurement "m" is invalid dropped=1`, nil},
		{"field time", "m time=1 1\nm time=2,v=2 2", http.StatusBadRequest,
			`partial write: invalid field name: input field "time" on measurement "m" is invalid dropped=1`,
			[]telegraf.Metric{m(map[string]any{"v": 2.0}, 2)}},
		{"backslashes that travel", `a\b,t\k=v\w f\g=1 1` + "\n" + `m,t=x\\y v="\\" 2`, http.StatusNoContent, "",
			[]telegraf.Metric{
				metric.New(`a\b`, map[string]string{`t\k`: `v\w`, BucketTag: "db"}, map[string]any{`f\g`: 1.0}, ts(1)),
				metric.New("m", map[string]string{"t": `x\\y`, BucketTag: "db"}, map[string]any{"v": `\`}, ts(2)),
			}},
		// influxd reads "\\ " as a backslash and an escaped space, Telegraf
		// (the gateway's way) as an escaped backslash and the end of the name.
		{"a backslash the inlet cannot carry", "\\\\  v=1 1\nm v=2 2", http.StatusBadRequest,
			`partial write: unable to parse '\\  v=1 1': a backslash or a control character that the inlet cannot carry unchanged dropped=0`,
			[]telegraf.Metric{m(map[string]any{"v": 2.0}, 2)}},
		// influxd's parser accepts this line, and its field iterator then
		// reads a string of one quote (FuzzParseLines): influxd would
		// panic on it.
		{"a value influxd cannot read back", "0 0=\"\"\\,\"=\" 1\nm v=2 2", http.StatusBadRequest,
			`partial write: unable to parse '0 0=""\,"=" 1': a field value that influxd's own parser cannot read back dropped=0`,
			[]telegraf.Metric{m(map[string]any{"v": 2.0}, 2)}},
		{"type conflict", "m v=1 1\nm v=\"a\",w=1 2\nm v=3i 3\nm v=4 4\nn v=\"b\" 5", http.StatusBadRequest,
			`partial write: field type conflict: input field "v" on measurement "m" is type string, already exists as type float dropped=2`,
			[]telegraf.Metric{m(map[string]any{"v": 1.0}, 1), m(map[string]any{"v": 4.0}, 4),
				metric.New("n", map[string]string{BucketTag: "db"}, map[string]any{"v": "b"}, ts(5))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, s := newHandler(t, Config{})
			resp := do(h, request{target: "/write?db=db", body: tt.body})
			require.Equal(t, tt.status, resp.StatusCode)
			if tt.status != http.StatusNoContent {
				require.Equal(t, map[string]string{"error": tt.msg}, errorBody(t, resp))
			}
			var sent []telegraf.Metric
			for _, b := range s.sent() {
				sent = append(sent, b...)
			}
			testutil.RequireMetricsEqual(t, tt.sent, sent)
			if len(tt.sent) == 0 {
				require.Empty(t, s.sent(), "nothing sent")
			}

			// The same on /api/v2/write, in its error shape.
			h, _ = newHandler(t, Config{})
			resp = do(h, request{target: "/api/v2/write?bucket=db", body: tt.body})
			require.Equal(t, tt.status, resp.StatusCode)
			if tt.status != http.StatusNoContent {
				require.Equal(t, map[string]string{"code": "invalid", "message": tt.msg}, errorBody(t, resp))
			}
		})
	}
}

// TestPartialWriteAndListener: the good lines of a body with bad ones go to
// the listener; its answer comes first: a retry is a 503 (the client sends
// the body again, the bad lines are dropped again), a refusal is added to
// the partial write.
func TestPartialWriteAndListener(t *testing.T) {
	body := "m v=1 1\nm v= 2\n"
	h, s := newHandler(t, Config{})
	s.send = func([]telegraf.Metric) (sender.Result, error) { return sender.Result{}, errors.New("no channel") }
	resp := do(h, request{target: "/write?db=db", body: body})
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, map[string]string{"error": "not delivered, retry later: no channel"}, errorBody(t, resp))

	s.send = func(ms []telegraf.Metric) (sender.Result, error) {
		return sender.Result{Refused: []sender.Refusal{{Metrics: len(ms), Reason: "revoked", Listener: true}}}, nil
	}
	resp = do(h, request{target: "/write?db=db", body: body})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, map[string]string{"error": "partial write: unable to parse 'm v= 2': missing field value dropped=0; " +
		`1 of 1 points refused, dropped: listener: "revoked"`}, errorBody(t, resp))
	require.Len(t, s.sent(), 2)
}

// FuzzParseLines: the attacker is whoever reaches the inlet, and controls
// the whole body. Parsing must not panic, and what it accepts must be what
// InfluxDB stores and what survives the way to the gateway: every metric has
// a field, none has a tag or a field named "time", a field keeps one type in
// a body, and the metrics serialized as outputs.ockam does and parsed as the
// listener does come out equal. The lines written without a metric
// (appendPlain) must give the listener the same metrics, and the body the
// same answer, as serializing every point. The seed corpus is in
// testdata/fuzz/FuzzParseLines.
func FuzzParseLines(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzParseLines"))
	require.NoError(f, err)
	require.NotEmpty(f, entries, "the seed corpus is empty")
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		got := parseLines(body, now, "n", "db/rp")
		slow := parseBody(body, now, "n", "db/rp", false)
		require.Equal(t, slow.count, got.count)
		require.Equal(t, slow.parseErr, got.parseErr)
		require.Equal(t, slow.dropped, got.dropped)
		require.Equal(t, slow.dropReason, got.dropReason)
		require.Equal(t, slow.unserializable, got.unserializable)
		require.Len(t, slow.metrics, slow.count)
		if len(slow.metrics) == 0 {
			require.Empty(t, got.payload)
			return
		}
		types := map[string]string{}
		for _, m := range slow.metrics {
			require.NotEmpty(t, m.FieldList())
			_, hasTime := m.GetTag("time")
			require.False(t, hasTime)
			_, hasTime = m.GetField("time")
			require.False(t, hasTime)
			bucket, _ := m.GetTag(BucketTag)
			require.Equal(t, "db/rp", bucket)
			for _, fl := range m.FieldList() {
				key, typ := m.Name()+"\x00"+fl.Key, typeName(fieldType(fl.Value))
				if have, ok := types[key]; ok {
					require.Equal(t, have, typ, "field %q", fl.Key)
				}
				types[key] = typ
			}
		}
		for _, payload := range [][]byte{slow.payload, got.payload} {
			p := &influx.Parser{}
			require.NoError(t, p.Init())
			back, err := p.Parse(payload)
			require.NoError(t, err, "%s", payload)
			testutil.RequireMetricsEqual(t, slow.metrics, back)
		}
		require.LessOrEqual(t, len(slow.metrics), strings.Count(string(body), "\n")+1)
	})
}

// TestPlainLines: points of the usual kind are written without a Telegraf
// metric, byte for byte as Telegraf's serializer writes them; the others
// take the long way.
func TestPlainLines(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name, body, bucket, want string
		plain                    int
	}{
		{"tags around the bucket tag", "cpu,A=1,host=a v=1.5,n=2i,ok=true,s=\"x y\" 17\n", "db/rp",
			"cpu,A=1,_ockam_bucket=db/rp,host=a v=1.5,n=2i,ok=true,s=\"x y\" 17\n", 1},
		{"no tags, no timestamp, precision", "m v=1", "b", "m,_ockam_bucket=b v=1 1700000000000000000\n", 1},
		{"a bucket to escape", "m v=1 1", "my db", "m,_ockam_bucket=my\\ db v=1 1\n", 0},
		{"a client bucket tag", "m,_ockam_bucket=x v=1 1", "b", "m,_ockam_bucket=b v=1 1\n", 0},
		{"an escaped string", `m s="a\"b" 1`, "b", `m,_ockam_bucket=b s="a\"b" 1` + "\n", 0},
		{"an escaped space", `m,t=a\ b v=1 1`, "b", `m,_ockam_bucket=b,t=a\ b v=1 1` + "\n", 0},
		{"a field time", "m time=1,v=2 1", "b", "m,_ockam_bucket=b v=2 1\n", 0},
		{"values as they came", "m b=t,f=-.5E+3,g=1.,i=-0i 1", "b", "m,_ockam_bucket=b b=t,f=-.5E+3,g=1.,i=-0i 1\n", 1},
		{"leading zeros", "m v=007i 1", "b", "m,_ockam_bucket=b v=7i 1\n", 0},
		{"a float too large for Telegraf", "m v=1e400 1", "b", "", 0},
		{"a repeated field", "m v=1,v=2 1", "b", "m,_ockam_bucket=b v=2 1\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseLines([]byte(tc.body), now, "n", tc.bucket)
			require.Equal(t, tc.want, string(got.payload))
			require.Equal(t, tc.plain, got.plain)
			if tc.want != "" {
				require.Empty(t, got.parseErr)
				require.Equal(t, 1, got.count)
			}
		})
	}
}

// TestPartialWriteMessageBounded: a body of many bad lines is answered and
// logged with a message cut at maxErrorMessage bytes, on one log line.
func TestPartialWriteMessageBounded(t *testing.T) {
	log := &testutil.CaptureLogger{}
	h, s := newHandler(t, Config{Log: log})
	body := "m v=1 1\n" + strings.Repeat("m v="+strings.Repeat("x", 100)+"\n", 1000)
	resp := do(h, request{target: "/write?db=db", body: body})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	msg := errorBody(t, resp)["error"]
	require.Len(t, msg, maxErrorMessage+len("…"))
	require.True(t, strings.HasPrefix(msg, "partial write: unable to parse 'm v=xxx"), msg[:64])
	require.Len(t, s.sent(), 1)
	warnings := log.Warnings()
	require.Len(t, warnings, 1)
	require.NotContains(t, warnings[0], "\n")
	require.Less(t, len(warnings[0]), maxErrorMessage+512)
	require.Contains(t, warnings[0], `: 400 Bad Request: "partial write: unable to parse 'm v=xxx`)
}
