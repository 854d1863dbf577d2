package inlet

import (
	"net/http"

	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/sender"
)

// stats are the inlet's counters, measurement internal_ockam_inlet. Each is
// a no-op without a collector.
type stats struct {
	writes             counter // write requests answered
	writesAcked        counter // 204: every point acknowledged by the listener
	writesRefused      counter // 400: a point refused for good, or a bad request
	writesUnavailable  counter // 503: not delivered, the client retries
	writesTooLarge     counter // 413
	writesUnauthorized counter // 401
	writesOther        counter // 415 (an unsupported Content-Encoding)
	metricsReceived    counter // points parsed from write bodies
	metricsAcked       counter // points the listener acknowledged
	metricsRefused     counter // points refused for good (the client drops them)
	browserRefused     counter // 403: requests made by a web page, on any path
}

// statFields are the fields of internal_ockam_inlet, as newStats registers them.
var statFields = []string{"writes", "writes_acked", "writes_refused", "writes_unavailable", "writes_too_large",
	"writes_unauthorized", "writes_other", "metrics_received", "metrics_acked", "metrics_refused",
	"browser_requests_refused"}

func newStats(c *selfstat.Collector) stats {
	if c == nil {
		return stats{}
	}
	reg := func(field string) counter { return counter{c.Register("ockam_inlet", field, nil)} }
	return stats{
		writes:             reg("writes"),
		writesAcked:        reg("writes_acked"),
		writesRefused:      reg("writes_refused"),
		writesUnavailable:  reg("writes_unavailable"),
		writesTooLarge:     reg("writes_too_large"),
		writesUnauthorized: reg("writes_unauthorized"),
		writesOther:        reg("writes_other"),
		metricsReceived:    reg("metrics_received"),
		metricsAcked:       reg("metrics_acked"),
		metricsRefused:     reg("metrics_refused"),
		browserRefused:     reg("browser_requests_refused"),
	}
}

// byStatus returns the counter of the answers with status.
func (s *stats) byStatus(status int) counter {
	switch status {
	case http.StatusNoContent:
		return s.writesAcked
	case http.StatusBadRequest:
		return s.writesRefused
	case http.StatusServiceUnavailable:
		return s.writesUnavailable
	case http.StatusRequestEntityTooLarge:
		return s.writesTooLarge
	case http.StatusUnauthorized:
		return s.writesUnauthorized
	}
	return s.writesOther
}

// Counters returns the values of the inlet's counters and of the sender's,
// keyed "ockam_inlet.<field>" and "ockam.<field>", or nil without a
// Config.Statistics collector.
func (h *Handler) Counters() map[string]int64 {
	if h.collector == nil {
		return nil
	}
	out := map[string]int64{}
	for _, group := range []struct {
		measurement string
		fields      []string
	}{{"ockam_inlet", statFields}, {"ockam", sender.StatFields()}} {
		for _, f := range group.fields {
			if s := h.collector.Get(group.measurement, f, nil); s != nil {
				out[group.measurement+"."+f] = s.Get()
			}
		}
	}
	return out
}

// counter is a selfstat.Stat that may be absent.
type counter struct{ s selfstat.Stat }

// Incr adds n; it is safe for concurrent use.
func (c counter) Incr(n int64) {
	if c.s != nil {
		c.s.Incr(n)
	}
}
