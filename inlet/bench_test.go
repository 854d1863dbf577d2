package inlet

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
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
		cpu := startCPU(b)
		for b.Loop() {
			if err := o.Write(metrics); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b)
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
	cpu := startCPU(b)
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
	cpu.report(b)
	reportRate(b, f)
}

// cpuClock is the process's CPU time at the start of a benchmark.
type cpuClock time.Duration

func startCPU(b *testing.B) cpuClock {
	b.Helper()
	return cpuClock(processCPU(b))
}

// report reports the CPU time used since start, per op, in milliseconds.
func (c cpuClock) report(b *testing.B) {
	used := processCPU(b) - time.Duration(c)
	b.ReportMetric(float64(used.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// processCPU returns the user and system CPU time of the process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// BenchmarkParseBody compares, on one body of benchBatch metrics, the two
// ways the inlet turns a write into what it sends: "plain" writes each
// point from influxd's parse (parseLines), "metric" builds a Telegraf
// metric, tags it and serializes it, as the inlet did for every point
// before it sent through package sender (parseBody with plain false).
//
//	go test -run '^$' -bench '^BenchmarkParseBody$' ./inlet
func BenchmarkParseBody(b *testing.B) {
	serializer := &influx.Serializer{}
	if err := serializer.Init(); err != nil {
		b.Fatal(err)
	}
	body, err := serializer.SerializeBatch(benchMetrics(benchBatch))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	for _, plain := range []bool{true, false} {
		name := "plain"
		if !plain {
			name = "metric"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if got := parseBody(body, now, "n", "telemetry", plain); got.count != benchBatch {
					b.Fatalf("%d points, want %d", got.count, benchBatch)
				}
			}
			b.ReportMetric(float64(benchBatch*b.N)/b.Elapsed().Seconds(), "metrics/s")
		})
	}
}
