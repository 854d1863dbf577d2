package receiver

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/influxdata/telegraf"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Nack reasons: the text of each nack the receiver sends (and of the close
// message after the first two). Senders act on Message.Permanent; the text
// is for their logs.
const (
	ReasonRevoked      = "revoked"             // permanent
	ReasonExpired      = "credential expired"  // transient, then the channel is closed
	ReasonUnauthorized = "unauthorized"        // permanent: any other Authorize failure
	ReasonBadLine      = "bad line protocol: " // permanent, followed by the parser's error
	reasonPolicy       = "policy: measurement %q is not allowed"
	// reasonReservedMeasurement: only the gateway writes outcomes.
	reasonReservedMeasurement = "measurement %q is reserved for the outcomes of control instructions, which the gateway writes"
	reasonTooLarge            = "data message larger than max_received_message_size (%d bytes)"
)

// Refusals: the reason tag of messages_refused.
const (
	RefusedRevoked      = "revoked"
	RefusedExpired      = "expired"
	RefusedUnauthorized = "unauthorized"
	RefusedParse        = "parse"
	RefusedPolicy       = "policy"
	// RefusedTooLarge: a data message over max_received_message_size.
	RefusedTooLarge = "too_large"
	// RefusedReservedField: a field named like a tag the receiver sets
	// (check.go).
	RefusedReservedField = "reserved_field"
	// RefusedInvalidPoint: a point InfluxDB would refuse for good
	// (check.go).
	RefusedInvalidPoint = "invalid_point"
	// RefusedOutput: a Sink's outputs refused the metrics for good
	// (inputs.ockam_listener: not delivered twice, without an eviction).
	RefusedOutput = "output"
)

// handle checks one data message and emits it, or refuses it with a nack.
// It returns ok false when the channel must be closed, with the reason to
// send.
func (r *Receiver) handle(c *conn, m secure.Message) (closeReason string, ok bool) {
	c.inflight.Add(1)
	// 1. the sender's credential is still valid and not revoked
	if closeReason, stop, refused := r.checkSender(c, m.Batch); refused {
		return closeReason, !stop
	}
	// 2. not over max_received_message_size (its payload was discarded)
	if m.TooLarge {
		err := fmt.Errorf(reasonTooLarge, r.cfg.MaxReceivedMessageSize)
		r.refuse(c, m.Batch, RefusedTooLarge, true, err.Error(), err)
		return "", true
	}
	// 3. room under max_undelivered_bytes_per_channel and _per_identity:
	// wait for it with the payload only, before parsing
	size := SizeEstimate(m.Payload, len(c.tags))
	if r.keepsCopies {
		size *= 2 // and what is kept to send it again (ReplaySink; the payload: less)
	}
	if !r.budget.acquire(c.ctx, c, c.key, size, func() { r.stalled(c) }) {
		return "", false // shut down meanwhile
	}
	defer func() {
		if size > 0 { // not handed over to a pending message
			r.budget.release(c, c.key, size)
		}
	}()
	// 4. the payload is line protocol
	metrics, err := c.parser.Parse(m.Payload)
	// A parser keeps its last input and metric: the next message gets a new
	// one, so that an idle channel holds neither (docs/BENCHMARKS.md).
	if p, perr := newParser(); perr == nil { // checked in Init
		c.parser = p
	}
	if err != nil {
		r.refuse(c, m.Batch, RefusedParse, true, ReasonBadLine+err.Error(), err)
		return "", true
	}
	// 5. the policy allows every measurement, and none is the gateway's own
	for _, metric := range metrics {
		if metric.Name() == OutcomeMeasurement {
			err := fmt.Errorf(reasonReservedMeasurement, OutcomeMeasurement)
			r.refuse(c, m.Batch, RefusedReservedField, true, err.Error(), err)
			return "", true
		}
		if name := metric.Name(); !c.grant.allows(name) {
			err := fmt.Errorf(reasonPolicy, name)
			r.refuse(c, m.Batch, RefusedPolicy, true, err.Error(), err)
			return "", true
		}
	}
	// 6. no field poses as a verified tag, and InfluxDB can store every point
	if pr := checkPoints(metrics, r.reserved, c.tags); pr != nil {
		r.refuse(c, m.Batch, pr.kind, true, pr.reason, errors.New(pr.reason))
		return "", true
	}
	// 7. the verified identity and attributes replace the sender's tags
	if forged, tag := stamp(metrics, c.tags); forged > 0 {
		r.stats.forgedTags.Incr(int64(forged))
		if r.refusals.first(c.peer.Identifier.String() + " forged") {
			r.log.Warnf("Replaced the %q tag that %s wrote with its verified value (%d metrics of the message); "+
				"further forged tags from this sender are only counted in forged_tags", tag, c.peer.Identifier.Short(), forged)
		}
	}
	// 8. emit, and answer when the outputs are done with it
	if len(metrics) == 0 {
		r.stats.messagesAccepted.Incr(1)
		c.reply(secure.Message{Type: secure.TypeAck, Batch: m.Batch})
		return "", true
	}
	if !r.deliver(c, m.Batch, size, metrics, m.Payload) {
		return "", false
	}
	size = 0 // released when the delivery result comes
	return "", true
}

// checkSender checks that the sender's credential is still valid and not
// revoked before a message of batch is taken. If not, it answers the
// message with a nack (refused) and says whether the channel must be closed
// (stop), with the reason to send.
func (r *Receiver) checkSender(c *conn, batch uint64) (closeReason string, stop, refused bool) {
	err := r.verifier.Authorize(c.peer, r.now())
	switch {
	case err == nil:
		return "", false, false
	case errors.Is(err, secure.ErrRevoked):
		// Nothing from this identity is accepted again: close the
		// channel, as for an expired credential.
		r.refuse(c, batch, RefusedRevoked, true, ReasonRevoked, err)
		return ReasonRevoked, true, true
	case errors.Is(err, secure.ErrExpired):
		// The sender reloads its credential and opens a new channel.
		r.refuse(c, batch, RefusedExpired, false, ReasonExpired, err)
		return ReasonExpired, true, true
	}
	r.refuse(c, batch, RefusedUnauthorized, true, ReasonUnauthorized, err)
	return "", false, true
}

// deliver hands the metrics of one message to the Sink, and answers the
// message when the Sink calls done. It waits for a free
// max_undelivered_messages slot, and returns false if the connection is
// shut down meanwhile. payload is the message's line protocol, which a
// ReplaySink may have parsed again; nil for metrics that are not parsed
// from a payload (a control outcome), which are copied instead.
func (r *Receiver) deliver(c *conn, batch uint64, size int64, metrics []telegraf.Metric, payload []byte) bool {
	select {
	case r.undelivered <- struct{}{}:
	case <-c.ctx.Done():
		return false
	}
	if c.ctx.Err() != nil { // both were ready: Stop may have begun
		<-r.undelivered
		return false
	}
	n := len(metrics)
	r.stats.undeliveredBytes.Incr(size)
	r.stats.messagesAccepted.Incr(1)
	r.stats.metricsEmitted.Incr(int64(n))
	var called atomic.Bool
	peer := Peer{Identifier: c.peer.Identifier, Attributes: c.peer.Credential.Attributes, Remote: c.remote}
	done := func(o Outcome) {
		if called.Swap(true) {
			panic("receiver: a Sink called done twice")
		}
		r.answer(c, batch, size, o)
	}
	if rs, ok := r.sink.(ReplaySink); ok {
		var again func() []telegraf.Metric
		switch {
		case !r.keepsCopies:
		case payload != nil:
			again = replay(payload, metrics, c.tags)
		default: // not line protocol (a control outcome): one small metric, copied now
			again = copies(metrics)
		}
		rs.DeliverReplayable(peer, metrics, again, done)
	} else {
		r.sink.Deliver(peer, metrics, done)
	}
	return true
}

// replay returns the again function of ReplaySink for a message: payload
// parsed again, each point given the time it had when handed over (the
// parser gives a line without one the time of parsing), and the tags
// stamped again. It keeps payload and the points' times, not the metrics.
func replay(payload []byte, metrics []telegraf.Metric, tags map[string]string) func() []telegraf.Metric {
	times := make([]time.Time, len(metrics))
	for i, m := range metrics {
		times[i] = m.Time()
	}
	return func() []telegraf.Metric {
		p, err := newParser()
		if err != nil {
			return nil // checked in Init
		}
		again, err := p.Parse(payload)
		if err != nil || len(again) != len(times) {
			return nil // cannot happen: the same parser accepted it before
		}
		for i, m := range again {
			m.SetTime(times[i])
		}
		stamp(again, tags)
		return again
	}
}

// copies returns an again function of ReplaySink that hands out copies of
// metrics as they are now.
func copies(metrics []telegraf.Metric) func() []telegraf.Metric {
	kept := make([]telegraf.Metric, len(metrics))
	for i, m := range metrics {
		kept[i] = m.Copy()
	}
	return func() []telegraf.Metric {
		out := make([]telegraf.Metric, len(kept))
		for i, m := range kept {
			out[i] = m.Copy()
		}
		return out
	}
}

// answer gives back what a delivered message held and replies to its
// sender with the Sink's outcome.
func (r *Receiver) answer(c *conn, batch uint64, size int64, o Outcome) {
	<-r.undelivered
	r.budget.release(c, c.key, size)
	r.stats.undeliveredBytes.Incr(-size)
	switch {
	case o.Delivered:
		r.stats.messagesDelivered.Incr(1)
		c.reply(secure.Message{Type: secure.TypeAck, Batch: batch})
		return
	case o.Refusal != "":
		if _, known := r.stats.messagesRefused[o.Refusal]; !known {
			o.Refusal = RefusedOutput
		}
		reason := o.Reason
		if reason == "" {
			reason = ReasonNotDelivered
		}
		r.refuse(c, batch, o.Refusal, true, reason, errors.New(reason))
		return
	}
	r.stats.messagesUndelivered.Incr(1)
	m := secure.Message{Type: secure.TypeNack, Batch: batch, Permanent: o.Permanent, Reason: ReasonNotDelivered}
	if o.Reason != "" {
		m.Reason = truncateReason(o.Reason)
	}
	c.reply(m)
}

// stalled counts and logs (at most once a minute) a reader that waits for
// room under max_undelivered_bytes_per_channel or _per_identity.
func (r *Receiver) stalled(c *conn) {
	r.stats.byteLimitStalls.Incr(1)
	if r.stallLog.allow(time.Now(), time.Minute) {
		r.log.Warnf("Stopped reading the channel of %s until the outputs deliver what it sent: "+
			"max_undelivered_bytes_per_channel or max_undelivered_bytes_per_identity reached; "+
			"further stalls are counted in byte_limit_stalls and logged at most once a minute", c.peer.Identifier.Short())
	}
}

// refuse counts a refused message, logs the first refusal of each kind per
// sender, and answers with a nack.
func (r *Receiver) refuse(c *conn, batch uint64, kind string, permanent bool, reason string, err error) {
	r.stats.messagesRefused[kind].Incr(1)
	if r.refusals.first(c.peer.Identifier.String() + " " + kind) {
		r.log.Warnf("Refused a message from %s (%s): %v; further %s refusals for this sender are only counted",
			c.peer.Identifier.Short(), kind, err, kind)
	}
	c.reply(secure.Message{Type: secure.TypeNack, Batch: batch, Permanent: permanent, Reason: truncateReason(reason)})
}

// tagsFor returns the tags stamped on every metric of a peer. An empty
// value means the tag is removed: the credential lacks that attribute (or
// has it empty), and the sender must not supply it.
func (r *Receiver) tagsFor(p *secure.Peer) map[string]string {
	tags := make(map[string]string, 1+len(r.cfg.AttributeTags))
	for _, k := range r.cfg.AttributeTags {
		tags[k] = p.Credential.Attributes[k]
	}
	if r.cfg.IdentityTag != "" {
		tags[r.cfg.IdentityTag] = p.Identifier.String()
	}
	return tags
}

// stamp sets (or removes, for an empty value) tags on every metric,
// replacing what the sender wrote. It returns how many metrics carried one
// of those tags with another value (a forged identity or attribute), and
// the name of such a tag.
func stamp(metrics []telegraf.Metric, tags map[string]string) (forged int, tag string) {
	for _, m := range metrics {
		wrong := ""
		for k, v := range tags {
			if sent, ok := m.GetTag(k); ok && sent != v && (wrong == "" || k < wrong) {
				wrong = k // the first in name order, for a stable log line
			}
			if v == "" {
				m.RemoveTag(k)
			} else {
				m.AddTag(k, v)
			}
		}
		if wrong != "" {
			forged, tag = forged+1, wrong
		}
	}
	return forged, tag
}

// truncateReason makes s a valid nack reason: UTF-8 of at most
// secure.MaxReason bytes.
func truncateReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= secure.MaxReason {
		return s
	}
	s = s[:secure.MaxReason]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
