package sink

import "github.com/influxdata/telegraf/selfstat"

// statsMeasurement is the selfstat measurement of the writes; it is
// reported as internal_ockamd.
const statsMeasurement = "ockamd"

// stats are the Writer's internal metrics, registered once (a
// selfstat.Collector is not safe for concurrent use; a Stat is).
type stats struct {
	groupsWritten    selfstat.Stat // groups (messages) InfluxDB stored
	writes           selfstat.Stat // HTTP writes, one for several groups queued together
	metricsWritten   selfstat.Stat
	groupsRefused    selfstat.Stat            // permanent: InfluxDB refused, or no bucket name
	groupsFailed     map[string]selfstat.Stat // transient, by reason (failureKinds)
	databasesCreated selfstat.Stat
	writeTime        selfstat.Stat // nanoseconds per write, averaged between reads
}

func newStats(c *selfstat.Collector) *stats {
	if c == nil {
		c = selfstat.NewCollector(nil)
	}
	s := &stats{
		groupsWritten:    c.Register(statsMeasurement, "groups_written", nil),
		metricsWritten:   c.Register(statsMeasurement, "metrics_written", nil),
		writes:           c.Register(statsMeasurement, "writes", nil),
		groupsRefused:    c.Register(statsMeasurement, "groups_refused", nil),
		groupsFailed:     make(map[string]selfstat.Stat, len(failureKinds)),
		databasesCreated: c.Register(statsMeasurement, "databases_created", nil),
		writeTime:        c.RegisterTiming(statsMeasurement, "write_time_ns", nil),
	}
	for _, k := range failureKinds {
		s.groupsFailed[k] = c.Register(statsMeasurement, "groups_failed", map[string]string{"reason": k})
	}
	return s
}
