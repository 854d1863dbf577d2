package ockam_listener

import (
	"github.com/influxdata/telegraf"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// DeliveryOutcome may be implemented by the telegraf.DeliveryInfo values an
// accumulator reports on Delivered(), to say more than Delivered() false:
// whether retrying can help, and why the group was not delivered. Telegraf's
// own accumulator does not implement it; ockamd's, which writes each group to
// InfluxDB itself, does.
//
// For a group that was not delivered, the listener answers with a nack whose
// kind is Permanent() and whose reason is Reason() (cut to secure.MaxReason
// bytes; "not delivered" if empty). Permanent tells the sender to drop the
// message: it is only right when delivering the same message again cannot
// succeed (InfluxDB refused its points, for example). For a delivered group
// both methods are ignored.
type DeliveryOutcome interface {
	// Permanent reports whether delivering the group again cannot succeed.
	Permanent() bool
	// Reason is the text of the nack, for the sender's log.
	Reason() string
}

// nackFor returns the nack of batch, whose group was not delivered.
func nackFor(info telegraf.DeliveryInfo, batch uint64) secure.Message {
	m := secure.Message{Type: secure.TypeNack, Batch: batch, Reason: reasonNotDelivered}
	if o, ok := info.(DeliveryOutcome); ok {
		m.Permanent = o.Permanent()
		if r := o.Reason(); r != "" {
			m.Reason = truncateReason(r)
		}
	}
	return m
}
