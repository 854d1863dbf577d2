package bench

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// pipelines are the pipelines BenchmarkPipeline compares, in table order.
var pipelines = []string{pipeOckam, pipeOckamRelay, pipeV2, pipeV2Identity, pipeV2MTLS, pipeV2MTLSIdent}

// BenchmarkPipeline writes pre-built batches through each pipeline's output
// to its listener in this process, as Telegraf's flush would: one Write at
// a time, each returning when the listener has answered. Every iteration
// writes one batch through each pipeline, starting with another one each
// time, so that whatever else runs on the machine slows them all alike and
// their ratios hold. For each pipeline it reports metrics per second of its
// Writes and the CPU time the process used during them (both plugins, the
// accumulator, the garbage collector) per million metrics.
//
// BENCH_PIPELINES (names separated by commas, such as "ockam") runs only
// those pipelines, for a CPU profile of one (docs/BENCHMARKS.md).
func BenchmarkPipeline(b *testing.B) {
	pipelines := pipelines
	if only := os.Getenv("BENCH_PIPELINES"); only != "" {
		pipelines = strings.Split(only, ",")
	}
	for _, size := range []int{1000, 5000} {
		batch := workload(size)
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ps := make([]*pipeline, len(pipelines))
			for i, name := range pipelines {
				ps[i] = startPipeline(b, name)
			}
			wall := make([]time.Duration, len(ps))
			cpu := make([]time.Duration, len(ps))
			round := 0
			for b.Loop() {
				for k := range ps {
					i := (round + k) % len(ps)
					c0, t0 := cpuTime(b), time.Now()
					if err := ps[i].out.Write(batch); err != nil {
						b.Fatalf("%s: %v", pipelines[i], err)
					}
					wall[i] += time.Since(t0)
					cpu[i] += cpuTime(b) - c0
				}
				round++
			}
			total := int64(b.N) * int64(size)
			for i, p := range ps {
				if got := p.acc.metrics.Load(); got != total {
					b.Fatalf("%s: the listener got %d metrics, want %d", pipelines[i], got, total)
				}
				b.ReportMetric(float64(total)/wall[i].Seconds(), pipelines[i]+"-metrics/s")
				b.ReportMetric(cpu[i].Seconds()/float64(total)*1e6, pipelines[i]+"-cpu-s/Mmetrics")
			}
		})
	}
}

// ackInterval paces BenchmarkAckLatency: a batch of ackBatch metrics every
// ackInterval is 40,000 metrics/s, a moderate load for every pipeline here.
const (
	ackBatch    = 1000
	ackInterval = 25 * time.Millisecond
)

// BenchmarkAckLatency measures how long one Write of ackBatch metrics takes
// until the listener answered (outputs.ockam: the ack after delivery;
// influxdb_v2: the HTTP response), at a steady moderate load. Run it with
// -benchtime Nx for N samples.
func BenchmarkAckLatency(b *testing.B) {
	batch := workload(ackBatch)
	for _, name := range []string{pipeOckam, pipeV2, pipeV2MTLS} {
		b.Run(name, func(b *testing.B) {
			p := startPipeline(b, name)
			var latencies []time.Duration
			next := time.Now()
			for b.Loop() {
				next = next.Add(ackInterval)
				time.Sleep(time.Until(next))
				start := time.Now()
				if err := p.out.Write(batch); err != nil {
					b.Fatal(err)
				}
				latencies = append(latencies, time.Since(start))
			}
			slices.Sort(latencies)
			b.ReportMetric(0, "ns/op") // the pacing, not a cost
			b.ReportMetric(ms(percentile(latencies, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(latencies, 0.99)), "p99-ms")
		})
	}
}

// percentile returns the p-quantile of sorted samples (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
