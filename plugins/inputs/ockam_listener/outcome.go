package ockam_listener

import (
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/models"

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

// OutcomeReporter is implemented by an accumulator whose delivery results
// all implement DeliveryOutcome (ockamd's). With any other accumulator the
// listener keeps a copy of each message's metrics until its result, to
// find out by sending it again why it was not delivered.
type OutcomeReporter interface {
	// ReportsOutcomes reports whether every result implements DeliveryOutcome.
	ReportsOutcomes() bool
}

// reportsOutcomes reports whether acc's results say why a group was not
// delivered.
func reportsOutcomes(acc telegraf.Accumulator) bool {
	r, ok := acc.(OutcomeReporter)
	return ok && r.ReportsOutcomes()
}

// reasonRefusedByOutput is the permanent nack of a message whose metrics an
// output refused twice, the second time sent again on their own.
const reasonRefusedByOutput = "refused for good by an output of the gateway (not delivered twice, " +
	"the second time sent again on its own); the gateway's log has the output's reason"

// maxProbes bounds how often a message is emitted again when other
// rejections blur the answer; then it gets the transient nack.
const maxProbes = 3

// delivered answers the message whose group info reports on: an ack when
// every output accepted it, else a nack.
//
// Telegraf says only "not delivered", both when an output refused the
// batch that held the group for good (influxdb_v2 drops a batch on a 400 or
// 404, which fails every group in it: the guilty one and the others alike)
// and when a full output buffer evicted it. An eviction is transient: the
// sender must retry. So a group that was not delivered, with no eviction
// meanwhile (models.AgentMetricsDropped did not move), becomes a suspect.
// Suspects are emitted again one at a time (a probe), so that no two share
// an output batch: a probe that is delivered was collateral, and is acked;
// a probe refused while no other metric was rejected (models.
// AgentMetricsRejected moved by the probe's metrics alone), and while the
// outputs wrote other metrics (models.AgentMetricsWritten moved since the
// message was first emitted), is refused for good, a permanent nack. A
// probe refused with others, or while the outputs wrote nothing at all (a
// missing database or bucket refuses every batch: that is the gateway's
// problem, not the message's, and a permanent nack would make the device
// drop its metrics), is tried again, up to maxProbes times, then answered
// with the transient nack. InfluxDB down is
// no refusal: the output keeps the batch and retries, and no result comes
// until it is written.
func (l *Listener) delivered(info telegraf.DeliveryInfo) {
	l.mu.Lock()
	p, ok := l.pending[info.ID()]
	delete(l.pending, info.ID())
	l.mu.Unlock()
	if !ok {
		<-l.undelivered
		return // cannot happen: every added group is in pending
	}
	if p.probes > 0 {
		l.probing = false
		defer l.nextProbe()
	}
	_, outcome := info.(DeliveryOutcome)
	switch {
	case info.Delivered():
		l.stats.messagesDelivered.Incr(1)
		l.answer(p, secure.Message{Type: secure.TypeAck, Batch: p.batch})
	case outcome || !l.resend || models.AgentMetricsDropped.Get() != p.evicted:
		l.stats.messagesUndelivered.Incr(1)
		l.answer(p, nackFor(info, p.batch))
		if !outcome {
			l.warnUndelivered(p)
		}
	case p.probes == 0:
		l.suspects = append(l.suspects, p) // keeps its max_undelivered_messages slot and its bytes
		l.nextProbe()
	case models.AgentMetricsRejected.Get()-p.rejected == int64(len(p.copies)) &&
		models.AgentMetricsWritten.Get() != p.written:
		l.answer(p, secure.Message{Type: secure.TypeNack, Batch: p.batch, Permanent: true, Reason: reasonRefusedByOutput})
		l.stats.messagesRefused[refusedOutput].Incr(1)
		if l.refusals.first(p.conn.key + " output") {
			l.Log.Warnf("Refused a message from %s (output): an output refused its metrics twice, the second time "+
				"sent again on their own; further output refusals for this sender are only counted", p.conn.peer.Identifier.Short())
		}
	case p.probes < maxProbes:
		l.suspects = append(l.suspects, p)
	default:
		l.stats.messagesUndelivered.Incr(1)
		l.answer(p, nackFor(info, p.batch))
		l.warnUndelivered(p)
	}
}

// undeliveredPeriod: the warning about messages the outputs did not
// deliver is logged at most this often.
const undeliveredPeriod = time.Minute

// warnUndelivered logs, at most once per undeliveredPeriod, that the
// outputs did not deliver messages and their senders were asked to retry.
// Telegraf tells the listener only "not delivered", not the output's error:
// the warning points the operator to the output's own log lines. Called
// after the transient nack of p under Telegraf's accumulator; ockamd's
// (DeliveryOutcome) logs InfluxDB's answer itself.
func (l *Listener) warnUndelivered(p pendingMessage) {
	n, senders, warn := l.undeliveredLog.add(p.conn.key, time.Now(), undeliveredPeriod)
	if !warn {
		return
	}
	l.Log.Warnf("The outputs did not deliver %d messages from %d senders (the last from %s) since the last such "+
		"warning; the senders keep them and retry. See the outputs' errors above (a missing database or bucket "+
		"gives 404 Not Found); this warning is logged at most once a minute", n, senders, p.conn.peer.Identifier.Short())
}

// undeliveredLog counts the messages not delivered by the outputs between
// two warnings, and the senders they came from.
type undeliveredLog struct {
	mu      sync.Mutex
	last    time.Time // of the last warning; zero before the first
	count   int64
	senders map[string]struct{} // at most maxOnce
}

// add counts a message from sender that was not delivered, and reports
// whether to warn now: at the first, and then at the first one period or
// more after the last warning. With warn it returns how many messages and
// senders were counted since the last warning (this one included), and
// starts counting again.
func (u *undeliveredLog) add(sender string, now time.Time, period time.Duration) (n int64, senders int, warn bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.count++
	if u.senders == nil {
		u.senders = make(map[string]struct{})
	}
	if len(u.senders) < maxOnce {
		u.senders[sender] = struct{}{}
	}
	if !u.last.IsZero() && now.Sub(u.last) < period {
		return 0, 0, false
	}
	n, senders = u.count, len(u.senders)
	u.last, u.count, u.senders = now, 0, nil
	return n, senders, true
}

// nextProbe emits the copy of the next suspect's metrics as a new group, in
// place of the one that was not delivered, unless a probe is under way.
func (l *Listener) nextProbe() {
	if l.probing || len(l.suspects) == 0 {
		return
	}
	p := l.suspects[0]
	l.suspects[0] = pendingMessage{}
	l.suspects = l.suspects[1:]
	metrics := make([]telegraf.Metric, len(p.copies))
	for i, m := range p.copies {
		metrics[i] = m.Copy() // p.copies stays for another probe
	}
	p.probes++
	p.evicted, p.rejected = models.AgentMetricsDropped.Get(), models.AgentMetricsRejected.Get()
	l.probing = true
	l.stats.messagesResent.Incr(1)
	l.mu.Lock()
	id := l.acc.AddTrackingMetricGroup(metrics)
	l.pending[id] = p
	l.mu.Unlock()
}

// answer gives back what a pending message held and replies to its sender.
func (l *Listener) answer(p pendingMessage, m secure.Message) {
	<-l.undelivered
	l.budget.release(p.conn, p.conn.key, p.size)
	l.stats.undeliveredBytes.Incr(-p.size)
	p.conn.reply(m)
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
