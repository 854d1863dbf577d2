package ockam

import (
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/sender"
)

// stats are the plugin's internal metrics, measurement internal_ockam: the
// sender's (sender.StatFields) and the trust loader's. Each is a no-op when
// Telegraf injected no Statistics collector.
type stats struct {
	sender sender.Stats
	// lists from revocation_source that passed their next update
	revocationListStale counter
	// seconds the credential in use stays valid, negative once expired
	credentialExpiresIn counter
}

func newStats(c *selfstat.Collector) stats {
	if c == nil {
		return stats{}
	}
	reg := func(field string) counter { return counter{c.Register("ockam", field, nil)} }
	return stats{
		sender:              sender.NewStats(func(field string) sender.Counter { return reg(field) }),
		revocationListStale: reg("revocation_list_stale"),
		credentialExpiresIn: reg("credential_expires_in_seconds"),
	}
}

// counter is a selfstat.Stat that may be absent.
type counter struct{ s selfstat.Stat }

// Incr adds n; it is safe for concurrent use.
func (c counter) Incr(n int64) {
	if c.s != nil {
		c.s.Incr(n)
	}
}

// Set sets a gauge to n; it is safe for concurrent use.
func (c counter) Set(n int64) {
	if c.s != nil {
		c.s.Set(n)
	}
}
