package ockam

import (
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/sender"
)

// stats are the plugin's internal metrics, measurement internal_ockam. Each
// is a no-op when Telegraf injected no Statistics collector.
type stats struct {
	messagesSent   counter // data messages sent
	bytesSent      counter // line-protocol bytes in them
	acks           counter
	nacksPermanent counter // messages refused for good (their metrics dropped)
	nacksTransient counter // messages the listener asked to retry
	reconnects     counter // channels opened after the first one
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
		messagesSent:   reg("messages_sent"),
		bytesSent:      reg("bytes_sent"),
		acks:           reg("acks"),
		nacksPermanent: reg("nacks_permanent"),
		nacksTransient: reg("nacks_transient"),
		reconnects:     reg("reconnects"),

		revocationListStale: reg("revocation_list_stale"),
		credentialExpiresIn: reg("credential_expires_in_seconds"),
	}
}

// sender returns the counters the sender keeps.
func (st stats) sender() sender.Stats {
	return sender.Stats{
		MessagesSent:   st.messagesSent,
		BytesSent:      st.bytesSent,
		Acks:           st.acks,
		NacksPermanent: st.nacksPermanent,
		NacksTransient: st.nacksTransient,
		Reconnects:     st.reconnects,
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
