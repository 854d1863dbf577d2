package e2e

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestScaleFigures measures the figures of docs/SCALING.md on the
// scaled-out topology: metrics/s acked to devices and CPU per metric of
// each component, through one gateway (dialled directly) and through three
// (behind HAProxy); ack latency p50/p99 through JetStream R3 and through a
// gateway that writes to InfluxDB directly (deploy/listener.conf.tmpl).
// The figures are printed, not asserted: they move with the machine. It runs
// only with OCKAM_SCALE_FIGURES=1 (about 2 minutes), besides OCKAM_E2E=1.
func TestScaleFigures(t *testing.T) {
	if os.Getenv("OCKAM_SCALE_FIGURES") != "1" {
		t.Skip("figures of docs/SCALING.md: set OCKAM_SCALE_FIGURES=1 (and what make test sets) to measure them")
	}
	s := startScaleTopology(t, 1)
	m := s.cli.identity("load", "")
	s.cli.issue(s.authority, m, "720h", "role=sensor", "site=plant-7")
	u := Unchecked{Vault: m.vault, Credential: m.credential, Authority: s.authority.identity}

	const seconds, channels, batch = 20, 8, 1000
	var out []string
	for _, run := range []struct {
		name string
		addr string
		gws  []*gatewayProc
	}{
		{"1 gateway (direct)", s.gateways[0].addr(), s.gateways[:1]},
		{"3 gateways (HAProxy)", s.proxyAddr, s.gateways},
	} {
		procs := map[string][]*process{"consumer": s.consumers, "influxd": {s.db.proc}, "devices (this test)": nil}
		for _, g := range run.gws {
			procs["gateway"] = append(procs["gateway"], g.proc)
		}
		for _, n := range s.nats {
			procs["nats"] = append(procs["nats"], n.proc)
		}
		if run.addr == s.proxyAddr {
			procs["haproxy"] = []*process{s.proxy}
		}
		before := cpuOf(t, procs)
		start := time.Now()
		acked := load(t, u, run.addr, channels, batch, seconds*time.Second, nil)
		elapsed := time.Since(start)
		after := cpuOf(t, procs)
		line := fmt.Sprintf("%s: %d channels, batches of %d: %.0f metrics/s acked (JetStream R3);", run.name, channels, batch,
			float64(acked)/elapsed.Seconds())
		for _, k := range slices.Sorted(maps.Keys(after)) {
			cpu := after[k] - before[k]
			line += fmt.Sprintf(" %s %.2f CPU s (%.1f µs/metric)", k, cpu.Seconds(), float64(cpu.Microseconds())/float64(acked))
		}
		out = append(out, line)
	}

	// Ack latency: one channel, one batch of 500 (the gateways'
	// metric_batch_size, so each triggers a flush at once), 200 times.
	var lat []time.Duration
	load(t, u, s.gateways[0].addr(), 1, 500, 0, &lat)
	out = append(out, "ack latency, JetStream R3, batch 500: "+percentiles(lat))
	gw := s.cli.identity("direct-gateway", "")
	s.cli.issue(s.authority, gw, "720h", "role=listener")
	l := startListener(t, s.bin.telegraf, gw, s.authority, s.db, `["e2e_*"]`, "")
	lat = nil
	load(t, u, l.addr, 1, 500, 0, &lat)
	out = append(out, "ack latency, direct to InfluxDB, batch 500: "+percentiles(lat))
	t.Logf("figures (%d CPUs):\n  %s", runtime.NumCPU(), strings.Join(out, "\n  "))
}

// load sends batches of batch lines of e2e_load from channels channels to
// addr for d, or, when d is 0, 200 batches from one channel recording each
// ack's latency in lat. It returns the metrics acked.
func load(t *testing.T, u Unchecked, addr string, channels, batch int, d time.Duration, lat *[]time.Duration) int64 {
	t.Helper()
	cfg, err := u.config()
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	deadline := time.Now().Add(d)
	base := time.Now().Add(-3 * time.Hour).UnixNano()
	for c := range channels {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err == nil {
				var ch *secure.Channel
				if ch, err = secure.Dial(ctx, secure.NewStreamTransport(conn), cfg); err == nil {
					defer ch.Close("done")
					err = sendBatches(ch, c, batch, base, deadline, lat, &acked)
				}
			}
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("load on %s: %v", addr, firstErr)
	}
	return acked.Load()
}

// sendBatches sends on ch until deadline (or 200 batches if lat is set),
// one at a time, each awaiting its ack.
func sendBatches(ch *secure.Channel, c, batch int, base int64, deadline time.Time, lat *[]time.Duration, acked *atomic.Int64) error {
	var b strings.Builder
	for i := uint64(1); ; i++ {
		if lat != nil && i > 200 || lat == nil && time.Now().After(deadline) {
			return nil
		}
		b.Reset()
		for k := range batch {
			fmt.Fprintf(&b, "e2e_load,src=e2e,ch=%d value=%d %d\n", c, k, base+int64(i)*int64(batch)+int64(k))
		}
		sent := time.Now()
		if err := ch.Send(secure.Message{Type: secure.TypeData, Batch: i, Payload: []byte(b.String())}); err != nil {
			return err
		}
		for {
			m, err := ch.Receive()
			if err != nil {
				return err
			}
			if m.Type == secure.TypeAck && m.Batch == i {
				break
			}
			if m.Type == secure.TypeNack || m.Type == secure.TypeClose {
				return fmt.Errorf("%s %q", m.Type, m.Payload)
			}
		}
		if lat != nil {
			*lat = append(*lat, time.Since(sent))
		}
		acked.Add(int64(batch))
	}
}

// cpuOf returns the CPU time (user + system) used so far by the processes
// of each kind, from /proc/PID/stat.
func cpuOf(t *testing.T, procs map[string][]*process) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for k, ps := range procs {
		stats := []string{}
		for _, p := range ps {
			stats = append(stats, filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "stat"))
		}
		if len(ps) == 0 { // the load generator: this test process
			stats = []string{"/proc/self/stat"}
		}
		for _, stat := range stats {
			b, err := os.ReadFile(stat)
			if err != nil {
				t.Fatalf("%s: %v", stat, err)
			}
			// Fields after the command name in parentheses: utime and
			// stime are the 14th and 15th of the line, in clock ticks
			// (USER_HZ, 100 on Linux).
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			out[k] += time.Duration(ut+st) * 10 * time.Millisecond
		}
	}
	return out
}

// percentiles formats p50 and p99 of ds.
func percentiles(ds []time.Duration) string {
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (%d batches)", ms(at(0.5)), ms(at(0.99)), len(ds))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
