package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkEnrollFleet enrolls BENCH_DEVICES devices (default 50,000) from
// BENCH_CLIENTS concurrent clients (default 64) against a running
// `ockam authority serve` (the ockam of $OCKAM_BIN, or this test binary),
// each device a new identity doing the whole online flow on its own
// connection: fetch and verify the bundle, send its request, open and
// verify its credential. The tokens are minted first with `ockam enroll
// token create`. It reports devices/s for the enrollments alone, the
// minting rate, and the CPU time the service used. Run it with
// `make bench-enroll` (-benchtime 1x: one fleet per run).
func BenchmarkEnrollFleet(b *testing.B) {
	devices := envInt(b, "BENCH_DEVICES", 50_000)
	clients := envInt(b, "BENCH_CLIENTS", 64)
	for b.Loop() {
		f := newFleet(b)
		start := time.Now()
		toks := f.tokens(devices, "role=sensor", "site=plant-7")
		mint := time.Since(start)
		srv := f.serve()

		var next atomic.Int64
		var wg sync.WaitGroup
		clientCPU := processCPU(b)
		start = time.Now()
		for range clients {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= devices {
						return
					}
					id := newDeviceIdentity(b)
					if _, err := enrollAt(srv.addr, id, f.authority, toks[i], time.Now(), false); err != nil {
						b.Errorf("device %d: %v", i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		clientCPU = processCPU(b) - clientCPU
		srv.stop()
		st := ockamRun(b, "authority", "status", "--vault", f.vault, "--db", f.db)
		require.Contains(b, st, fmt.Sprintf("credentials issued:  %d\n", devices))
		cpu := srv.cmd.ProcessState.UserTime() + srv.cmd.ProcessState.SystemTime()

		rate := float64(devices) / elapsed.Seconds()
		perDevice := func(d time.Duration) float64 { return d.Seconds() / float64(devices) * 1e6 }
		b.ReportMetric(rate, "devices/s")
		b.ReportMetric(float64(devices)/mint.Seconds(), "tokens-minted/s")
		b.ReportMetric(perDevice(cpu), "service-cpu-µs/device")
		b.ReportMetric(perDevice(clientCPU), "client-cpu-µs/device")
		fmt.Printf("enroll: %d devices in %.1fs from %d clients: %.0f devices/s; CPU per device: service %.0f µs, "+
			"clients %.0f µs; %d tokens minted in %.1fs; load average before: %s\n", devices, elapsed.Seconds(), clients,
			rate, perDevice(cpu), perDevice(clientCPU), devices, mint.Seconds(), loadAverage())
	}
}

// processCPU returns the CPU time (user and system) this process used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage returns the machine's 1-minute load average, or "?": the
// figure depends on what else runs.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}
