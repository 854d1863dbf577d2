package main

import (
	"strings"
	"testing"
)

// sample is benchstat -format csv output: two packages, one with a
// GOMAXPROCS suffix, custom units.
const sample = `,raw.txt,
,sec/op,CI
Authorize/cached-2,6.882e-08,3%
Authorize/uncached-2,2.874e-07,∞
geomean,1.406373634565154e-07,

pkg: github.com/ockam-addons/telegraf-ockam/bench
,raw.txt,
,ockam-metrics/s,CI
Pipeline/batch=1000-2,120000,4%
geomean,120000,

,raw.txt,
,influxdb_v2-metrics/s,CI
Pipeline/batch=1000-2,100000,2%
geomean,100000,

,raw.txt,
,influxdb_v2-mtls-metrics/s,CI
Pipeline/batch=1000-2,80000,5%
geomean,80000,
`

func TestParse(t *testing.T) {
	s, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, unit string
		want       float64
	}{
		{"Authorize/cached", "sec/op", 6.882e-08},
		{"Authorize/uncached", "sec/op", 2.874e-07},
		{"Pipeline/batch=1000", "ockam-metrics/s", 120000},
		{"Pipeline/batch=1000", "influxdb_v2-mtls-metrics/s", 80000},
	} {
		if got := s.get(tc.name, tc.unit); got != tc.want {
			t.Errorf("%s %s = %v, want %v", tc.name, tc.unit, got, tc.want)
		}
	}
	if _, ok := s["geomean"]; ok {
		t.Error("geomean parsed as a benchmark")
	}
}

func TestTable(t *testing.T) {
	s, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printTable(&b, s)
	for _, want := range []string{
		"| Pipeline throughput, batch 1000 | metrics/s | 120,000 | 100,000 | 80,000 | a/b 1.20×, a/c 1.50× | a/b ≥ 1.0×, a/c ≥ 1.3× | a/b yes, a/c yes |",
		"| Per-message Authorize, 100,000 revoked | ns | 68.8 |",
		"| Pipeline throughput, batch 5000 | metrics/s | — | — | — | a/b —, a/c — | a/b ≥ 1.0×, a/c ≥ 1.3× |  |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{1234567.8: "1,234,568", 999.6: "1,000", 123.4: "123", 12.34: "12.3", 1.234: "1.23"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

// sampleFleet is benchstat's CSV of the handshake, storm, inlet and
// enrollment benchmarks (units as benchstat rewrites them).
const sampleFleet = `pkg: github.com/ockam-addons/telegraf-ockam/bench
,raw.txt,
,cpu-sec/op,CI
Handshake/listener,0.0002,∞
Handshake/listener-first,0.0003,∞
geomean,0.000245,

,raw.txt,
,primitives-cpu-sec/op,CI
Handshake/listener,0.00018,∞
Handshake/listener-first,0.00025,∞

,raw.txt,
,x-primitives,CI
Handshake/listener,1.11,∞
Handshake/listener-first,1.2,∞

,raw.txt,
,acked-s,CI
ReconnectStorm-2,8.5,∞

,raw.txt,
,open-s,CI
ReconnectStorm-2,7.25,∞

,raw.txt,
,devices,CI
ReconnectStorm-2,10000,∞

,raw.txt,
,metrics,CI
ReconnectStorm-2,100000,∞

,raw.txt,
,gateway-cpu-s,CI
ReconnectStorm-2,6,∞

pkg: github.com/ockam-addons/telegraf-ockam/inlet
,raw.txt,
,metrics/s,CI
Inlet/direct-2,150000,∞
Inlet/inlet-2,90000,∞
Inlet/inlet-plain-2,120000,∞

pkg: github.com/ockam-addons/telegraf-ockam/cmd/ockam
,raw.txt,
,devices/s,CI
EnrollFleet-2,900,∞

,raw.txt,
,service-cpu-µs/device,CI
EnrollFleet-2,750,∞
`

func TestTableFleetRows(t *testing.T) {
	s, err := parse(strings.NewReader(sampleFleet))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printTable(&b, s)
	for _, want := range []string{
		"| Listener handshake, a returning device, one core (CPU time) | µs | 200 | — | — | 1.11× its primitives; 0.67× a first handshake |  |  |",
		"|   handshakes per second, one core, returning devices | 1/s | 5,000 | — | — | 1.50× a first handshake's rate | ≥ 3,000 | yes |",
		"| Listener handshake, a device's first (CPU time) | µs | 300 | — | — | 1.20× its primitives; 3,333 per second | ≤ 1.15× the primitives | **no** |",
		"| Reconnect storm: 10,000 devices after a gateway restart, until every metric acked | s | 8.50 | — | — | all channels open at 7.25 s; stored = sent = 100,000 (InfluxQL count) | ≤ 10 s | yes |",
		"|   gateway CPU during the storm, per device (handshake, batch, write to influxd) | µs | 600 |",
		"| Inlet: outputs.influxdb_v2 → ockam inlet, gzip, batch 1000 | metrics/s | 90,000 | — | — | inlet/direct 0.60× |",
		"|   the same without gzip | metrics/s | 120,000 | — | — | inlet/direct 0.80× |",
		"| Enrollment, concurrent devices against ockam authority serve | devices/s | 900 |",
		"|   service CPU per enrollment | µs | 750 | — | — | 2.50× a listener's first handshake; client — µs |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// sampleReal is benchstat's CSV of BenchmarkRealBinaries.
const sampleReal = `pkg: github.com/ockam-addons/telegraf-ockam/bench
,raw.txt,
,ockam-metrics/s,CI
RealBinaries-2,50000,∞

,raw.txt,
,influxdb_v2-metrics/s,CI
RealBinaries-2,100000,∞

,raw.txt,
,influxd-direct-metrics/s,CI
RealBinaries-2,125000,∞

,raw.txt,
,ockamd-metrics/s,CI
RealBinaries-2,110000,∞

,raw.txt,
,ockam-50ms-metrics/s,CI
RealBinaries-2,25000,∞

,raw.txt,
,ockam-batch50000-metrics/s,CI
RealBinaries-2,60000,∞

,raw.txt,
,ockam-batch50000-50ms-metrics/s,CI
RealBinaries-2,51000,∞

,raw.txt,
,influxdb_v2-batch50000-metrics/s,CI
RealBinaries-2,100000,∞

,raw.txt,
,ockamd-batch50000-metrics/s,CI
RealBinaries-2,120000,∞

,raw.txt,
,ockamd-batch50000-50ms-metrics/s,CI
RealBinaries-2,90000,∞

,raw.txt,
,influxdb_v2-tagged-batch50000-metrics/s,CI
RealBinaries-2,80000,∞

,raw.txt,
,ockamd-batch50000-1MiB-metrics/s,CI
RealBinaries-2,95000,∞

,raw.txt,
,ockam-untagged-metrics/s,CI
RealBinaries-2,90000,∞

,raw.txt,
,influxdb_v2-tagged-metrics/s,CI
RealBinaries-2,80000,∞

,raw.txt,
,ockam-untagged-batch50000-metrics/s,CI
RealBinaries-2,110000,∞

,raw.txt,
,ockam-device-cpu-s/1M,CI
RealBinaries-2,9,∞

,raw.txt,
,influxdb_v2-device-cpu-s/1M,CI
RealBinaries-2,9.5,∞

,raw.txt,
,ockam-gateway-cpu-s/1M,CI
RealBinaries-2,6,∞

,raw.txt,
,influxdb_v2-gateway-cpu-s/1M,CI
RealBinaries-2,5,∞

,raw.txt,
,ockamd-gateway-cpu-s/1M,CI
RealBinaries-2,6.5,∞

,raw.txt,
,ockam-influxd-cpu-s/1M,CI
RealBinaries-2,8,∞

,raw.txt,
,influxdb_v2-influxd-cpu-s/1M,CI
RealBinaries-2,6.4,∞

,raw.txt,
,ockamd-influxd-cpu-s/1M,CI
RealBinaries-2,9,∞
`

func TestRealRows(t *testing.T) {
	s, err := parse(strings.NewReader(sampleReal))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printTable(&b, s)
	for _, want := range []string{
		"| Real binaries into influxd 1.8, batch 5000 (ack: a in InfluxDB; b parsed by the gateway) | metrics/s | 50,000 | 100,000 | — | a/b 0.50×; a = 40 % of influxd alone | a/b ≥ 1.0× | **no** |",
		"|   the same, the devices' batch 50000 (gateways 5000) | metrics/s | 60,000 | 100,000 | — | a/b 0.60×; a/(b at 5000) 0.60× | a/b ≥ 1.0× | **no** |",
		"|   CPU per million metrics, batch 5000: the device Telegraf (reading the workload included) | CPU s | 9.00 | 9.50 | — | a/b 0.95× |  |  |",
		"|   CPU per million metrics, batch 5000: the gateway (ockamd in the ratio column) | CPU s | 6.00 | 5.00 | — | a/b 1.20×; ockamd: 6.50 |  |  |",
		"|   CPU per million metrics, batch 5000: influxd | CPU s | 8.00 | 6.40 | — | a/b 1.25×; ockamd: 9.00 |  |  |",
		"|   b with a tag the size of a's verified identity stamped by its gateway, batch 5000 | metrics/s | — | 80,000 | — | a/b 0.62×; b 80 % of untagged |  |  |",
		"|   a with no tag stamped (identity_tag = \"\"), batch 5000 | metrics/s | 90,000 | — | — | a/b 0.90×: the guarantee and the channel |  |  |",
		"|   b with a tag the size of a's verified identity stamped by its gateway, batch 50000 | metrics/s | — | 80,000 | — | a/b 0.75×; b 80 % of untagged |  |  |",
		"|   a with no tag stamped (identity_tag = \"\"), batch 50000 | metrics/s | 110,000 | — | — | a/b 1.10×: the guarantee and the channel |  |  |",
		"|   a through ockamd instead of a gateway Telegraf, batch 5000 (ack: in InfluxDB) | metrics/s | 110,000 | — | — | ockamd/b 1.10×, ockamd/a 2.20× | ockamd/b ≥ 1.0× | yes |",
		"|   a through ockamd, batch 50000 (ack: in InfluxDB) | metrics/s | 120,000 | — | — | ockamd/b 1.20× at 50000, 1.20× at 5000 | ockamd/b ≥ 1.0× | yes |",
		"|   a through ockamd, batch 50000, the device's max_message_size 1MiB | metrics/s | 95,000 | — | — | ockamd/b 0.95× at 50000, 0.95× at 5000 | ockamd/b ≥ 1.0× | **no** |",
		"|   influxd alone, one writer, batch 5000 | metrics/s | 125,000 | — | — |  |  |  |",
		"|   a, 50 ms added each way between device and gateway, batch 5000 | metrics/s | 25,000 | — | — | 50 % of 0 ms | ≥ 80 % of 0 ms | **no** |",
		"|   a, 50 ms added each way, batch 50000 | metrics/s | 51,000 | — | — | 85 % of 0 ms at batch 50000 | ≥ 80 % of 0 ms | yes |",
		"|   a through ockamd, 50 ms added each way, batch 50000 | metrics/s | 90,000 | — | — | 75 % of 0 ms at batch 50000 | ≥ 80 % of 0 ms | **no** |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
