package ockam

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/serializers/influx"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Write sends metrics and waits until the listener answered every message.
// It returns nil when each message was acknowledged or refused permanently
// (those metrics are logged and dropped), and an error, so that Telegraf
// keeps the batch and retries it, in every other case: no channel, a
// transient refusal, no answer within timeout, or a lost connection.
func (o *Ockam) Write(metrics []telegraf.Metric) error {
	_, err := o.Send(context.Background(), metrics)
	return err
}

// awaitReplies collects the answers to the messages in pending into res. The
// timeout starts again with every answer: a slow listener that makes
// progress is not cut off in the middle of a large batch.
func (o *Ockam) awaitReplies(ctx context.Context, l *link, pending map[uint64]*message,
	replies <-chan secure.Message, res *Result) error {
	timer := time.NewTimer(o.timeout)
	defer timer.Stop()
	var retry error
	for len(pending) > 0 {
		select {
		case m := <-replies:
			if err := o.handleReply(l, pending, m, res); err != nil && retry == nil {
				retry = err
			}
			timer.Reset(o.timeout)
		case <-l.done:
			// Answers the reader queued before the link ended still count.
			for drained := false; !drained; {
				select {
				case m := <-replies:
					if err := o.handleReply(l, pending, m, res); err != nil && retry == nil {
						retry = err
					}
				default:
					drained = true
				}
			}
			if len(pending) == 0 || retry != nil {
				return retry
			}
			return fmt.Errorf("channel to %s lost with %d messages unanswered: %w", o.target, len(pending), l.cause())
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for %d answers from %s: %w", len(pending), o.target, ctx.Err())
		case <-timer.C:
			l.shutdown("no acknowledgement within timeout", o.timeout)
			return fmt.Errorf("no answer from %s within %v to %d of the messages sent; channel closed",
				o.target, o.timeout, len(pending))
		}
	}
	return retry
}

// handleReply accounts for one ack or nack in res. It returns an error for a
// transient nack.
func (o *Ockam) handleReply(l *link, pending map[uint64]*message, m secure.Message, res *Result) error {
	msg, ok := pending[m.Batch]
	if !ok {
		return nil // the reader only routes batches we registered
	}
	delete(pending, m.Batch)
	switch {
	case m.Type == secure.TypeAck:
		o.stats.acks.Incr(1)
		res.Acked += msg.metrics
		return nil
	case m.Permanent:
		o.stats.nacksPermanent.Incr(1)
		res.Refused = append(res.Refused, Refusal{Metrics: msg.metrics, Reason: m.Reason, Listener: true})
		o.Log.Errorf("Listener %s refused %d metrics permanently, they will be dropped: %q",
			l.peer.Short(), msg.metrics, m.Reason)
		return nil
	}
	o.stats.nacksTransient.Incr(1)
	if strings.Contains(m.Reason, "expired") {
		// A new channel re-reads credential_path.
		o.Log.Warnf("Listener %s: %q; reconnecting with the credential in %s",
			l.peer.Short(), m.Reason, o.CredentialPath)
		l.shutdown("credential expired", o.timeout)
	}
	return fmt.Errorf("listener %s asked to retry %d metrics later: %q", l.peer.Short(), msg.metrics, m.Reason)
}

// message is one data message of a batch.
type message struct {
	payload []byte // whole lines of line protocol
	metrics int    // how many metrics (lines) it holds
}

// split serializes metrics and packs whole lines into messages of at most
// MaxMessageSize bytes; a longer line travels alone. A metric that cannot be
// serialized, or whose line no listener would accept, is logged, dropped and
// returned as refused: no retry can deliver it.
func (o *Ockam) split(metrics []telegraf.Metric) ([]message, []Refusal) {
	limit := int(o.MaxMessageSize)
	var msgs []message
	var refused []Refusal
	var cur message
	serializer := serializers.Get().(*influx.Serializer)
	defer serializers.Put(serializer)
	for i, m := range metrics {
		line, err := serializer.Serialize(m)
		if err != nil {
			o.Log.Debugf("Could not serialize metric: %v", err)
			refused = append(refused, Refusal{Metrics: 1, Reason: fmt.Sprintf("metric %q: %v", m.Name(), err)})
			continue
		}
		if len(line) > secure.DefaultMaxMessageSize {
			reason := fmt.Sprintf("its line of %d bytes is larger than %d, the most a listener accepts",
				len(line), secure.DefaultMaxMessageSize)
			o.Log.Errorf("Dropping a metric of %q: %s", m.Name(), reason)
			refused = append(refused, Refusal{Metrics: 1, Reason: fmt.Sprintf("metric %q: %s", m.Name(), reason)})
			continue
		}
		if cur.metrics > 0 && len(cur.payload)+len(line) > limit {
			msgs = append(msgs, cur)
			cur = message{}
		}
		if cur.payload == nil {
			// Room for the rest of the batch at this line's length, up to a
			// message: growing the payload line by line copied it twice over.
			cur.payload = make([]byte, 0, max(len(line), min(limit, len(line)*(len(metrics)-i))))
		}
		cur.payload = append(cur.payload, line...)
		cur.metrics++
	}
	if cur.metrics > 0 {
		msgs = append(msgs, cur)
	}
	return msgs, refused
}
