package ockam_listener

import (
	"context"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/models"

	"github.com/ockam-addons/telegraf-ockam/receiver"
)

// DeliveryOutcome may be implemented by the telegraf.DeliveryInfo values an
// accumulator reports on Delivered(), to say more than Delivered() false:
// whether retrying can help, and why the group was not delivered. Telegraf's
// own accumulator does not implement it; ockamd's, which writes each group to
// InfluxDB itself, does.
//
// For a group that was not delivered, the listener answers with a nack whose
// kind is Permanent() and whose reason is Reason() (cut to secure.MaxReason
// bytes; receiver.ReasonNotDelivered if empty). Permanent tells the sender to drop the
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
// listener keeps each message (its payload, parsed again when needed) until
// its result, to find out by sending it again why it was not delivered.
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

// trackingSink is the receiver.Sink of the plugin: it emits each message as
// a tracking group of Telegraf's accumulator, and calls the message's done
// with what Delivered() reports of the group.
type trackingSink struct {
	acc   telegraf.TrackingAccumulator
	log   telegraf.Logger
	stats *stats
	// resend: the accumulator's results do not say why a group was not
	// delivered, so the sink finds out by sending it again.
	resend bool

	// mu is held around AddTrackingMetricGroup and the insert into pending:
	// an empty group (or one whose metrics are all filtered out) reports its
	// delivery inside AddTrackingMetricGroup (a Telegraf internal), and the
	// delivery loop waits on mu until the message is in pending.
	mu      sync.Mutex
	pending map[telegraf.TrackingID]pendingMessage

	// Used by the delivery loop only.
	suspects []pendingMessage // not delivered, waiting to be probed
	probing  bool             // a probe is under way
	// undeliveredLog: warnings about messages the outputs did not deliver.
	undeliveredLog undeliveredLog

	stop    context.CancelFunc
	stopped chan struct{} // closed when the delivery loop has ended
}

var (
	_ receiver.ReplaySink = (*trackingSink)(nil)
	_ receiver.CopyKeeper = (*trackingSink)(nil)
)

// pendingMessage is an emitted message awaiting its delivery result.
type pendingMessage struct {
	peer receiver.Peer
	done func(receiver.Outcome)

	// For an accumulator without DeliveryOutcome (Telegraf's): how to get
	// the metrics as emitted again, to emit them again on their own, and
	// how many there are.
	again    func() []telegraf.Metric
	metrics  int
	evicted  int64 // models.AgentMetricsDropped when (last) emitted
	written  int64 // models.AgentMetricsWritten when first emitted
	rejected int64 // models.AgentMetricsRejected when last emitted as a probe
	probes   int   // times emitted again as a probe
}

// newTrackingSink starts the delivery loop over acc, which has room for
// max groups unanswered (the receiver never has more).
func newTrackingSink(acc telegraf.Accumulator, max int, log telegraf.Logger, st *stats) *trackingSink {
	ctx, cancel := context.WithCancel(context.Background())
	s := &trackingSink{
		acc:     acc.WithTracking(max),
		log:     log,
		stats:   st,
		resend:  !reportsOutcomes(acc),
		pending: make(map[telegraf.TrackingID]pendingMessage),
		stop:    cancel,
		stopped: make(chan struct{}),
	}
	go s.deliveryLoop(ctx)
	return s
}

// KeepsCopies reports whether the sink keeps a copy of each message (under
// Telegraf's accumulator): the receiver counts it under the byte budget.
func (s *trackingSink) KeepsCopies() bool { return s.resend }

// Deliver emits metrics as one tracking group, keeping a copy of them to
// emit again (receiver.Receiver calls DeliverReplayable instead).
func (s *trackingSink) Deliver(peer receiver.Peer, metrics []telegraf.Metric, done func(receiver.Outcome)) {
	var again func() []telegraf.Metric
	if s.resend {
		copies := make([]telegraf.Metric, len(metrics))
		for i, m := range metrics {
			copies[i] = m.Copy()
		}
		again = func() []telegraf.Metric {
			ms := make([]telegraf.Metric, len(copies))
			for i, m := range copies {
				ms[i] = m.Copy() // copies stays for another probe
			}
			return ms
		}
	}
	s.DeliverReplayable(peer, metrics, again, done)
}

// DeliverReplayable emits metrics as one tracking group; again gives them
// anew, for a probe (delivered).
func (s *trackingSink) DeliverReplayable(peer receiver.Peer, metrics []telegraf.Metric,
	again func() []telegraf.Metric, done func(receiver.Outcome)) {
	p := pendingMessage{peer: peer, done: done}
	if s.resend {
		p.again, p.metrics = again, len(metrics)
		p.evicted = models.AgentMetricsDropped.Get()
		p.written = models.AgentMetricsWritten.Get()
	}
	s.mu.Lock()
	id := s.acc.AddTrackingMetricGroup(metrics)
	s.pending[id] = p
	s.mu.Unlock()
}

// close ends the delivery loop. Messages still pending are not answered.
func (s *trackingSink) close() {
	s.stop()
	<-s.stopped
}

// deliveryLoop routes each delivery result to its message.
func (s *trackingSink) deliveryLoop(ctx context.Context) {
	defer close(s.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case info := <-s.acc.Delivered():
			s.delivered(info)
		}
	}
}

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
func (s *trackingSink) delivered(info telegraf.DeliveryInfo) {
	s.mu.Lock()
	p, ok := s.pending[info.ID()]
	delete(s.pending, info.ID())
	s.mu.Unlock()
	if !ok {
		return // cannot happen: every added group is in pending
	}
	if p.probes > 0 {
		s.probing = false
		defer s.nextProbe()
	}
	_, outcome := info.(DeliveryOutcome)
	switch {
	case info.Delivered():
		p.done(receiver.Delivered())
	case outcome || !s.resend || models.AgentMetricsDropped.Get() != p.evicted:
		p.done(outcomeOf(info))
		if !outcome {
			s.warnUndelivered(p)
		}
	case p.probes == 0:
		s.suspects = append(s.suspects, p) // keeps its max_undelivered_messages slot and its bytes
		s.nextProbe()
	case models.AgentMetricsRejected.Get()-p.rejected == int64(p.metrics) &&
		models.AgentMetricsWritten.Get() != p.written:
		p.done(receiver.Refused(receiver.RefusedOutput, reasonRefusedByOutput))
	case p.probes < maxProbes:
		s.suspects = append(s.suspects, p)
	default:
		p.done(outcomeOf(info))
		s.warnUndelivered(p)
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
func (s *trackingSink) warnUndelivered(p pendingMessage) {
	n, senders, warn := s.undeliveredLog.add(p.peer.Identifier.String(), time.Now(), undeliveredPeriod)
	if !warn {
		return
	}
	s.log.Warnf("The outputs did not deliver %d messages from %d senders (the last from %s) since the last such "+
		"warning; the senders keep them and retry. See the outputs' errors above (a missing database or bucket "+
		"gives 404 Not Found); this warning is logged at most once a minute", n, senders, p.peer.Identifier.Short())
}

// maxOnce bounds the senders an undeliveredLog remembers between two
// warnings.
const maxOnce = 10000

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

// nextProbe emits the next suspect's metrics again as a new group, in
// place of the one that was not delivered, unless a probe is under way.
func (s *trackingSink) nextProbe() {
	if s.probing || len(s.suspects) == 0 {
		return
	}
	p := s.suspects[0]
	s.suspects[0] = pendingMessage{}
	s.suspects = s.suspects[1:]
	metrics := p.again()
	if len(metrics) != p.metrics { // cannot happen: see receiver.ReplaySink
		p.done(receiver.Transient(receiver.ReasonNotDelivered))
		s.nextProbe()
		return
	}
	p.probes++
	p.evicted, p.rejected = models.AgentMetricsDropped.Get(), models.AgentMetricsRejected.Get()
	s.probing = true
	s.stats.messagesResent.Incr(1)
	s.mu.Lock()
	id := s.acc.AddTrackingMetricGroup(metrics)
	s.pending[id] = p
	s.mu.Unlock()
}

// outcomeOf returns the outcome of a group that was not delivered.
func outcomeOf(info telegraf.DeliveryInfo) receiver.Outcome {
	o, ok := info.(DeliveryOutcome)
	if !ok {
		return receiver.Transient(receiver.ReasonNotDelivered)
	}
	return receiver.Outcome{Permanent: o.Permanent(), Reason: o.Reason()}
}
