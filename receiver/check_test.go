package receiver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// TestCheckPointsKeyLength checks the series key length at InfluxDB's bound,
// with the stamped tags counted once (a sender's tag of the same name is
// replaced, not added) and an empty stamped value counted as no tag.
func TestCheckPointsKeyLength(t *testing.T) {
	stamped := map[string]string{"ockam_identity": "I0123", "site": "", "region": "eu"}
	reserved := reservedFields("ockam_identity", []string{"site", "region"})
	// The stamped part: ",ockam_identity=I0123" (21) + ",region=eu" (10).
	const stampedKey = 21 + 10
	// "m" + ",k=" + value + stamped; the field key "f" adds 4 + 1.
	point := func(valueLen int) telegraf.Metric {
		return metric.New("m", map[string]string{"k": strings.Repeat("v", valueLen), "ockam_identity": "forged", "site": "x"},
			map[string]any{"f": 1.0}, time.Unix(0, 0))
	}
	fits := maxKeyLength - fieldKeySeparator - 1 - 1 - 3 - stampedKey
	require.Nil(t, checkPoints([]telegraf.Metric{point(fits)}, reserved, stamped))
	r := checkPoints([]telegraf.Metric{point(fits + 1)}, reserved, stamped)
	require.Equal(t, &pointRefusal{RefusedInvalidPoint,
		`max key length exceeded: 65536 > 65535 (measurement "m", field "f")`}, r)
	series := maxKeyLength - 1 - 3 - stampedKey
	r = checkPoints([]telegraf.Metric{point(series + 1)}, reserved, stamped)
	require.Equal(t, &pointRefusal{RefusedInvalidPoint, `max key length exceeded: 65536 > 65535 (measurement "m")`}, r)
}

// TestCheckPointsRefusals checks each refusal's exact text, the first bad
// point of the message named.
func TestCheckPointsRefusals(t *testing.T) {
	stamped := map[string]string{"ockam_identity": "I0123"}
	reserved := reservedFields("ockam_identity", nil)
	p := func(name string, tags map[string]string, fields map[string]any) telegraf.Metric {
		return metric.New(name, tags, fields, time.Unix(0, 0))
	}
	good := p("cpu", map[string]string{"host": "a"}, map[string]any{"usage": 1.0, "n": int64(1)})
	for _, tc := range []struct {
		name    string
		metrics []telegraf.Metric
		want    *pointRefusal
	}{
		{"good", []telegraf.Metric{good, good}, nil},
		{"same field, other measurement, other type", []telegraf.Metric{good, p("mem", nil, map[string]any{"usage": "x"})}, nil},
		{"type conflict", []telegraf.Metric{good, p("cpu", nil, map[string]any{"n": 2.0})}, &pointRefusal{RefusedInvalidPoint,
			`field type conflict: input field "n" on measurement "cpu" is type float, and type integer earlier in the same message`}},
		{"reserved field", []telegraf.Metric{good, p("cpu", nil, map[string]any{"ockam_identity": "I9"})}, &pointRefusal{RefusedReservedField,
			`field "ockam_identity" on measurement "cpu" has the name of a tag the listener sets from the sender's credential; rename the field`}},
		{"time tag", []telegraf.Metric{p("cpu", map[string]string{"time": "1"}, map[string]any{"v": 1.0})}, &pointRefusal{RefusedInvalidPoint,
			`invalid tag key: input tag "time" on measurement "cpu" is invalid`}},
		{"time field", []telegraf.Metric{p("cpu", nil, map[string]any{"time": 1.0})}, &pointRefusal{RefusedInvalidPoint,
			`invalid field name: input field "time" on measurement "cpu" is invalid`}},
		{"long string", []telegraf.Metric{p("cpu", nil, map[string]any{"s": strings.Repeat("x", maxStringField+1)})}, &pointRefusal{RefusedInvalidPoint,
			fmt.Sprintf(`input field "s" on measurement "cpu" is a string of %d bytes, over InfluxDB's limit of %d`, maxStringField+1, maxStringField)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, checkPoints(tc.metrics, reserved, stamped))
		})
	}
}

// BenchmarkCheckPoints measures the checks of a message of 1,000 points of
// the benchmarks' workload shape (3 tags, 5 fields).
func BenchmarkCheckPoints(b *testing.B) {
	stamped := map[string]string{"ockam_identity": "I0123456789abcdef", "site": "plant-7"}
	reserved := reservedFields("ockam_identity", []string{"site"})
	metrics := make([]telegraf.Metric, 1000)
	for i := range metrics {
		metrics[i] = metric.New([]string{"cpu", "mem", "disk"}[i%3],
			map[string]string{"host": fmt.Sprintf("host-%02d.example.net", i%20), "region": "eu-west-1", "rack": "r3"},
			map[string]any{"usage_user": 12.5, "usage_system": 3.25, "usage_idle": 84.1, "uptime": int64(i), "errors": int64(0)},
			time.Unix(int64(i), 0))
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := checkPoints(metrics, reserved, stamped); r != nil {
			b.Fatal(r.reason)
		}
	}
}

// TestReplay checks that replay gives the metrics of a message as they were
// handed over: the same points, the stamped tags in place of forged ones,
// the time a line without a timestamp was given when first parsed, and
// none of the changes Telegraf's processors made to the metrics handed
// over meanwhile. Each call gives new metrics.
func TestReplay(t *testing.T) {
	payload := []byte("cpu,host=a,ockam_identity=forged usage=1.5,n=2i 1700000000000000000\nmem,site=x free=3i\n")
	tags := map[string]string{"ockam_identity": "I0123", "site": ""}
	p, err := newParser()
	require.NoError(t, err)
	metrics, err := p.Parse(payload)
	require.NoError(t, err)
	stamp(metrics, tags)
	parsedAt := time.Date(2026, 12, 4, 22, 0, 0, 0, time.UTC) // as if parsed then
	metrics[1].SetTime(parsedAt)
	again := replay(payload, metrics, tags)
	// What processors and outputs may do to the metrics handed over.
	metrics[0].AddTag("processed", "yes")
	metrics[0].RemoveField("n")
	metrics[1].SetName("renamed")

	want := []telegraf.Metric{
		metric.New("cpu", map[string]string{"host": "a", "ockam_identity": "I0123"},
			map[string]any{"usage": 1.5, "n": int64(2)}, time.Unix(0, 1700000000000000000)),
		metric.New("mem", map[string]string{"ockam_identity": "I0123"}, map[string]any{"free": int64(3)}, parsedAt),
	}
	first := again()
	testutil.RequireMetricsEqual(t, want, first)
	first[0].AddTag("probe", "1")
	testutil.RequireMetricsEqual(t, want, again())
}
