package ockam_listener

import (
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/receiver"
)

// statsMeasurement is the selfstat measurement of the receiver's counters;
// Telegraf reports it as internal_ockam_listener.
const statsMeasurement = "ockam_listener"

// stats are the receiver's internal metrics as this adapter registered them
// (receiver.Config.Counters): a selfstat.Collector gives the same Stat for
// the same field and tags, so these are the Stats the engine moves. The
// adapter moves messages_resent itself (outcome.go); the tests read the
// rest.
type stats struct {
	channelsOpen              selfstat.Stat
	handshakesOK              selfstat.Stat
	handshakesFailed          map[string]selfstat.Stat // by reason
	messagesAccepted          selfstat.Stat
	messagesRefused           map[string]selfstat.Stat // by reason
	messagesDelivered         selfstat.Stat
	messagesUndelivered       selfstat.Stat
	metricsEmitted            selfstat.Stat
	bytesReceived             selfstat.Stat
	connectionsRejected       selfstat.Stat
	channelsFailed            map[string]selfstat.Stat // by reason
	forgedTags                selfstat.Stat
	connectionsThrottled      selfstat.Stat
	channelsOverIdentityLimit selfstat.Stat
	undeliveredBytes          selfstat.Stat
	byteLimitStalls           selfstat.Stat
	messagesResent            selfstat.Stat
	revocationListStale       selfstat.Stat
	credentialExpiresIn       selfstat.Stat
}

func newStats(c *selfstat.Collector) *stats {
	reg := func(field string) selfstat.Stat { return c.Register(statsMeasurement, field, nil) }
	byReason := func(field string, reasons []string) map[string]selfstat.Stat {
		m := make(map[string]selfstat.Stat, len(reasons))
		for _, r := range reasons {
			m[r] = c.Register(statsMeasurement, field, map[string]string{"reason": r})
		}
		return m
	}
	return &stats{
		channelsOpen:              reg("channels_open"),
		handshakesOK:              reg("handshakes_ok"),
		handshakesFailed:          byReason("handshakes_failed", receiver.HandshakeReasons),
		messagesAccepted:          reg("messages_accepted"),
		messagesRefused:           byReason("messages_refused", receiver.RefusalReasons),
		messagesDelivered:         reg("messages_delivered"),
		messagesUndelivered:       reg("messages_undelivered"),
		metricsEmitted:            reg("metrics_emitted"),
		bytesReceived:             reg("bytes_received"),
		connectionsRejected:       reg("connections_rejected"),
		channelsFailed:            byReason("channels_failed", receiver.ChannelFailureReasons),
		forgedTags:                reg("forged_tags"),
		connectionsThrottled:      reg("connections_throttled"),
		channelsOverIdentityLimit: reg("channels_over_identity_limit"),
		undeliveredBytes:          reg("undelivered_bytes"),
		byteLimitStalls:           reg("byte_limit_stalls"),
		messagesResent:            reg("messages_resent"),
		revocationListStale:       reg("revocation_list_stale"),
		credentialExpiresIn:       reg("credential_expires_in_seconds"),
	}
}
