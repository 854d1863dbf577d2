package sink

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// fakeInfluxDB records the requests it gets and answers each with the
// next of its replies (the last one repeats).
type fakeInfluxDB struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	replies []reply
	reqs    []request
}

type reply struct {
	status int
	header map[string]string
	body   string
	hang   bool // never answer (until the client gives up)
}

type request struct {
	method, path string
	query        url.Values
	auth         string
	body         string
}

// InfluxDB 1.8's answers, as measured (see the issue): the message is in
// the JSON "error" and in X-Influxdb-Error.
func influx18(status int, msg string) reply {
	return reply{status: status, header: map[string]string{"Content-Type": "application/json", "X-Influxdb-Error": msg},
		body: fmt.Sprintf(`{"error":%q}`, msg)}
}

// InfluxDB 2.x's answers: JSON with code and message.
func influx2(status int, code, msg string) reply {
	return reply{status: status, header: map[string]string{"Content-Type": "application/json"},
		body: fmt.Sprintf(`{"code":%q,"message":%q}`, code, msg)}
}

var noContent = reply{status: http.StatusNoContent}

func newFakeInfluxDB(t *testing.T, replies ...reply) *fakeInfluxDB {
	f := &fakeInfluxDB{t: t, replies: replies}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeInfluxDB) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
		v, _ := url.ParseQuery(string(body))
		body = []byte(v.Get("q"))
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, request{r.Method, r.URL.Path, r.URL.Query(), r.Header.Get("Authorization"), string(body)})
	rep := f.replies[0]
	if len(f.replies) > 1 {
		f.replies = f.replies[1:]
	}
	f.mu.Unlock()
	if rep.hang {
		<-r.Context().Done()
		return
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (f *fakeInfluxDB) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

var statsID atomic.Int64

// newTestWriter returns a Writer to url with its own statistics.
func newTestWriter(t *testing.T, url string, edit func(*WriterConfig)) (*Writer, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{Name: "ockamd.influxdb"}
	cfg := WriterConfig{
		URL:        url,
		Token:      config.NewSecret([]byte("s3cr3t-token")),
		Org:        "acme",
		Bucket:     "telemetry",
		Timeout:    10 * time.Second, // never what ends a write to the fake, even on a loaded machine
		Log:        log,
		Statistics: selfstat.NewCollector(map[string]string{"test": fmt.Sprint(statsID.Add(1))}),
	}
	if edit != nil {
		edit(&cfg)
	}
	w, err := NewWriter(cfg)
	require.NoError(t, err)
	t.Cleanup(w.Close)
	return w, log
}

var ts = time.Unix(1700000000, 0)

func temp(site string, v any) telegraf.Metric {
	tags := map[string]string{"ockam_identity": "Iabc"}
	if site != "" {
		tags["site"] = site
	}
	return metric.New("temp", tags, map[string]any{"value": v}, ts)
}

func TestWriteRequest(t *testing.T) {
	f := newFakeInfluxDB(t, noContent)
	w, log := newTestWriter(t, f.srv.URL, nil)

	o := w.Write(context.Background(), []telegraf.Metric{temp("plant-7", 21.5), temp("plant-7", int64(3))})
	require.Equal(t, Outcome{Delivered: true}, o)
	reqs := f.requests()
	require.Len(t, reqs, 1, "one write per group")
	require.Equal(t, request{
		method: http.MethodPost,
		path:   "/api/v2/write",
		query:  url.Values{"org": {"acme"}, "bucket": {"telemetry"}, "precision": {"ns"}},
		auth:   "Token s3cr3t-token",
		body: "temp,ockam_identity=Iabc,site=plant-7 value=21.5 1700000000000000000\n" +
			"temp,ockam_identity=Iabc,site=plant-7 value=3i 1700000000000000000\n",
	}, reqs[0])
	require.Equal(t, int64(1), w.stats.groupsWritten.Get())
	require.Equal(t, int64(2), w.stats.metricsWritten.Get())
	require.Zero(t, log.NMessages())
	require.Empty(t, w.Status().Failing)
	require.False(t, w.Status().LastSuccess.IsZero())
}

// TestWriteOutcomes maps every kind of answer to the outcome the sender gets.
// notFound18 is what ockamd adds to the nack of a write to a missing
// database or bucket "telemetry": the bucket and the fix, for the device.
const notFound18 = ` (the gateway's InfluxDB has no database or bucket "telemetry": its operator must create it, ` +
	`or set create_database = true in ockamd's [influxdb] for InfluxDB 1.x)`

func TestWriteOutcomes(t *testing.T) {
	conflict := `partial write: field type conflict: input field "value" on measurement "temp" is type string, already exists as type float dropped=1`
	tests := []struct {
		name  string
		reply reply
		want  Outcome
		kind  string // groups_failed reason, "" when refused or delivered
		log   string // in the error or warning logged
	}{
		{"204", noContent, Outcome{Delivered: true}, "", ""},
		{"200", reply{status: http.StatusOK}, Outcome{Delivered: true}, "", ""},
		{"400 field type conflict (1.8)", influx18(400, conflict),
			Outcome{Permanent: true, Reason: "influxdb 400: " + conflict}, "", conflict},
		{"400 unable to parse (1.8)", influx18(400, "unable to parse 'temp value=': missing field value"),
			Outcome{Permanent: true, Reason: "influxdb 400: unable to parse 'temp value=': missing field value"}, "", "unable to parse"},
		{"400 invalid (2.x)", influx2(400, "invalid", "failure writing points to database: partial write: field type conflict"),
			Outcome{Permanent: true, Reason: "influxdb 400: failure writing points to database: partial write: field type conflict"}, "", "partial write"},
		{"413", reply{status: 413, header: map[string]string{"Content-Type": "text/plain"}, body: "Request Entity Too Large"},
			Outcome{Permanent: true, Reason: "influxdb 413: Request Entity Too Large"}, "", "Too Large"},
		{"422 (2.x, beyond retention)", influx2(422, "unprocessable entity", "points beyond retention policy"),
			Outcome{Permanent: true, Reason: "influxdb 422: points beyond retention policy"}, "", "beyond retention"},
		{"401 (1.8)", influx18(401, "authorization failed"),
			Outcome{Reason: "influxdb 401: the gateway is not allowed to write"}, kindUnauthorized, "REFUSED THE TOKEN"},
		{"401 (2.x)", influx2(401, "unauthorized", "unauthorized access"),
			Outcome{Reason: "influxdb 401: the gateway is not allowed to write"}, kindUnauthorized, "token_file, or OCKAMD_INFLUXDB_TOKEN"},
		{"403", influx2(403, "forbidden", "insufficient permissions for write"),
			Outcome{Reason: "influxdb 403: the gateway is not allowed to write"}, kindUnauthorized, "REFUSED THE TOKEN"},
		{"404 database not found (1.8)", influx18(404, `database not found: "telemetry"`),
			Outcome{Reason: `influxdb 404: database not found: "telemetry"` + notFound18}, kindNotFound, "create_database = true"},
		{"404 bucket not found (2.x)", influx2(404, "not found", `bucket "telemetry" not found`),
			Outcome{Reason: `influxdb 404: bucket "telemetry" not found` + notFound18}, kindNotFound, "has no bucket or database"},
		{"408", reply{status: 408}, Outcome{Reason: "influxdb 408: Request Timeout"}, kindUnavailable, "408"},
		{"429", reply{status: 429, header: map[string]string{"Retry-After": "3"}},
			Outcome{Reason: "influxdb 429: Too Many Requests"}, kindUnavailable, "429"},
		{"500 retention policy not found (1.8)", influx18(500, "retention policy not found: nope"),
			Outcome{Reason: "influxdb 500: retention policy not found: nope"}, kindUnavailable, "retention policy not found"},
		{"502", reply{status: 502, body: "bad gateway"}, Outcome{Reason: "influxdb 502: bad gateway"}, kindUnavailable, "bad gateway"},
		{"503", reply{status: 503}, Outcome{Reason: "influxdb 503: Service Unavailable"}, kindUnavailable, "503"},
		{"hang", reply{hang: true}, Outcome{Reason: "influxdb: no answer within 200ms"}, kindTimeout, "did not answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeInfluxDB(t, tt.reply)
			// A short timeout where it is what the case checks; elsewhere one
			// that a loaded machine cannot exceed before the fake answers
			// (200 ms did: "no answer within 200ms" for the 429).
			timeout := 10 * time.Second
			if tt.reply.hang {
				timeout = 200 * time.Millisecond
			}
			w, log := newTestWriter(t, f.srv.URL, func(c *WriterConfig) { c.Timeout = timeout })
			start := time.Now()
			got := w.Write(context.Background(), []telegraf.Metric{temp("", "hot")})
			if tt.reply.hang {
				// The reason below says the timeout ended it; this says it was not the fake's hang.
				require.Less(t, time.Since(start), wait, "the write is bounded by the timeout")
			}
			require.Equal(t, tt.want, got)
			require.Len(t, f.requests(), 1, "no retry inside the writer")

			switch {
			case tt.want.Delivered:
				require.Zero(t, log.NMessages())
			case tt.want.Permanent:
				require.Equal(t, int64(1), w.stats.groupsRefused.Get())
				require.Len(t, log.Warnings(), 1)
				require.Contains(t, log.Warnings()[0], tt.log)
				require.Empty(t, w.Status().Failing, "a refusal is the sender's problem, not InfluxDB's")
			default:
				require.Equal(t, int64(1), w.stats.groupsFailed[tt.kind].Get())
				require.Len(t, log.Errors(), 1)
				require.Contains(t, log.Errors()[0], tt.log)
				require.Equal(t, tt.want.Reason, w.Status().Failing)
			}
			for _, m := range log.Messages() {
				require.NotContains(t, m.Text, "s3cr3t", "the token is never logged")
			}
			require.NotContains(t, got.Reason, f.srv.URL, "reasons go to devices: no URL")
		})
	}
}

func TestWriteUnreachable(t *testing.T) {
	f := newFakeInfluxDB(t, noContent)
	f.srv.Close() // connection refused
	w, log := newTestWriter(t, f.srv.URL, nil)

	got := w.Write(context.Background(), []telegraf.Metric{temp("", 1.0)})
	require.Equal(t, Outcome{Reason: "influxdb unreachable"}, got)
	require.Equal(t, int64(1), w.stats.groupsFailed[kindUnreachable].Get())
	require.Len(t, log.Errors(), 1)
	require.Contains(t, log.Errors()[0], "is unreachable")
	require.Contains(t, log.Errors()[0], "connection refused")

	// Logged once a minute, counted every time.
	w.Write(context.Background(), []telegraf.Metric{temp("", 1.0)})
	require.Len(t, log.Errors(), 1)
	require.Equal(t, int64(2), w.stats.groupsFailed[kindUnreachable].Get())
}

func TestWriteRecovers(t *testing.T) {
	f := newFakeInfluxDB(t, reply{status: 503}, noContent)
	w, log := newTestWriter(t, f.srv.URL, nil)
	require.False(t, w.Write(context.Background(), []telegraf.Metric{temp("", 1.0)}).Delivered)
	require.NotEmpty(t, w.Status().Failing)
	require.True(t, w.Write(context.Background(), []telegraf.Metric{temp("", 1.0)}).Delivered)
	require.Empty(t, w.Status().Failing)
	require.Contains(t, log.Messages()[len(log.Messages())-1].Text, "InfluxDB accepts writes again")
}

func TestCreateDatabase(t *testing.T) {
	notFound := influx18(404, `database not found: "telemetry"`)
	created := reply{status: 200, header: map[string]string{"Content-Type": "application/json"}, body: `{"results":[{"statement_id":0}]}`}
	f := newFakeInfluxDB(t, notFound, created, noContent)
	w, log := newTestWriter(t, f.srv.URL, func(c *WriterConfig) { c.CreateDatabase = true; c.Bucket = "telemetry/autogen" })

	require.Equal(t, Outcome{Delivered: true}, w.Write(context.Background(), []telegraf.Metric{temp("", 1.0)}))
	reqs := f.requests()
	require.Len(t, reqs, 3)
	require.Equal(t, "/api/v2/write", reqs[0].path)
	require.Equal(t, request{method: http.MethodPost, path: "/query", query: url.Values{},
		auth: "Token s3cr3t-token", body: `CREATE DATABASE "telemetry"`}, reqs[1])
	require.Equal(t, reqs[0], reqs[2], "the same write again")
	require.Equal(t, int64(1), w.stats.databasesCreated.Get())
	require.Contains(t, log.Messages()[0].Text, `Created database "telemetry"`)
}

func TestCreateDatabaseFails(t *testing.T) {
	notFound := influx18(404, `database not found: "telemetry"`)
	// InfluxDB 1.x answers 200 when a statement fails.
	refused := reply{status: 200, header: map[string]string{"Content-Type": "application/json"},
		body: `{"results":[{"statement_id":0,"error":"error authorizing query: user1 not authorized to execute statement 'CREATE DATABASE telemetry', requires admin privilege"}]}`}
	f := newFakeInfluxDB(t, notFound, refused)
	w, log := newTestWriter(t, f.srv.URL, func(c *WriterConfig) { c.CreateDatabase = true })

	got := w.Write(context.Background(), []telegraf.Metric{temp("", 1.0)})
	require.Equal(t, Outcome{Reason: `influxdb 404: database not found: "telemetry" (the gateway's InfluxDB has no ` +
		`database or bucket "telemetry" and create_database failed: its operator must create it; see ockamd's log)`}, got)
	require.Len(t, f.requests(), 2, "no second write")
	require.Len(t, log.Errors(), 2)
	require.Contains(t, log.Errors()[0], "requires admin privilege")
	require.Contains(t, log.Errors()[1], `has no bucket or database "telemetry"`)
	require.Zero(t, w.stats.databasesCreated.Get())
}

func TestBucketRouting(t *testing.T) {
	f := newFakeInfluxDB(t, noContent)
	w, _ := newTestWriter(t, f.srv.URL, func(c *WriterConfig) { c.BucketAttribute = "site" })

	// One group per bucket, in the order of their first metric.
	got := w.Write(context.Background(), []telegraf.Metric{temp("plant-9", 1.0), temp("", 2.0), temp("plant-7", 3.0), temp("plant-9", 4.0)})
	require.True(t, got.Delivered)
	var buckets []string
	for _, r := range f.requests() {
		buckets = append(buckets, fmt.Sprintf("%s: %d", r.query.Get("bucket"), strings.Count(r.body, "\n")))
	}
	require.Equal(t, []string{"telemetry_plant-9: 2", "telemetry: 1", "telemetry_plant-7: 1"}, buckets)

	// A value that cannot name a bucket is refused for good, unwritten.
	for _, v := range []string{"a/b", "plant 7", `x"y`, ".hidden", "é"} {
		got := w.Write(context.Background(), []telegraf.Metric{temp(v, 1.0)})
		require.True(t, got.Permanent, v)
		require.Contains(t, got.Reason, fmt.Sprintf("site attribute %q cannot name a bucket", v))
	}
	require.Len(t, f.requests(), 3)
}

func TestUintSupport(t *testing.T) {
	for _, uintSupport := range []bool{false, true} {
		f := newFakeInfluxDB(t, noContent)
		w, _ := newTestWriter(t, f.srv.URL, func(c *WriterConfig) { c.UintSupport = uintSupport })
		require.True(t, w.Write(context.Background(), []telegraf.Metric{temp("", uint64(42))}).Delivered)
		want := "value=42i"
		if uintSupport {
			want = "value=42u"
		}
		require.Contains(t, f.requests()[0].body, want)
	}
}

func TestNewWriterRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(*WriterConfig)
		want string
	}{
		{"no url", func(c *WriterConfig) { c.URL = "" }, "url is required"},
		{"scheme", func(c *WriterConfig) { c.URL = "tcp://127.0.0.1:8086" }, "want http(s)://host:port"},
		{"user in url", func(c *WriterConfig) { c.URL = "http://u:p@127.0.0.1:8086" }, "want http(s)://host:port"},
		{"no bucket", func(c *WriterConfig) { c.Bucket = "" }, "bucket is required"},
		{"timeout", func(c *WriterConfig) { c.Timeout = 0 }, "timeout must be positive"},
		{"template without attribute", func(c *WriterConfig) { c.BucketTemplate = "x_{{site}}" }, "needs bucket_attribute"},
		{"template without placeholder", func(c *WriterConfig) { c.BucketAttribute = "site"; c.BucketTemplate = "x_{{zone}}" },
			"does not contain {{site}}"},
		{"two placeholders", func(c *WriterConfig) { c.BucketAttribute = "site"; c.BucketTemplate = "{{site}}_{{site}}" },
			"only one placeholder"},
		{"retention policy and default template", func(c *WriterConfig) { c.BucketAttribute = "site"; c.Bucket = "db/autogen" },
			"set bucket_template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := WriterConfig{URL: "http://127.0.0.1:8086", Bucket: "telemetry", Timeout: time.Second,
				Log: testutil.Logger{}, Statistics: selfstat.NewCollector(nil)}
			tt.edit(&cfg)
			_, err := NewWriter(cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestRouteTemplate(t *testing.T) {
	tests := []struct{ bucket, attribute, template, site, want string }{
		{"telemetry", "", "", "plant-7", "telemetry"},
		{"telemetry", "site", "", "plant-7", "telemetry_plant-7"},
		{"telemetry", "site", "", "", "telemetry"},
		{"db/autogen", "site", "telemetry_{{site}}/autogen", "plant-7", "telemetry_plant-7/autogen"},
		{"telemetry", "site", "{{site}}", "Plant_7.b", "Plant_7.b"},
		{"telemetry", "site", "site-{{site}}-raw", "9", "site-9-raw"},
	}
	for _, tt := range tests {
		r, err := newRoute(tt.bucket, tt.attribute, tt.template)
		require.NoError(t, err)
		got, err := r.bucketOf(temp(tt.site, 1.0))
		require.NoError(t, err)
		require.Equal(t, tt.want, got, "%+v", tt)
	}
}

func TestWriteCanceled(t *testing.T) {
	f := newFakeInfluxDB(t, reply{hang: true})
	w, log := newTestWriter(t, f.srv.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(f.requests()) == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	require.Equal(t, Outcome{Reason: ReasonShuttingDown}, w.Write(ctx, []telegraf.Metric{temp("", 1.0)}))
	require.Equal(t, int64(1), w.stats.groupsFailed[kindCanceled].Get())
	require.Zero(t, log.NMessages(), "stopping is not InfluxDB's failure")
	require.Empty(t, w.Status().Failing)
}

// TestWriteKeepsConnections: rounds of parallel writes reuse the
// connections of the first round. With net/http's default of 2 idle
// connections per host, each round of 4 closed 2 and opened 2 new ones.
func TestWriteKeepsConnections(t *testing.T) {
	const parallel, rounds = 4, 5
	var conns atomic.Int64
	arrived := make(chan struct{}, parallel)
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release // every write of the round is in flight at once: each needs its own connection
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	w, _ := newTestWriter(t, srv.URL, func(c *WriterConfig) { c.ParallelWrites = parallel })

	for range rounds {
		var wg sync.WaitGroup
		outcomes := make([]Outcome, parallel)
		for i := range parallel {
			wg.Go(func() { outcomes[i] = w.Write(context.Background(), []telegraf.Metric{temp("plant-7", 21.5)}) })
		}
		for range parallel {
			<-arrived
		}
		for range parallel {
			release <- struct{}{}
		}
		wg.Wait()
		for _, o := range outcomes {
			require.Equal(t, Outcome{Delivered: true}, o)
		}
	}
	require.Equal(t, int64(parallel), conns.Load(), "connections opened for %d rounds of %d parallel writes", rounds, parallel)
}

// BenchmarkSerialize: the line protocol of one message of 256 KiB (about
// 1,700 metrics of 3 tags, the stamped identity among them, and 5 fields).
func BenchmarkSerialize(b *testing.B) {
	w := &Writer{log: testutil.Logger{}}
	metrics := make([]telegraf.Metric, 1700)
	for i := range metrics {
		metrics[i] = metric.New("cpu", map[string]string{
			"host": fmt.Sprintf("device-%d", i%10), "region": "eu-west",
			"ockam_identity": "I" + strings.Repeat("0123456789abcdef", 4),
		}, map[string]any{"usage": 12.5 + float64(i), "idle": 80.25, "count": int64(i), "up": true, "state": "running"},
			ts.Add(time.Duration(i)))
	}
	b.ReportAllocs()
	for b.Loop() {
		body, n := w.serialize(metrics)
		if n != len(metrics) || len(body) == 0 {
			b.Fatalf("%d metrics, %d bytes", n, len(body))
		}
	}
}

// TestWriteGroups: the groups of several messages go in one write, and each
// gets the write's outcome; when InfluxDB refuses that write for good, each
// group is written again alone and only the one holding the refused point
// is refused.
func TestWriteGroups(t *testing.T) {
	lines := func(vs ...string) string {
		var b strings.Builder
		for _, v := range vs {
			b.WriteString("temp,ockam_identity=Iabc,site=plant-7 value=" + v + " 1700000000000000000\n")
		}
		return b.String()
	}
	groups := [][]telegraf.Metric{{temp("plant-7", 1.5), temp("plant-7", 2.5)}, {temp("plant-7", "bad")}, {temp("plant-7", 3.5)}}
	conflict := `partial write: field type conflict: input field "value" on measurement "temp" is type string, already exists as type float dropped=1`
	refused := Outcome{Permanent: true, Reason: "influxdb 400: " + conflict}

	t.Run("delivered", func(t *testing.T) {
		f := newFakeInfluxDB(t, noContent)
		w, _ := newTestWriter(t, f.srv.URL, nil)
		require.Equal(t, []Outcome{{Delivered: true}, {Delivered: true}, {Delivered: true}}, w.WriteGroups(context.Background(), groups))
		reqs := f.requests()
		require.Len(t, reqs, 1, "one write for the three messages")
		require.Equal(t, lines("1.5", "2.5", `"bad"`, "3.5"), reqs[0].body)
		require.Equal(t, int64(3), w.stats.groupsWritten.Get())
		require.Equal(t, int64(4), w.stats.metricsWritten.Get())
		require.Equal(t, int64(1), w.stats.writes.Get())
	})
	t.Run("refused", func(t *testing.T) {
		f := newFakeInfluxDB(t, influx18(400, conflict), noContent, influx18(400, conflict), noContent)
		w, log := newTestWriter(t, f.srv.URL, nil)
		require.Equal(t, []Outcome{{Delivered: true}, refused, {Delivered: true}}, w.WriteGroups(context.Background(), groups))
		var bodies []string
		for _, r := range f.requests() {
			bodies = append(bodies, r.body)
		}
		require.Equal(t, []string{lines("1.5", "2.5", `"bad"`, "3.5"), lines("1.5", "2.5"), lines(`"bad"`), lines("3.5")}, bodies)
		require.Equal(t, int64(2), w.stats.groupsWritten.Get())
		require.Equal(t, int64(1), w.stats.groupsRefused.Get())
		require.Equal(t, int64(3), w.stats.metricsWritten.Get())
		require.Equal(t, int64(4), w.stats.writes.Get())
		var warnings []string
		for _, m := range log.Messages() {
			if m.Level == testutil.LevelWarn {
				warnings = append(warnings, m.Text)
			}
		}
		require.Equal(t, []string{`InfluxDB refused 1 metrics for bucket "telemetry" for good, the sender drops them: 400 Bad Request: ` +
			conflict + `; further refusals are logged at most once a minute`}, warnings, "the message's refusal is logged, not the group's")
	})
	t.Run("transient", func(t *testing.T) {
		f := newFakeInfluxDB(t, influx18(503, "busy"))
		w, _ := newTestWriter(t, f.srv.URL, nil)
		busy := Outcome{Reason: "influxdb 503: service temporarily unavailable"} // the client's text for a 503
		require.Equal(t, []Outcome{busy, busy, busy}, w.WriteGroups(context.Background(), groups))
		require.Len(t, f.requests(), 1, "not written again alone: the sender retries")
		require.Equal(t, int64(3), w.stats.groupsFailed[kindUnavailable].Get())
	})
}
