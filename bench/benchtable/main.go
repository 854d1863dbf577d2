// Command benchtable prints the table of docs/BENCHMARKS.md from the CSV
// that benchstat makes of a `make bench` run: the medians of every
// measurement side by side, the ratios between the pipelines, and each
// figure against its target (issue 8). scripts/bench.sh runs it.
//
// Usage:
//
//	benchstat -format csv raw.txt > stats.csv
//	go run ./bench/benchtable stats.csv
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtable stats.csv")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: %v\n", err)
		os.Exit(1)
	}
	defer f.Close()
	s, err := parse(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: %v\n", err)
		os.Exit(1)
	}
	printTable(os.Stdout, s)
}

// stats maps a benchmark (without its -GOMAXPROCS suffix) and a unit to the
// median benchstat computed.
type stats map[string]map[string]float64

// get returns the median of name in unit, or NaN if it was not measured.
func (s stats) get(name, unit string) float64 {
	if v, ok := s[name][unit]; ok {
		return v
	}
	return math.NaN()
}

var procs = regexp.MustCompile(`-\d+$`)

// parse reads benchstat's CSV: sections that start with ",unit,CI" and
// hold "name,median,CI" rows.
func parse(r io.Reader) (stats, error) {
	s := stats{}
	unit := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ",")
		switch {
		case len(fields) == 3 && fields[0] == "" && fields[2] == "CI":
			unit = fields[1]
		case len(fields) >= 2 && fields[0] != "" && fields[0] != "geomean" && unit != "":
			v, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				continue // a header such as ",file,"
			}
			name := procs.ReplaceAllString(fields[0], "")
			if s[name] == nil {
				s[name] = map[string]float64{}
			}
			s[name][unit] = v
		}
	}
	return s, sc.Err()
}

// row is one line of the table.
type row struct {
	what, unit    string
	a, b, c       float64 // ockam; influxdb_v2; influxdb_v2 with mTLS (or NaN)
	ratio, target string
	met           string // "yes", "no" or ""
}

func rows(s stats) []row {
	var out []row
	const (
		a, b, c           = "ockam", "influxdb_v2", "influxdb_v2-mtls"
		bIdentity, cIdent = "influxdb_v2-identity", "influxdb_v2-mtls-identity"
	)
	for _, batch := range []string{"1000", "5000"} {
		get := func(p, unit string) float64 { return s.get("Pipeline/batch="+batch, p+"-"+unit) }
		ra, rb, rc := get(a, "metrics/s"), get(b, "metrics/s"), get(c, "metrics/s")
		out = append(out, row{
			what: "Pipeline throughput, batch " + batch, unit: "metrics/s", a: ra, b: rb, c: rc,
			ratio:  fmt.Sprintf("a/b %s, a/c %s", times(ra/rb), times(ra/rc)),
			target: "a/b ≥ 1.0×, a/c ≥ 1.3×",
			met:    both(verdict(ra/rb >= 1.0, ra/rb), verdict(ra/rc >= 1.3, ra/rc)),
		})
		ca, cb, cc := get(a, "cpu-s/Mmetrics"), get(b, "cpu-s/Mmetrics"), get(c, "cpu-s/Mmetrics")
		out = append(out, row{
			what: "CPU per million metrics, batch " + batch, unit: "CPU s", a: ca, b: cb, c: cc,
			ratio:  fmt.Sprintf("a/b %s, a/c %s", times(ca/cb), times(ca/cc)),
			target: "a/b ≤ 1.1×", met: verdict(ca/cb <= 1.1, ca/cb),
		})
		rr, cr := get(a+"-relay", "metrics/s"), get(a+"-relay", "cpu-s/Mmetrics")
		out = append(out,
			row{
				what: "  a through one relay, batch " + batch, unit: "metrics/s", a: rr, b: math.NaN(), c: math.NaN(),
				ratio: fmt.Sprintf("relay/direct %s", times(rr/ra)),
			},
			row{
				what: "  CPU, a through one relay, batch " + batch, unit: "CPU s", a: cr, b: math.NaN(), c: math.NaN(),
				ratio: fmt.Sprintf("relay/direct %s (relay included)", times(cr/ca)),
			},
		)
		ib, ic := get(bIdentity, "metrics/s"), get(cIdent, "metrics/s")
		out = append(out, row{
			what: "  same, b and c without gzip, batch " + batch, unit: "metrics/s", a: ra, b: ib, c: ic,
			ratio: fmt.Sprintf("a/b %s, a/c %s", times(ra/ib), times(ra/ic)),
		})
		ib, ic = get(bIdentity, "cpu-s/Mmetrics"), get(cIdent, "cpu-s/Mmetrics")
		out = append(out, row{
			what: "  CPU, b and c without gzip, batch " + batch, unit: "CPU s", a: ca, b: ib, c: ic,
			ratio: fmt.Sprintf("a/b %s, a/c %s", times(ca/ib), times(ca/ic)),
		})
	}
	out = append(out, realRows(s)...)
	for _, q := range []string{"p50", "p99"} {
		get := func(p string) float64 { return s.get("AckLatency/"+p, q+"-ms") }
		la, lb, lc := get(a), get(b), get(c)
		out = append(out, row{
			what: "Ack latency " + q + ", batch 1000 at 40,000 metrics/s", unit: "ms", a: la, b: lb, c: lc,
			ratio: fmt.Sprintf("a/b %s, a/c %s", times(la/lb), times(la/lc)),
		})
	}
	// CPU time, not wall-clock time: see reportCPU in bench/harness_test.go.
	cpu := func(name string) float64 { return s.get(name, "cpu-sec/op") } // benchstat made cpu-ns/op seconds
	x, v := cpu("Crypto/x25519-ecdh"), cpu("Crypto/ed25519-verify")
	hs, first := cpu("Handshake/listener"), cpu("Handshake/listener-first")
	// The primitives and the ratios were measured in the same loop as the
	// handshakes: see BenchmarkHandshake.
	prim := func(name string) float64 { return s.get(name, "primitives-cpu-sec/op") }
	ratio := func(name string) float64 { return s.get(name, "x-primitives") }
	out = append(out,
		row{
			what: "Listener handshake, a returning device, one core (CPU time)", unit: "µs", a: hs * 1e6, b: math.NaN(), c: math.NaN(),
			ratio: times(ratio("Handshake/listener")) + " its primitives; " + times(hs/first) + " a first handshake",
		},
		row{
			what: "  handshakes per second, one core, returning devices", unit: "1/s", a: 1 / hs, b: math.NaN(), c: math.NaN(),
			ratio:  times(first/hs) + " a first handshake's rate",
			target: "≥ 3,000", met: verdict(1/hs >= 3000, 1/hs),
		},
		row{
			what: "  its primitives: 4 X25519, same loop (signatures verified before)",
			unit: "µs", a: prim("Handshake/listener") * 1e6, b: math.NaN(), c: math.NaN(),
		},
		row{
			what: "Listener handshake, a device's first (CPU time)", unit: "µs", a: first * 1e6, b: math.NaN(), c: math.NaN(),
			ratio:  times(ratio("Handshake/listener-first")) + " its primitives; " + num(1/first) + " per second",
			target: "≤ 1.15× the primitives", met: verdict(ratio("Handshake/listener-first") <= 1.15, ratio("Handshake/listener-first")),
		},
		row{
			what: "  its primitives: 4 X25519 + 2 Ed25519 verify, same loop",
			unit: "µs", a: prim("Handshake/listener-first") * 1e6, b: math.NaN(), c: math.NaN(),
		},
		row{
			what: "Handshake latency, loopback, device and listener", unit: "ms",
			a: s.get("HandshakeLatency", "sec/op") * 1e3, b: math.NaN(), c: math.NaN(),
		},
	)
	out = append(out, stormRows(s)...)
	out = append(out, inletRows(s)...)
	out = append(out, enrollRows(s, first)...)
	rss := s.get("IdleChannels", "rss-B/channel")
	out = append(out,
		row{
			what: fmt.Sprintf("Memory per idle channel, %s channels (RSS)", num(s.get("IdleChannels", "channels"))),
			unit: "bytes", a: rss, b: math.NaN(), c: math.NaN(),
			ratio: fmt.Sprintf("heap %s, stacks %s", num(s.get("IdleChannels", "heap-B/channel")),
				num(s.get("IdleChannels", "stack-B/channel"))),
			target: "≤ 16,384", met: verdict(rss <= 16384, rss),
		},
	)
	cached, uncached := s.get("Authorize/cached", "sec/op"), s.get("Authorize/uncached", "sec/op")
	out = append(out,
		row{
			what: "Per-message Authorize, 100,000 revoked", unit: "ns", a: cached * 1e9, b: math.NaN(), c: math.NaN(),
			ratio:  "first message after a new list: " + num(uncached*1e9) + " ns",
			target: "< 1,000", met: verdict(cached < 1e-6 && uncached < 1e-6, cached, uncached),
		},
		row{
			what: "Revocation lookup, 100,000 revoked", unit: "ns",
			a: s.get("RevocationLookup", "sec/op") * 1e9, b: math.NaN(), c: math.NaN(),
		},
	)
	for _, size := range []int{1, 16} {
		out = append(out, row{
			what: fmt.Sprintf("ChaCha20-Poly1305 seal, %d KiB (CPU time)", size), unit: "MB/s",
			a: float64(size<<10) / cpu(fmt.Sprintf("Crypto/chacha20poly1305-seal-%dKiB", size)) / 1e6, b: math.NaN(), c: math.NaN(),
		})
	}
	out = append(out,
		row{what: "X25519, crypto/ecdh (CPU time)", unit: "µs", a: x * 1e6, b: math.NaN(), c: math.NaN()},
		row{
			what: "X25519, x/crypto curve25519.X25519 (CPU time)", unit: "µs",
			a: cpu("Crypto/x25519-xcrypto") * 1e6, b: math.NaN(), c: math.NaN(),
		},
		row{what: "Ed25519 verify (CPU time)", unit: "µs", a: v * 1e6, b: math.NaN(), c: math.NaN()},
	)
	return out
}

// realRows are BenchmarkRealBinaries': a device Telegraf into a gateway
// (Telegraf or ockamd) into influxd, each row with what the device's ack
// means, at the device's metric_batch_size of 5000 and of 50000 (the
// gateways write batches of 5000 in both).
func realRows(s stats) []row {
	real := func(p string) float64 { return s.get("RealBinaries", p+"-metrics/s") }
	const a, b, md = "ockam", "influxdb_v2", "ockamd"
	ra, rb, direct, rmd := real(a), real(b), real("influxd-direct"), real(md)
	ra50, rb50, rmd50 := real(a+"-batch50000"), real(b+"-batch50000"), real(md+"-batch50000")
	rbTag, rbTag50, rmdBig := real(b+"-tagged"), real(b+"-tagged-batch50000"), real(md+"-batch50000-1MiB")
	raBare, raBare50 := real(a+"-untagged"), real(a+"-untagged-batch50000")
	slow, slow50, mdSlow50 := real(a+"-50ms"), real(a+"-batch50000-50ms"), real(md+"-batch50000-50ms")
	out := []row{
		{
			what: "Real binaries into influxd 1.8, batch 5000 (ack: a in InfluxDB; b parsed by the gateway)",
			unit: "metrics/s", a: ra, b: rb, c: math.NaN(),
			ratio:  fmt.Sprintf("a/b %s; a = %s of influxd alone", times(ra/rb), percent(ra/direct)),
			target: "a/b ≥ 1.0×", met: verdict(ra/rb >= 1.0, ra/rb),
		},
	}
	// The CPU each process spent per million metrics, at batch 5000.
	for _, proc := range []struct{ name, what string }{
		{"device", "the device Telegraf (reading the workload included)"},
		{"gateway", "the gateway (ockamd in the ratio column)"},
		{"influxd", "influxd"},
	} {
		cpu := func(p string) float64 { return s.get("RealBinaries", p+"-"+proc.name+"-cpu-s/1M") }
		ca, cb := cpu(a), cpu(b)
		ratio := "a/b " + times(ca/cb)
		if proc.name != "device" {
			ratio += "; ockamd: " + num(cpu(md))
		}
		out = append(out, row{what: "  CPU per million metrics, batch 5000: " + proc.what, unit: "CPU s", a: ca, b: cb, c: math.NaN(), ratio: ratio})
	}
	out = append(out, tagRows("5000", ra, rb, rbTag, raBare)...)
	out = append(out, row{
		what: "  the same, the devices' batch 50000 (gateways 5000)", unit: "metrics/s", a: ra50, b: rb50, c: math.NaN(),
		ratio:  fmt.Sprintf("a/b %s; a/(b at 5000) %s", times(ra50/rb50), times(ra50/rb)),
		target: "a/b ≥ 1.0×", met: verdict(ra50/rb50 >= 1.0 && ra50/rb >= 1.0, ra50/rb50, ra50/rb),
	})
	out = append(out, tagRows("50000", ra50, rb50, rbTag50, raBare50)...)
	return append(out, []row{
		{
			what: "  a through ockamd instead of a gateway Telegraf, batch 5000 (ack: in InfluxDB)", unit: "metrics/s",
			a: rmd, b: math.NaN(), c: math.NaN(),
			ratio:  fmt.Sprintf("ockamd/b %s, ockamd/a %s", times(rmd/rb), times(rmd/ra)),
			target: "ockamd/b ≥ 1.0×", met: verdict(rmd/rb >= 1.0, rmd/rb),
		},
		{
			what: "  a through ockamd, batch 50000 (ack: in InfluxDB)", unit: "metrics/s",
			a: rmd50, b: math.NaN(), c: math.NaN(),
			ratio:  fmt.Sprintf("ockamd/b %s at 50000, %s at 5000", times(rmd50/rb50), times(rmd50/rb)),
			target: "ockamd/b ≥ 1.0×", met: verdict(rmd50/rb50 >= 1.0 && rmd50/rb >= 1.0, rmd50/rb50, rmd50/rb),
		},
		{
			what: "  a through ockamd, batch 50000, the device's max_message_size 1MiB", unit: "metrics/s",
			a: rmdBig, b: math.NaN(), c: math.NaN(),
			ratio:  fmt.Sprintf("ockamd/b %s at 50000, %s at 5000", times(rmdBig/rb50), times(rmdBig/rb)),
			target: "ockamd/b ≥ 1.0×", met: verdict(rmdBig/rb50 >= 1.0 && rmdBig/rb >= 1.0, rmdBig/rb50, rmdBig/rb),
		},
		{what: "  influxd alone, one writer, batch 5000", unit: "metrics/s", a: direct, b: math.NaN(), c: math.NaN()},
		{
			what: "  a, 50 ms added each way between device and gateway, batch 5000", unit: "metrics/s",
			a: slow, b: math.NaN(), c: math.NaN(),
			ratio:  percent(slow/ra) + " of 0 ms",
			target: "≥ 80 % of 0 ms", met: verdict(slow/ra >= 0.8, slow/ra),
		},
		{
			what: "  a, 50 ms added each way, batch 50000", unit: "metrics/s", a: slow50, b: math.NaN(), c: math.NaN(),
			ratio:  percent(slow50/ra50) + " of 0 ms at batch 50000",
			target: "≥ 80 % of 0 ms", met: verdict(slow50/ra50 >= 0.8, slow50/ra50),
		},
		{
			what: "  a through ockamd, 50 ms added each way, batch 50000", unit: "metrics/s", a: mdSlow50, b: math.NaN(), c: math.NaN(),
			ratio:  percent(mdSlow50/rmd50) + " of 0 ms at batch 50000",
			target: "≥ 80 % of 0 ms", met: verdict(mdSlow50/rmd50 >= 0.8, mdSlow50/rmd50),
		},
	}...)
}

// tagRows are the rows that separate what the verified identity tag costs
// from what the guarantee costs, at one batch size: b with a tag as long as
// a's (bTag), and a with none (aBare).
func tagRows(batch string, a, b, bTag, aBare float64) []row {
	return []row{
		{
			what: "  b with a tag the size of a's verified identity stamped by its gateway, batch " + batch, unit: "metrics/s",
			a: math.NaN(), b: bTag, c: math.NaN(),
			ratio: fmt.Sprintf("a/b %s; b %s of untagged", times(a/bTag), percent(bTag/b)),
		},
		{
			what: "  a with no tag stamped (identity_tag = \"\"), batch " + batch, unit: "metrics/s",
			a: aBare, b: math.NaN(), c: math.NaN(),
			ratio: fmt.Sprintf("a/b %s: the guarantee and the channel", times(aBare/b)),
		},
	}
}

// stormRows are the reconnect storm's (BenchmarkReconnectStorm): the real
// gateway restarted under a fleet that reconnects at once. The benchmark
// fails unless influxd holds every metric sent.
func stormRows(s stats) []row {
	get := func(unit string) float64 { return s.get("ReconnectStorm", unit) }
	acked, devices := get("acked-s"), get("devices")
	return []row{
		{
			what: fmt.Sprintf("Reconnect storm: %s devices after a gateway restart, until every metric acked", num(devices)),
			unit: "s", a: acked, b: math.NaN(), c: math.NaN(),
			ratio: fmt.Sprintf("all channels open at %s s; stored = sent = %s (InfluxQL count)",
				num(get("open-s")), num(get("metrics"))),
			target: "≤ 10 s", met: verdict(acked <= 10, acked),
		},
		{
			what: "  gateway CPU during the storm, per device (handshake, batch, write to influxd)", unit: "µs",
			a: get("gateway-cpu-s") / devices * 1e6, b: math.NaN(), c: math.NaN(),
			ratio: fmt.Sprintf("%s s after the process started; the simulated devices' CPU %s µs each; %.0f retries",
				num(get("from-start-s")), num(get("devices-cpu-s")/devices*1e6), get("retries")),
		},
	}
}

// inletRows are BenchmarkInlet's (inlet/bench_test.go): stock Telegraf's
// outputs.influxdb_v2 into `ockam inlet influxdb` against outputs.ockam's
// own Write, through the same channel.
func inletRows(s stats) []row {
	get := func(name string) float64 { return s.get("Inlet/"+name, "metrics/s") }
	direct, gz, plain := get("direct"), get("inlet"), get("inlet-plain")
	return []row{
		{
			what: "Inlet: outputs.influxdb_v2 → ockam inlet, gzip, batch 1000", unit: "metrics/s", a: gz, b: math.NaN(), c: math.NaN(),
			ratio: "inlet/direct " + times(gz/direct),
		},
		{
			what: "  the same without gzip", unit: "metrics/s", a: plain, b: math.NaN(), c: math.NaN(),
			ratio: "inlet/direct " + times(plain/direct),
		},
		{what: "  outputs.ockam direct, same channel", unit: "metrics/s", a: direct, b: math.NaN(), c: math.NaN()},
	}
}

// enrollRows are BenchmarkEnrollFleet's (cmd/ockam): devices enrolled
// against a running `ockam authority serve`. firstHandshake is the CPU
// seconds of a listener's first handshake, for scale.
func enrollRows(s stats, firstHandshake float64) []row {
	get := func(unit string) float64 { return s.get("EnrollFleet", unit) }
	service := get("service-cpu-µs/device")
	return []row{
		{
			what: "Enrollment, concurrent devices against ockam authority serve", unit: "devices/s",
			a: get("devices/s"), b: math.NaN(), c: math.NaN(),
		},
		{
			what: "  service CPU per enrollment", unit: "µs", a: service, b: math.NaN(), c: math.NaN(),
			ratio: times(service/(firstHandshake*1e6)) + " a listener's first handshake; client " +
				num(get("client-cpu-µs/device")) + " µs",
		},
	}
}

func printTable(w io.Writer, s stats) {
	fmt.Fprintln(w, "| measurement | unit | ockam (a) | influxdb_v2 (b) | b + mTLS (c) | ratio | target | met |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|---|---|---|")
	for _, r := range rows(s) {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.what, r.unit, num(r.a), num(r.b), num(r.c), r.ratio, r.target, r.met)
	}
}

// verdict is "yes" or "no", or "" when a figure is missing.
func verdict(ok bool, figures ...float64) string {
	for _, f := range figures {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return ""
		}
	}
	if ok {
		return "yes"
	}
	return "**no**"
}

// both joins the verdicts of a/b and a/c, or is "" if either is missing.
func both(ab, ac string) string {
	if ab == "" || ac == "" {
		return ""
	}
	return "a/b " + ab + ", a/c " + ac
}

// num formats a figure: thousands separators from 1,000, three significant
// digits below, "—" when it is missing.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case math.Abs(v) >= 999.5:
		return thousands(int64(math.Round(v)))
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func times(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

func percent(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	return strconv.FormatFloat(100*r, 'f', 0, 64) + " %"
}
