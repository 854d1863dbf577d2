package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The reconnect storm (issue 18): a fleet of devices, simulated in this
// process with package secure (one goroutine, identity, credential, source
// address and TCP connection each), is connected to a real gateway:
// bin/telegraf with inputs.ockam_listener → outputs.influxdb_v2 → influxd
// 1.8.10. The gateway is stopped (SIGTERM) while every device holds a batch
// of metrics it could not send; a new gateway process starts, and once it
// listens every device reconnects at once, sends its batch and waits for
// the ack, which the listener sends only after influxd took the batch. The
// figure is the time from the new gateway's listening socket to the last
// ack; InfluxQL then counts every point (stored == sent).
//
// A device whose connection or handshake fails retries after a random
// 50-150 ms (as outputs.ockam retries at its next flush): the listener
// closes connections beyond its limits at once, and the kernel drops SYNs
// beyond the listen backlog (net.core.somaxconn), which costs the device a
// SYN retransmission (1 s). Devices spread over stormPerAddress-sized groups
// of loopback source addresses (127.1.0.0/16), as a real fleet arrives from
// many addresses: max_handshakes_per_ip counts handshakes per source.
const (
	stormDevices          = 10_000 // BenchmarkReconnectStorm
	stormTestDevices      = 200    // TestReconnectStorm
	stormMetricsPerDevice = 10     // buffered while the gateway was down
	stormPerAddress       = 8      // devices per source address
	stormDeadline         = 5 * time.Minute
)

// The gateway's limits in the storm: its defaults (sample.conf), except
// max_connections (the default, 10,000, is the fleet's size exactly, and the
// load generator's probe for the listening socket takes one more) and
// max_undelivered_messages (1,000 by default; one message per device here).
const stormGateway = `[agent]
  interval = "1h"
  flush_interval = "200ms"
  flush_jitter = "0s"
  metric_batch_size = 5000
  metric_buffer_limit = {{.Buffer}}
  omit_hostname = true

[[inputs.ockam_listener]]
  service_address = "tcp://{{.Addr}}"
  vault_path = "{{.GatewayVault}}"
  credential_path = "{{.GatewayCred}}"
  authority_paths = ["{{.Authority}}"]
  max_connections = {{.MaxConnections}}
  max_handshakes_per_ip = 32
  max_channels_per_identity = 16
  handshake_timeout = "10s"
  max_undelivered_messages = {{.MaxUndelivered}}
` + toInfluxd

// stormResult is what one storm measured.
type stormResult struct {
	devices, metrics int
	open, acked      time.Duration // from the new gateway listening to the last channel open, the last ack
	sinceStart       time.Duration // from starting the new gateway's process to the last ack
	gatewayCPU       time.Duration // the new gateway's CPU time until the last ack
	devicesCPU       time.Duration // this process's, the simulated devices', meanwhile
	retries          int64         // connections or handshakes that failed and were retried
	retryReasons     string
	addresses        int
}

// BenchmarkReconnectStorm runs the storm with stormDevices devices once per
// iteration (make bench: -benchtime 1x). It needs OCKAM_BIN and INFLUXD.
func BenchmarkReconnectStorm(b *testing.B) {
	telegraf, influxd := stormBinaries(b)
	var results []stormResult
	for b.Loop() {
		results = append(results, runStorm(b, telegraf, influxd, stormDevices))
	}
	slices.SortFunc(results, func(x, y stormResult) int { return int(x.acked - y.acked) })
	r := results[len(results)/2]
	b.ReportMetric(0, "ns/op") // the setup, mostly
	b.ReportMetric(float64(r.devices), "devices")
	b.ReportMetric(float64(r.metrics), "metrics")
	b.ReportMetric(r.open.Seconds(), "open-s")
	b.ReportMetric(r.acked.Seconds(), "acked-s")
	b.ReportMetric(r.sinceStart.Seconds(), "from-start-s")
	b.ReportMetric(r.gatewayCPU.Seconds(), "gateway-cpu-s")
	b.ReportMetric(r.devicesCPU.Seconds(), "devices-cpu-s")
	b.ReportMetric(float64(r.retries), "retries")
	b.Logf("%d devices from %d source addresses, %d metrics: all open %.2f s, all acked %.2f s after the gateway listened "+
		"(%.2f s after its start); CPU: gateway %.2f s, simulated devices %.2f s; %d retries (%s)",
		r.devices, r.addresses, r.metrics, r.open.Seconds(), r.acked.Seconds(), r.sinceStart.Seconds(),
		r.gatewayCPU.Seconds(), r.devicesCPU.Seconds(), r.retries, r.retryReasons)
}

// TestReconnectStorm is the storm with stormTestDevices devices, against
// the real binaries (OCKAM_E2E=1, OCKAM_BIN, INFLUXD, as the e2e tests). It
// checks what the benchmark measures: every channel opens again after the
// restart, every metric is acked, and influxd holds exactly what was sent.
func TestReconnectStorm(t *testing.T) {
	if os.Getenv("OCKAM_E2E") == "" {
		t.Skip("set OCKAM_E2E=1, OCKAM_BIN and INFLUXD to run against the real binaries")
	}
	telegraf, influxd := stormBinaries(t)
	r := runStorm(t, telegraf, influxd, stormTestDevices)
	t.Logf("%d devices, %d metrics: all open %v, all acked %v after the gateway listened; %d retries (%s)",
		r.devices, r.metrics, r.open, r.acked, r.retries, r.retryReasons)
}

func stormBinaries(tb testing.TB) (telegraf, influxd string) {
	binDir, influxd := os.Getenv("OCKAM_BIN"), os.Getenv("INFLUXD")
	if binDir == "" || influxd == "" {
		tb.Skip("set OCKAM_BIN and INFLUXD (make bench does)")
	}
	telegraf, err := filepath.Abs(filepath.Join(binDir, "telegraf"))
	must(tb, err)
	return telegraf, influxd
}

// stormDevice is one simulated device.
type stormDevice struct {
	cfg    secure.HandshakeConfig
	source *net.TCPAddr
	batch  []byte // its buffered metrics, line protocol
}

// runStorm runs one storm of n devices and checks stored == sent.
func runStorm(tb testing.TB, telegraf, influxd string, n int) stormResult {
	fleet := ockamtest.NewFleet(tb)
	gateway := fleet.Enroll(tb, "gateway", map[string]string{"role": "listener"})
	devices := newStormFleet(tb, fleet, n)
	db := startInfluxd(tb, influxd)
	database := fmt.Sprintf("storm_%d", collectors.Add(1))
	db.query(tb, "CREATE DATABASE "+database)
	addr := ockamtest.FreeAddr(tb)
	conf := render(tb, stormGateway, map[string]string{
		"Addr": addr, "Influx": db.url, "Database": database,
		"Authority": fleet.AuthorityFile, "GatewayVault": gateway.VaultPath, "GatewayCred": gateway.CredentialPath,
		"Buffer":         strconv.Itoa(2 * n * stormMetricsPerDevice),
		"MaxConnections": strconv.Itoa(n + 100),
		"MaxUndelivered": strconv.Itoa(max(1000, n)),
	})

	// Before: the fleet is connected to a running gateway.
	gw := startProcess(tb, "gateway", telegraf, "--config", conf)
	waitListening(tb, gw, addr)
	var before stormCounters
	channels := make([]*secure.Channel, n)
	parallel(n, 256, func(i int) {
		channels[i] = devices[i].connect(addr, &before, time.Now().Add(stormDeadline))
	})
	for i, ch := range channels {
		if ch == nil {
			tb.Fatalf("device %d did not connect before the restart: %s\n%s", i, before.reasons(), gw.tail())
		}
	}

	// The gateway stops; the devices buffer a batch each meanwhile.
	gw.stop(tb)
	for _, ch := range channels {
		ch.Close("gateway gone")
	}

	// The storm: a new gateway; every device reconnects at once.
	var r stormResult
	var counters stormCounters
	start := time.Now()
	gw = startProcess(tb, "gateway-restarted", telegraf, "--config", conf)
	waitListening(tb, gw, addr)
	listening := time.Now()
	cpu0, self0 := processCPU(tb, gw), cpuTime(tb)
	opened, acked := make([]time.Time, n), make([]time.Time, n)
	deadline := listening.Add(stormDeadline)
	parallel(n, n, func(i int) {
		opened[i], acked[i] = devices[i].deliver(addr, &counters, deadline)
	})
	last := time.Time{}
	for i := range n {
		if acked[i].IsZero() {
			tb.Fatalf("device %d: no ack within %v: %s\n%s", i, stormDeadline, counters.reasons(), gw.tail())
		}
		if acked[i].After(last) {
			last = acked[i]
		}
		if opened[i].Sub(listening) > r.open {
			r.open = opened[i].Sub(listening)
		}
	}
	r.gatewayCPU, r.devicesCPU = processCPU(tb, gw)-cpu0, cpuTime(tb)-self0
	r.acked, r.sinceStart = last.Sub(listening), last.Sub(start)
	r.devices, r.metrics, r.addresses = n, n*stormMetricsPerDevice, (n+stormPerAddress-1)/stormPerAddress
	r.retries, r.retryReasons = counters.retries.Load(), counters.reasons()

	if got := stormCount(tb, db, database); got != int64(r.metrics) {
		tb.Fatalf("influxd holds %d points, sent and acked %d", got, r.metrics)
	}
	gw.stop(tb)
	return r
}

// newStormFleet creates n device identities (memory vaults) with
// credentials from fleet's authority, on all CPUs.
func newStormFleet(tb testing.TB, fleet *ockamtest.Fleet, n int) []*stormDevice {
	verifier, err := secure.NewVerifier(fleet.Authority.Public())
	must(tb, err)
	now := time.Now()
	devices := make([]*stormDevice, n)
	errs := make([]error, n)
	parallel(n, runtime.GOMAXPROCS(0), func(i int) {
		id, err := secure.CreateIdentity(vault.NewMemory(), now)
		if err != nil {
			errs[i] = err
			return
		}
		cred, err := secure.IssueCredential(fleet.Authority.Signer(), id.Identifier(), map[string]string{"role": "sensor"}, now, time.Hour, nil)
		if err != nil {
			errs[i] = err
			return
		}
		a := i / stormPerAddress // 127.1.0.1, 127.1.0.2, ...
		var lines strings.Builder
		for k := range stormMetricsPerDevice {
			fmt.Fprintf(&lines, "storm,device=d%05d value=%di %d\n", i, k, now.UnixNano()+int64(k))
		}
		devices[i] = &stormDevice{
			// One Verifier for the whole simulated fleet: each device
			// checks the gateway's credential in full once, then from the
			// Verifier's cache (the gateway's side is what is measured).
			cfg: secure.HandshakeConfig{
				Identity: id, Credential: cred, Verifier: verifier,
				PeerAttributes: map[string]string{"role": "listener"},
			},
			source: &net.TCPAddr{IP: net.IPv4(127, 1, byte(a/250), byte(a%250+1))},
			batch:  []byte(lines.String()),
		}
	})
	must(tb, errors.Join(errs...))
	return devices
}

// stormCounters counts the retries of a storm by reason.
type stormCounters struct {
	retries atomic.Int64
	mu      sync.Mutex
	byWhy   map[string]int
}

func (c *stormCounters) retry(why string) {
	c.retries.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byWhy == nil {
		c.byWhy = map[string]int{}
	}
	c.byWhy[why]++
}

func (c *stormCounters) reasons() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byWhy) == 0 {
		return "none"
	}
	var parts []string
	for why, n := range c.byWhy {
		parts = append(parts, fmt.Sprintf("%d × %s", n, why))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// backoff waits 50-150 ms before a retry, as a device would.
func backoff() { time.Sleep(time.Duration(50+rand.IntN(100)) * time.Millisecond) }

// connect opens a channel to addr from the device's source address,
// retrying until deadline; nil if it never opened.
func (d *stormDevice) connect(addr string, c *stormCounters, deadline time.Time) *secure.Channel {
	for time.Now().Before(deadline) {
		dialer := net.Dialer{LocalAddr: d.source, Deadline: deadline}
		nc, err := dialer.Dial("tcp", addr)
		if err != nil {
			c.retry("dial: " + errorKind(err))
			backoff()
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ch, err := secure.Dial(ctx, secure.NewStreamTransport(nc), d.cfg)
		cancel()
		if err != nil {
			nc.Close()
			c.retry("handshake: " + errorKind(err))
			backoff()
			continue
		}
		return ch
	}
	return nil
}

// deliver reconnects, sends the buffered batch and waits for its ack,
// starting over on a new channel after any failure. It returns when the
// channel opened and when the ack came (zero times if it never did).
func (d *stormDevice) deliver(addr string, c *stormCounters, deadline time.Time) (opened, acked time.Time) {
	for time.Now().Before(deadline) {
		ch := d.connect(addr, c, deadline)
		if ch == nil {
			return time.Time{}, time.Time{}
		}
		opened = time.Now()
		if err := ch.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: d.batch}); err != nil {
			ch.Close("")
			c.retry("send: " + errorKind(err))
			backoff()
			continue
		}
		m, err := ch.Receive()
		ch.Close("done")
		switch {
		case err != nil:
			c.retry("await ack: " + errorKind(err))
		case m.Type == secure.TypeAck && m.Batch == 1:
			return opened, time.Now()
		default:
			c.retry(fmt.Sprintf("answer %v (%s)", m.Type, m.Reason))
		}
		backoff()
	}
	return time.Time{}, time.Time{}
}

// errorKind names an error without its addresses, for counting.
func errorKind(err error) string {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Op + ": " + ne.Err.Error()
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// parallel runs f(0..n-1) on at most workers goroutines.
func parallel(n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// processCPU returns a child process's user and system time so far
// (/proc/PID/stat, in clock ticks of 10 ms).
func processCPU(tb testing.TB, p *process) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	must(tb, err)
	// The command name, in parentheses, may hold spaces: count from after it.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	must(tb, err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	must(tb, err)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// stormCount returns the number of points of the storm in database.
func stormCount(tb testing.TB, db *influxdb, database string) int64 {
	r := db.query(tb, `SELECT count("value") FROM "storm"`, "db", database)
	var n int64
	for _, res := range r.Results {
		for _, s := range res.Series {
			for _, v := range s.Values {
				n += int64(v[1].(float64))
			}
		}
	}
	return n
}
