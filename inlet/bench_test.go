package inlet

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
	"github.com/influxdata/telegraf/testutil"
)

// benchBatch is Telegraf's default metric_batch_size.
const benchBatch = 1000

// BenchmarkInlet compares, in one run, the two ways a device sends a batch
// through the same secure channel over loopback TCP to a listener that acks
// each message at once (so the figures are the device's cost, not a
// gateway's flush interval):
//
//   - direct: outputs.ockam's Write, as in the custom Telegraf;
//   - inlet: what stock Telegraf's outputs.influxdb_v2 does (serialize, gzip,
//     POST) to the inlet on loopback, which reads, gunzips, parses, tags and
//     sends with the same sender, and answers after the ack;
//   - inlet-plain: the same without gzip (content_encoding = "identity"),
//     which a client on the same machine can afford.
//
// One op is one batch of benchBatch metrics; metrics/s is reported.
//
//	go test -run '^$' -bench '^BenchmarkInlet$' ./inlet
func BenchmarkInlet(b *testing.B) {
	metrics := benchMetrics(benchBatch)
	b.Run("direct", func(b *testing.B) {
		f := newChannelFixture(b, false)
		o := f.output(b)
		for b.Loop() {
			if err := o.Write(metrics); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, f)
	})
	for _, compress := range []bool{true, false} {
		name := "inlet"
		if !compress {
			name = "inlet-plain"
		}
		b.Run(name, func(b *testing.B) { benchInlet(b, metrics, compress) })
	}
}

// benchInlet posts metrics to the inlet, gzipped if compress, at each op.
func benchInlet(b *testing.B, metrics []telegraf.Metric, compress bool) {
	f := newChannelFixture(b, false)
	h, err := New(Config{Sender: f.sender(b, nil), Log: testutil.Logger{Quiet: true}})
	if err != nil {
		b.Fatal(err)
	}
	url := serve(b, h) + "/api/v2/write?org=o&bucket=telemetry"
	client := &http.Client{Timeout: 10 * time.Second}
	serializer := &influx.Serializer{}
	if err := serializer.Init(); err != nil {
		b.Fatal(err)
	}
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	for b.Loop() {
		// The client's side, as outputs.influxdb_v2 does it.
		lines, err := serializer.SerializeBatch(metrics)
		if err != nil {
			b.Fatal(err)
		}
		payload := lines
		if compress {
			body.Reset()
			zw.Reset(&body)
			_, _ = zw.Write(lines)
			_ = zw.Close()
			payload = body.Bytes()
		}
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
		if compress {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("inlet answered %s", resp.Status)
		}
	}
	reportRate(b, f)
}

// reportRate reports metrics/s, and checks that the listener got every line.
func reportRate(b *testing.B, f *channelFixture) {
	f.mu.Lock()
	lines := f.lines
	f.mu.Unlock()
	if lines != b.N*benchBatch {
		b.Fatalf("the listener got %d lines, want %d", lines, b.N*benchBatch)
	}
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "metrics/s")
}

// serve runs h on a loopback port until the benchmark ends and returns its
// base URL.
func serve(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// benchMetrics returns n metrics shaped like inputs.cpu's: two tags, ten
// float fields.
func benchMetrics(n int) []telegraf.Metric {
	fields := []string{"usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq",
		"usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"}
	start := time.Unix(1700000000, 0)
	ms := make([]telegraf.Metric, n)
	for i := range ms {
		f := make(map[string]any, len(fields))
		for j, name := range fields {
			f[name] = float64(i*len(fields)+j) / 7
		}
		ms[i] = metric.New("cpu", map[string]string{"cpu": fmt.Sprintf("cpu%d", i%64), "host": "device-1"}, f,
			start.Add(time.Duration(i)*time.Second))
	}
	return ms
}
