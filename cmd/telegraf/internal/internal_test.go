package internal

import (
	"testing"

	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

func TestGatherSumsInstances(t *testing.T) {
	a := selfstat.NewCollector(map[string]string{"_id": "a", "plugin": "probe"})
	b := selfstat.NewCollector(map[string]string{"_id": "b", "plugin": "probe"})
	a.Register("internal_test", "sent", nil).Incr(2)
	b.Register("internal_test", "sent", nil).Incr(3)
	t.Cleanup(func() { a.UnregisterAll(); b.UnregisterAll() })

	in := inputs.Inputs["internal"]().(*Internal)
	require.True(t, in.CollectMemstats, "memstats are on by default, as in Telegraf")

	var acc testutil.Accumulator
	require.NoError(t, in.Gather(&acc))
	m, ok := acc.Get("internal_internal_test")
	require.True(t, ok)
	require.Equal(t, int64(5), m.Fields["sent"])
	require.Equal(t, "probe", m.Tags["plugin"])
	require.NotContains(t, m.Tags, "_id")
	require.Equal(t, Version(), m.Tags["version"])
	require.True(t, acc.HasMeasurement("internal_memstats"))
	require.False(t, acc.HasMeasurement("internal_gostats"))

	in.PerInstance, in.CollectGostats = true, true
	acc.ClearMetrics()
	require.NoError(t, in.Gather(&acc))
	require.Equal(t, 2, countMeasurement(&acc, "internal_internal_test"))
	require.True(t, acc.HasMeasurement("internal_gostats"))
}

func countMeasurement(acc *testutil.Accumulator, name string) int {
	n := 0
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == name {
			n++
		}
	}
	return n
}
