// Package internal is inputs.internal for the custom Telegraf: Telegraf's
// own statistics (selfstat), which include outputs.ockam's internal_ockam
// and inputs.ockam_listener's internal_ockam_listener. Telegraf's
// plugins/inputs/internal cannot be imported from another module (it uses
// Telegraf's internal package), so this is a port of it, with the same
// options and metrics; the version tag is this binary's version.
package internal

import (
	_ "embed"
	"runtime"
	"runtime/metrics"
	"strings"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/internal/version"
)

//go:embed sample.conf
var sampleConfig string

// Internal gathers selfstat.Metrics and, optionally, Go runtime statistics.
type Internal struct {
	CollectMemstats bool `toml:"collect_memstats"`
	CollectGostats  bool `toml:"collect_gostats"`
	PerInstance     bool `toml:"per_instance"`
}

// SampleConfig returns the sample configuration.
func (*Internal) SampleConfig() string { return sampleConfig }

// Gather adds the statistics to acc.
func (s *Internal) Gather(acc telegraf.Accumulator) error {
	goVersion := strings.TrimPrefix(runtime.Version(), "go")
	version := Version()
	stats := selfstat.Metrics()
	for _, m := range stats {
		if m.Name() == "internal_agent" {
			m.AddTag("go_version", goVersion)
		}
		m.AddTag("version", version)
	}
	if s.PerInstance {
		for _, m := range stats {
			acc.AddFields(m.Name(), m.Fields(), m.Tags(), m.Time())
		}
	} else {
		for _, m := range accumulate(stats) {
			acc.AddMetric(m)
		}
	}
	if s.CollectMemstats {
		collectMemStats(acc)
	}
	if s.CollectGostats {
		collectGoStats(acc, goVersion)
	}
	return nil
}

// accumulate sums the stats of every instance of a plugin type: the metrics
// that differ only in their _id tag.
func accumulate(stats []telegraf.Metric) []telegraf.Metric {
	var out []telegraf.Metric
	index := make(map[uint64]telegraf.Metric)
	for _, m := range stats {
		key := m.HashIDWithFieldsFiltered([]string{"_id"}, nil)
		am, found := index[key]
		if !found {
			am = m.Copy()
			am.RemoveTag("_id")
			index[key] = am
			out = append(out, am)
			continue
		}
		for _, f := range m.FieldList() {
			var sum int64
			if v, ok := am.GetField(f.Key); ok {
				sum, _ = v.(int64)
			}
			if v, ok := f.Value.(int64); ok {
				am.AddField(f.Key, sum+v)
			}
		}
	}
	return out
}

func collectMemStats(acc telegraf.Accumulator) {
	m := &runtime.MemStats{}
	runtime.ReadMemStats(m)
	acc.AddFields("internal_memstats", map[string]any{
		"alloc_bytes":         m.Alloc,
		"total_alloc_bytes":   m.TotalAlloc,
		"sys_bytes":           m.Sys,
		"pointer_lookups":     m.Lookups,
		"mallocs":             m.Mallocs,
		"frees":               m.Frees,
		"heap_alloc_bytes":    m.HeapAlloc,
		"heap_sys_bytes":      m.HeapSys,
		"heap_idle_bytes":     m.HeapIdle,
		"heap_in_use_bytes":   m.HeapInuse,
		"heap_released_bytes": m.HeapReleased,
		"heap_objects":        m.HeapObjects,
		"num_gc":              m.NumGC,
	}, map[string]string{})
}

// goStatName turns /cpu/classes/gc/mark/assist:cpu-seconds into
// cpu_classes_gc_mark_assist_cpu_seconds.
var goStatName = strings.NewReplacer("/", "_", ":", "_", "-", "_")

func collectGoStats(acc telegraf.Accumulator, goVersion string) {
	descs := metrics.All()
	samples := make([]metrics.Sample, len(descs))
	for i := range samples {
		samples[i].Name = descs[i].Name
	}
	metrics.Read(samples)
	fields := make(map[string]any, len(samples))
	for _, sample := range samples {
		name := goStatName.Replace(strings.TrimPrefix(sample.Name, "/"))
		switch sample.Value.Kind() {
		case metrics.KindUint64:
			fields[name] = sample.Value.Uint64()
		case metrics.KindFloat64:
			fields[name] = sample.Value.Float64()
		case metrics.KindFloat64Histogram:
			fields[name] = medianBucket(sample.Value.Float64Histogram())
		}
	}
	acc.AddFields("internal_gostats", fields, map[string]string{"go_version": goVersion})
}

// medianBucket returns a crude median of a histogram: the bucket boundary
// where half the counts are reached.
func medianBucket(h *metrics.Float64Histogram) float64 {
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	half := total / 2
	total = 0
	for i, c := range h.Counts {
		total += c
		if total >= half {
			return h.Buckets[i]
		}
	}
	return 0
}

// Version returns the version of telegraf-ockam (version.Release).
func Version() string { return version.Release() }

func init() {
	inputs.Add("internal", func() telegraf.Input {
		return &Internal{CollectMemstats: true}
	})
}
