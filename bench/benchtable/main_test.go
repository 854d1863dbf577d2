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
