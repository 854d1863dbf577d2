package ockam_listener

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/models"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Nack reasons: the text of each nack the listener sends. Senders act on
// Message.Permanent; the text is for their logs.
const (
	reasonNotDelivered = reasonNotAccepted    // transient: an output rejected or evicted it
	reasonRevoked      = "revoked"            // permanent
	reasonExpired      = "credential expired" // transient, then the channel is closed
	reasonUnauthorized = "unauthorized"       // permanent: any other Authorize failure
	reasonBadLine      = "bad line protocol: "
	reasonPolicy       = "policy: measurement %q is not allowed"
	reasonTooLarge     = "data message larger than max_received_message_size (%d bytes)"
)

// reasonNotAccepted is the transient nack of a message that Telegraf
// reported not delivered: an output failed (Telegraf does not say why) or a
// full buffer evicted it. It sends the device's operator to the gateway's log.
const reasonNotAccepted = "not delivered: the gateway's outputs did not accept it (the gateway's log has the output's error)"

// Refusal kinds: the reason tag of messages_refused.
const (
	refusedRevoked      = "revoked"
	refusedExpired      = "expired"
	refusedUnauthorized = "unauthorized"
	refusedParse        = "parse"
	refusedPolicy       = "policy"
	// A data message over max_received_message_size.
	refusedTooLarge = "too_large"
	// A field named like a tag the listener sets (check.go).
	refusedReservedField = "reserved_field"
	// A point InfluxDB would refuse for good (check.go).
	refusedInvalidPoint = "invalid_point"
	// Not delivered twice, without an eviction (outcome.go).
	refusedOutput = "output"
)

// handle checks one data message and emits it, or refuses it with a nack.
// It returns ok false when the channel must be closed, with the reason to
// send.
func (l *Listener) handle(c *conn, m secure.Message) (closeReason string, ok bool) {
	c.inflight.Add(1)
	// 1. the sender's credential is still valid and not revoked
	if err := l.verifier.Authorize(c.peer, l.now()); err != nil {
		switch {
		case errors.Is(err, secure.ErrRevoked):
			// Nothing from this identity is accepted again: close the
			// channel, as for an expired credential.
			l.refuse(c, m.Batch, refusedRevoked, true, reasonRevoked, err)
			return reasonRevoked, false
		case errors.Is(err, secure.ErrExpired):
			// The sender reloads its credential and opens a new channel.
			l.refuse(c, m.Batch, refusedExpired, false, reasonExpired, err)
			return reasonExpired, false
		default:
			l.refuse(c, m.Batch, refusedUnauthorized, true, reasonUnauthorized, err)
		}
		return "", true
	}
	// 2. not over max_received_message_size (its payload was discarded)
	if m.TooLarge {
		err := fmt.Errorf(reasonTooLarge, int64(l.MaxReceivedMessageSize))
		l.refuse(c, m.Batch, refusedTooLarge, true, err.Error(), err)
		return "", true
	}
	// 3. room under max_undelivered_bytes_per_channel and _per_identity:
	// wait for it with the payload only, before parsing
	size := sizeEstimate(m.Payload, len(c.tags))
	if l.resend {
		size *= 2 // and the copy kept to send it again (outcome.go)
	}
	if !l.budget.acquire(c.ctx, c, c.key, size, func() { l.stalled(c) }) {
		return "", false // shut down meanwhile
	}
	defer func() {
		if size > 0 { // not handed over to a pending message
			l.budget.release(c, c.key, size)
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
		l.refuse(c, m.Batch, refusedParse, true, reasonBadLine+err.Error(), err)
		return "", true
	}
	// 5. the policy allows every measurement
	for _, metric := range metrics {
		if name := metric.Name(); !c.grant.allows(name) {
			err := fmt.Errorf(reasonPolicy, name)
			l.refuse(c, m.Batch, refusedPolicy, true, err.Error(), err)
			return "", true
		}
	}
	// 6. no field poses as a verified tag, and InfluxDB can store every point
	if r := checkPoints(metrics, l.reserved, c.tags); r != nil {
		l.refuse(c, m.Batch, r.kind, true, r.reason, errors.New(r.reason))
		return "", true
	}
	// 7. the verified identity and attributes replace the sender's tags
	if forged, tag := stamp(metrics, c.tags); forged > 0 {
		l.stats.forgedTags.Incr(int64(forged))
		if l.refusals.first(c.peer.Identifier.String() + " forged") {
			l.Log.Warnf("Replaced the %q tag that %s wrote with its verified value (%d metrics of the message); "+
				"further forged tags from this sender are only counted in forged_tags", tag, c.peer.Identifier.Short(), forged)
		}
	}
	// 8. emit, and answer when the outputs are done with it
	if len(metrics) == 0 {
		l.stats.messagesAccepted.Incr(1)
		c.reply(secure.Message{Type: secure.TypeAck, Batch: m.Batch})
		return "", true
	}
	if !l.emit(c, pendingMessage{conn: c, batch: m.Batch, size: size}, metrics) {
		return "", false
	}
	size = 0 // released when the delivery result comes
	return "", true
}

// emit adds the metrics of one message as a tracking group and records the
// message as pending. It waits for a free max_undelivered_messages slot,
// and returns false if the connection is shut down meanwhile.
func (l *Listener) emit(c *conn, p pendingMessage, metrics []telegraf.Metric) bool {
	select {
	case l.undelivered <- struct{}{}:
	case <-c.ctx.Done():
		return false
	}
	if c.ctx.Err() != nil { // both were ready: Stop may have begun
		<-l.undelivered
		return false
	}
	n := len(metrics)
	// An empty group (or one whose metrics are all filtered out) reports its
	// delivery inside AddTrackingMetricGroup: the delivery loop waits on mu
	// until the message is in pending.
	if l.resend {
		p.copies = make([]telegraf.Metric, len(metrics))
		for i, m := range metrics {
			p.copies[i] = m.Copy()
		}
		p.evicted = models.AgentMetricsDropped.Get()
		p.written = models.AgentMetricsWritten.Get()
	}
	l.mu.Lock()
	id := l.acc.AddTrackingMetricGroup(metrics)
	l.pending[id] = p
	l.mu.Unlock()
	l.stats.undeliveredBytes.Incr(p.size)
	l.stats.messagesAccepted.Incr(1)
	l.stats.metricsEmitted.Incr(int64(n))
	return true
}

// stalled counts and logs (at most once a minute) a reader that waits for
// room under max_undelivered_bytes_per_channel or _per_identity.
func (l *Listener) stalled(c *conn) {
	l.stats.byteLimitStalls.Incr(1)
	if l.stallLog.allow(time.Now(), time.Minute) {
		l.Log.Warnf("Stopped reading the channel of %s until the outputs deliver what it sent: "+
			"max_undelivered_bytes_per_channel or max_undelivered_bytes_per_identity reached; "+
			"further stalls are counted in byte_limit_stalls and logged at most once a minute", c.peer.Identifier.Short())
	}
}

// refuse counts a refused message, logs the first refusal of each kind per
// sender, and answers with a nack.
func (l *Listener) refuse(c *conn, batch uint64, kind string, permanent bool, reason string, err error) {
	l.stats.messagesRefused[kind].Incr(1)
	if l.refusals.first(c.peer.Identifier.String() + " " + kind) {
		l.Log.Warnf("Refused a message from %s (%s): %v; further %s refusals for this sender are only counted",
			c.peer.Identifier.Short(), kind, err, kind)
	}
	c.reply(secure.Message{Type: secure.TypeNack, Batch: batch, Permanent: permanent, Reason: truncateReason(reason)})
}

// tagsFor returns the tags stamped on every metric of a peer. An empty
// value means the tag is removed: the credential lacks that attribute (or
// has it empty), and the sender must not supply it.
func (l *Listener) tagsFor(p *secure.Peer) map[string]string {
	tags := make(map[string]string, 1+len(l.AttributeTags))
	for _, k := range l.AttributeTags {
		tags[k] = p.Credential.Attributes[k]
	}
	if l.IdentityTag != "" {
		tags[l.IdentityTag] = p.Identifier.String()
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
