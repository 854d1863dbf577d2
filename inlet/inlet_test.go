package inlet

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

// fakeSender records what it is asked to send and answers as told.
type fakeSender struct {
	mu      sync.Mutex
	batches [][]telegraf.Metric
	send    func([]telegraf.Metric) (sender.Result, error) // nil: ack all
	peerErr error
}

// Send parses payloads as the listener does, records the metrics and
// answers for them.
func (f *fakeSender) Send(_ context.Context, payloads []sender.Payload) (sender.Result, error) {
	var ms []telegraf.Metric
	for _, p := range payloads {
		parser := &influx.Parser{}
		if err := parser.Init(); err != nil {
			return sender.Result{}, err
		}
		got, err := parser.Parse(p.Lines)
		if err != nil || len(got) != p.Metrics {
			return sender.Result{}, fmt.Errorf("payload of %d metrics %q: %d parsed, %v", p.Metrics, p.Lines, len(got), err)
		}
		ms = append(ms, got...)
	}
	f.mu.Lock()
	f.batches = append(f.batches, ms)
	send := f.send
	f.mu.Unlock()
	if send != nil {
		return send(ms)
	}
	return sender.Result{Acked: len(ms)}, nil
}

func (f *fakeSender) Peer() (secure.Identifier, error) {
	return secure.Identifier{0xab}, f.peerErr
}

func (f *fakeSender) sent() [][]telegraf.Metric {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]telegraf.Metric(nil), f.batches...)
}

// fixedNow is the clock of the tests: points without a timestamp get it.
var fixedNow = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

// newHandler returns a Handler over a fakeSender, with cfg's other fields
// where set.
func newHandler(t *testing.T, cfg Config) (*Handler, *fakeSender) {
	t.Helper()
	s := &fakeSender{}
	cfg.Sender = s
	if cfg.Log == nil {
		cfg.Log = testutil.Logger{Quiet: true}
	}
	cfg.Now = func() time.Time { return fixedNow }
	cfg.Version = "test-1"
	h, err := New(cfg)
	require.NoError(t, err)
	return h, s
}

// request is one HTTP request to a Handler.
type request struct {
	method, target, body string
	gzip                 bool
	header               map[string]string
}

// do serves r and returns the response.
func do(h http.Handler, r request) *http.Response {
	var body io.Reader = strings.NewReader(r.body)
	if r.gzip {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(r.body))
		_ = zw.Close()
		body = &b
	}
	if r.method == "" {
		r.method = http.MethodPost
	}
	req := httptest.NewRequest(r.method, r.target, body)
	req.Host = "127.0.0.1:8086" // httptest's default, example.com, is refused
	if r.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

// errorBody decodes a JSON error body.
func errorBody(t *testing.T, resp *http.Response) map[string]string {
	t.Helper()
	require.Equal(t, "application/json; charset=utf-8", resp.Header.Get("Content-Type"))
	var m map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return m
}

func TestWriteV2Gzip(t *testing.T) {
	h, s := newHandler(t, Config{})
	resp := do(h, request{
		target: "/api/v2/write?org=acme&bucket=telemetry&precision=s",
		body:   "cpu,host=a usage=0.5,n=3i 1700000000\nmem,host=a,_ockam_bucket=forged used=10i\n",
		gzip:   true,
	})
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, "test-1", resp.Header.Get("X-Influxdb-Version"))
	want := []telegraf.Metric{
		metric.New("cpu", map[string]string{"host": "a", BucketTag: "telemetry"},
			map[string]any{"usage": 0.5, "n": int64(3)}, time.Unix(1700000000, 0)),
		// No timestamp: the inlet's clock, truncated to the precision. The
		// client's own _ockam_bucket tag is replaced.
		metric.New("mem", map[string]string{"host": "a", BucketTag: "telemetry"},
			map[string]any{"used": int64(10)}, fixedNow.Truncate(time.Second)),
	}
	sent := s.sent()
	require.Len(t, sent, 1)
	testutil.RequireMetricsEqual(t, want, sent[0])
}

func TestWriteV1(t *testing.T) {
	h, s := newHandler(t, Config{})
	for target, bucket := range map[string]string{
		"/write?db=telemetry":                      "telemetry",
		"/write?db=telemetry&rp=autogen":           "telemetry/autogen",
		"/write?db=telemetry&rp=week&precision=ms": "telemetry/week",
	} {
		resp := do(h, request{target: target, body: "t v=1 1700000000000"})
		require.Equal(t, http.StatusNoContent, resp.StatusCode, target)
		last := s.sent()[len(s.sent())-1]
		require.Equal(t, bucket, last[0].Tags()[BucketTag], target)
	}
	resp := do(h, request{target: "/write?rp=autogen", body: "t v=1"})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, map[string]string{"error": "database is required"}, errorBody(t, resp))
	resp = do(h, request{target: "/api/v2/write?org=acme", body: "t v=1"})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, map[string]string{"code": "invalid", "message": "bucket is required"}, errorBody(t, resp))
	require.Len(t, s.sent(), 3)
}

func TestPrecision(t *testing.T) {
	const v = 1_700_000_000
	tests := []struct {
		api, precision string
		ts             int64     // the timestamp in the line
		want           time.Time // zero: refused with 400
	}{
		{"v2", "", v, time.Unix(0, v)},
		{"v2", "ns", v, time.Unix(0, v)},
		{"v2", "us", v, time.Unix(0, v*1e3)},
		{"v2", "ms", v, time.Unix(0, v*1e6)},
		{"v2", "s", v, time.Unix(v, 0)},
		{"v2", "n", v, time.Time{}},
		{"v2", "m", v, time.Time{}},
		{"v2", "h", v, time.Time{}},
		{"v2", "S", v, time.Time{}},
		{"v1", "", v, time.Unix(0, v)},
		{"v1", "n", v, time.Unix(0, v)},
		{"v1", "ns", v, time.Unix(0, v)},
		{"v1", "u", v, time.Unix(0, v*1e3)},
		{"v1", "us", v, time.Unix(0, v*1e3)},
		{"v1", "ms", v, time.Unix(0, v*1e6)},
		{"v1", "s", v, time.Unix(v, 0)},
		{"v1", "m", v / 60, time.Unix(v/60*60, 0)},
		{"v1", "h", v / 3600, time.Unix(v/3600*3600, 0)},
		{"v1", "d", v, time.Time{}},
		// Past InfluxDB's range (year 2262) once scaled: refused, not wrapped.
		{"v1", "s", 9_300_000_000, time.Time{}},
		{"v1", "h", v, time.Time{}},
		{"v2", "s", -9_300_000_000, time.Time{}},
		{"v2", "ns", -9223372036854775806, time.Unix(0, -9223372036854775806)}, // InfluxDB's earliest
		{"v2", "ns", -9223372036854775807, time.Time{}},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/%s/%d", tt.api, tt.precision, tt.ts)
		t.Run(name, func(t *testing.T) {
			h, s := newHandler(t, Config{})
			target := "/api/v2/write?bucket=b&precision=" + tt.precision
			if tt.api == "v1" {
				target = "/write?db=b&precision=" + tt.precision
			}
			resp := do(h, request{target: target, body: fmt.Sprintf("t v=1 %d\n", tt.ts)})
			if tt.want.IsZero() {
				require.Equal(t, http.StatusBadRequest, resp.StatusCode)
				require.Empty(t, s.sent())
				return
			}
			require.Equal(t, http.StatusNoContent, resp.StatusCode)
			require.Equal(t, tt.want.UnixNano(), s.sent()[0][0].Time().UnixNano())
		})
	}
}

func TestPrecisionWithoutTimestamp(t *testing.T) {
	h, s := newHandler(t, Config{})
	resp := do(h, request{target: "/write?db=b&precision=h", body: "t v=1"})
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, fixedNow.Truncate(time.Hour), s.sent()[0][0].Time().UTC())
	resp = do(h, request{target: "/api/v2/write?bucket=b", body: "t v=1\nt v=2 5"})
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, fixedNow, s.sent()[1][0].Time().UTC())
	require.Equal(t, time.Unix(0, 5).UTC(), s.sent()[1][1].Time().UTC())
}

func TestBadBodies(t *testing.T) {
	h, s := newHandler(t, Config{})
	tests := []struct {
		name   string
		req    request
		status int
		text   string
	}{
		{"bad line", request{body: "cpu usage=\n"}, http.StatusBadRequest, "unable to parse 'cpu usage=': missing field value"},
		{"not gzip", request{body: "cpu v=1", header: map[string]string{"Content-Encoding": "gzip"}}, http.StatusBadRequest, "gzip"},
		{"truncated gzip", request{body: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x4a", header: map[string]string{"Content-Encoding": "gzip"}}, http.StatusBadRequest, "reading the body"},
		{"deflate", request{body: "cpu v=1", header: map[string]string{"Content-Encoding": "deflate"}}, http.StatusUnsupportedMediaType, `"deflate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.target = "/api/v2/write?bucket=b"
			resp := do(h, tt.req)
			require.Equal(t, tt.status, resp.StatusCode)
			body := errorBody(t, resp)
			require.Equal(t, codes[tt.status], body["code"])
			require.Contains(t, body["message"], tt.text)
		})
	}
	require.Empty(t, s.sent())
}

func TestToken(t *testing.T) {
	h, s := newHandler(t, Config{Token: []byte("s3cret")})
	tests := []struct {
		name   string
		target string
		header map[string]string
		status int
	}{
		{"v2 none", "/api/v2/write?bucket=b", nil, http.StatusUnauthorized},
		{"v2 wrong", "/api/v2/write?bucket=b", map[string]string{"Authorization": "Token s3cre"}, http.StatusUnauthorized},
		{"v2 longer", "/api/v2/write?bucket=b", map[string]string{"Authorization": "Token s3crets"}, http.StatusUnauthorized},
		{"v2 bearer", "/api/v2/write?bucket=b", map[string]string{"Authorization": "Bearer s3cret"}, http.StatusUnauthorized},
		{"v2 token", "/api/v2/write?bucket=b", map[string]string{"Authorization": "Token s3cret"}, http.StatusNoContent},
		{"v2 basic", "/api/v2/write?bucket=b", map[string]string{"Authorization": "Basic dTpzM2NyZXQ="}, http.StatusUnauthorized},
		{"v2 p", "/api/v2/write?bucket=b&p=s3cret", nil, http.StatusUnauthorized},
		// Before the parameters are checked: nothing is told to a stranger.
		{"v2 none, no bucket", "/api/v2/write", nil, http.StatusUnauthorized},
		{"v1 none", "/write?db=b", nil, http.StatusUnauthorized},
		{"v1 token", "/write?db=b", map[string]string{"Authorization": "Token s3cret"}, http.StatusNoContent},
		{"v1 basic", "/write?db=b", map[string]string{"Authorization": "Basic dTpzM2NyZXQ="}, http.StatusNoContent}, // u:s3cret
		{"v1 basic wrong", "/write?db=b", map[string]string{"Authorization": "Basic dTpzM2NyZXU="}, http.StatusUnauthorized},
		{"v1 p", "/write?db=b&u=u&p=s3cret", nil, http.StatusNoContent},
		{"v1 p wrong", "/write?db=b&u=u&p=secret", nil, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.sent())
			resp := do(h, request{target: tt.target, body: "t v=1", header: tt.header})
			require.Equal(t, tt.status, resp.StatusCode)
			if tt.status == http.StatusUnauthorized {
				require.Len(t, s.sent(), before, "nothing sent without the token")
				body := errorBody(t, resp)
				if strings.HasPrefix(tt.target, "/write") {
					require.Equal(t, "unauthorized access", body["error"])
				} else {
					require.Equal(t, "unauthorized", body["code"])
				}
			}
		})
	}
	// /ping and /health need no token, as in InfluxDB.
	require.Equal(t, http.StatusNoContent, do(h, request{method: http.MethodGet, target: "/ping"}).StatusCode)
	require.Equal(t, http.StatusOK, do(h, request{method: http.MethodGet, target: "/health"}).StatusCode)
}

func TestBodyTooLarge(t *testing.T) {
	const limit = 1000
	h, s := newHandler(t, Config{MaxBodySize: limit})
	line := "cpu value=1\n"
	fits := strings.Repeat(line, limit/len(line))
	over := fits + line
	tests := []struct {
		name   string
		req    request
		status int
	}{
		{"fits", request{body: fits}, http.StatusNoContent},
		{"content-length over", request{body: over}, http.StatusRequestEntityTooLarge},
		{"gzip fits", request{body: fits, gzip: true}, http.StatusNoContent},
		// A small gzip body that expands past the limit.
		{"gzip expands over", request{body: strings.Repeat(line, 200), gzip: true}, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.target = "/api/v2/write?bucket=b"
			resp := do(h, tt.req)
			require.Equal(t, tt.status, resp.StatusCode)
			if tt.status == http.StatusRequestEntityTooLarge {
				require.Equal(t, "request too large", errorBody(t, resp)["code"])
			}
		})
	}
	// Without a Content-Length (chunked), the limit holds while reading.
	req := httptest.NewRequest(http.MethodPost, "/write?db=b", io.MultiReader(strings.NewReader(over)))
	req.Host = "localhost:8086"
	req.ContentLength = -1
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	require.Equal(t, http.StatusRequestEntityTooLarge, w.Code)
	require.Contains(t, w.Body.String(), `"error":"body is larger than 1000 bytes"`)
	require.Len(t, s.sent(), 2)
}

func TestSendOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		res     sender.Result
		err     error
		status  int
		message string // a part of it
	}{
		{"ack", sender.Result{Acked: 2}, nil, http.StatusNoContent, ""},
		{"no channel", sender.Result{}, errors.New("no channel to tcp://gw:4000: connection refused"),
			http.StatusServiceUnavailable, "not delivered, retry later: no channel to tcp://gw:4000: connection refused"},
		{"transient nack after an ack", sender.Result{Acked: 1}, errors.New(`listener asked to retry 1 metrics later: "not delivered"`),
			http.StatusServiceUnavailable, "retry later"},
		{"revoked", sender.Result{Refused: []sender.Refusal{{Metrics: 2, Reason: "revoked", Listener: true}}}, nil,
			http.StatusBadRequest, `2 of 2 points refused, dropped: listener: "revoked"`},
		{"partly refused", sender.Result{Acked: 1, Refused: []sender.Refusal{{Metrics: 1, Reason: `policy: measurement "mem" is not allowed`, Listener: true}}}, nil,
			http.StatusBadRequest, `1 of 2 points refused, dropped: listener: "policy: measurement \"mem\" is not allowed"`},
		{"refused by the sender", sender.Result{Acked: 1, Refused: []sender.Refusal{{Metrics: 1, Reason: "too long"}}}, nil,
			http.StatusBadRequest, "refused, dropped: too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, api := range []apiVersion{v2API, v1API} {
				h, s := newHandler(t, Config{})
				s.send = func([]telegraf.Metric) (sender.Result, error) { return tt.res, tt.err }
				target := map[apiVersion]string{v2API: "/api/v2/write?bucket=b", v1API: "/write?db=b"}[api]
				resp := do(h, request{target: target, body: "cpu v=1\nmem v=2\n", gzip: true})
				require.Equal(t, tt.status, resp.StatusCode)
				if tt.status == http.StatusServiceUnavailable {
					require.Equal(t, "1", resp.Header.Get("Retry-After"))
				} else {
					require.Empty(t, resp.Header.Get("Retry-After"))
				}
				if tt.status == http.StatusNoContent {
					continue
				}
				body := errorBody(t, resp)
				if api == v1API {
					require.Contains(t, body["error"], tt.message)
					continue
				}
				require.Equal(t, codes[tt.status], body["code"])
				require.Contains(t, body["message"], tt.message)
			}
		})
	}
}

func TestPingHealthAndRoutes(t *testing.T) {
	stats := newCollector(t)
	h, s := newHandler(t, Config{Statistics: stats})
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp := do(h, request{method: method, target: "/ping"})
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
		require.Equal(t, "test-1", resp.Header.Get("X-Influxdb-Version"))
	}
	resp := do(h, request{method: http.MethodPost, target: "/ping"})
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "GET", resp.Header.Get("Allow"))
	resp = do(h, request{method: http.MethodGet, target: "/api/v2/write?bucket=b"})
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
	resp = do(h, request{method: http.MethodGet, target: "/query?q=show+databases"})
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, "not found", errorBody(t, resp)["code"])

	require.Equal(t, http.StatusNoContent, do(h, request{target: "/write?db=b", body: "t v=1\nt v=2 2"}).StatusCode)
	require.Equal(t, http.StatusBadRequest, do(h, request{target: "/write?db=b", body: "t v="}).StatusCode)

	var hb health
	resp = do(h, request{method: http.MethodGet, target: "/health"})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&hb))
	require.Equal(t, "pass", hb.Status)
	require.Equal(t, "test-1", hb.Version)
	require.Contains(t, hb.Message, "channel open to listener Iab00")
	require.Equal(t, map[string]int64{
		"ockam_inlet.writes": 2, "ockam_inlet.writes_acked": 1, "ockam_inlet.writes_refused": 1,
		"ockam_inlet.writes_unavailable": 0, "ockam_inlet.writes_too_large": 0, "ockam_inlet.writes_unauthorized": 0,
		"ockam_inlet.writes_other": 0, "ockam_inlet.metrics_received": 2, "ockam_inlet.metrics_acked": 2,
		"ockam_inlet.metrics_refused": 0, "ockam_inlet.browser_requests_refused": 0,
	}, hb.Counters)

	s.peerErr = errors.New("dial tcp 127.0.0.1:4000: connection refused")
	resp = do(h, request{method: http.MethodGet, target: "/health"})
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&hb))
	require.Equal(t, "fail", hb.Status)
	require.Equal(t, "no channel to the listener: dial tcp 127.0.0.1:4000: connection refused", hb.Message)
}

func TestConcurrentWritesAreBounded(t *testing.T) {
	h, s := newHandler(t, Config{})
	release := make(chan struct{})
	var inFlight, most atomic.Int64
	s.send = func(ms []telegraf.Metric) (sender.Result, error) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inFlight.Add(-1)
		return sender.Result{Acked: len(ms)}, nil
	}
	const writes = 3 * maxConcurrentWrites
	var wg sync.WaitGroup
	codes := make(chan int, writes)
	for range writes {
		wg.Go(func() { codes <- do(h, request{target: "/write?db=b", body: "t v=1"}).StatusCode })
	}
	require.Eventually(t, func() bool { return inFlight.Load() == maxConcurrentWrites }, 30*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, http.StatusNoContent, c)
	}
	require.Equal(t, int64(maxConcurrentWrites), most.Load())
	require.Len(t, s.sent(), writes)
}

func TestNewChecksConfig(t *testing.T) {
	_, err := New(Config{Log: testutil.Logger{}})
	require.Error(t, err)
	_, err = New(Config{Sender: &fakeSender{}, Log: testutil.Logger{}, MaxBodySize: -1})
	require.Error(t, err)
}

// newCollector returns a statistics collector whose stats no other test
// shares: selfstat's registry is global.
func newCollector(t testing.TB) *selfstat.Collector {
	c := selfstat.NewCollector(map[string]string{"test": fmt.Sprintf("%s-%d", t.Name(), collectors.Add(1))})
	t.Cleanup(c.UnregisterAll)
	return c
}

var collectors atomic.Int64
