package ockam

import (
	"fmt"
	"strings"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Write sends metrics and waits until the listener answered every message.
// It returns nil when each message was acknowledged or refused permanently
// (those metrics are logged and dropped), and an error, so that Telegraf
// keeps the batch and retries it, in every other case: no channel, a
// transient refusal, no answer within timeout, or a lost connection.
func (o *Ockam) Write(metrics []telegraf.Metric) error {
	msgs := o.split(metrics)
	if len(msgs) == 0 {
		return nil
	}
	l, err := o.waitLink()
	if err != nil {
		return err
	}
	replies := make(chan secure.Message, len(msgs)) // never blocks the reader
	pending := make(map[uint64]*message, len(msgs))
	for i := range msgs {
		o.lastBatch++
		batch := o.lastBatch
		pending[batch] = &msgs[i]
		l.expect(batch, replies)
		if err := l.send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: msgs[i].payload}, o.timeout); err != nil {
			return fmt.Errorf("send to %s: %w", o.Address, err)
		}
		o.stats.messagesSent.Incr(1)
		o.stats.bytesSent.Incr(int64(len(msgs[i].payload)))
	}
	return o.awaitReplies(l, pending, replies)
}

// awaitReplies collects the answers to the messages in pending. The timeout
// starts again with every answer: a slow listener that makes progress is not
// cut off in the middle of a large batch.
func (o *Ockam) awaitReplies(l *link, pending map[uint64]*message, replies <-chan secure.Message) error {
	timer := time.NewTimer(o.timeout)
	defer timer.Stop()
	var retry error
	for len(pending) > 0 {
		select {
		case m := <-replies:
			if err := o.handleReply(l, pending, m); err != nil && retry == nil {
				retry = err
			}
			timer.Reset(o.timeout)
		case <-l.done:
			// Answers the reader queued before the link ended still count.
			for drained := false; !drained; {
				select {
				case m := <-replies:
					if err := o.handleReply(l, pending, m); err != nil && retry == nil {
						retry = err
					}
				default:
					drained = true
				}
			}
			if len(pending) == 0 || retry != nil {
				return retry
			}
			return fmt.Errorf("channel to %s lost with %d messages unanswered: %w", o.Address, len(pending), l.cause())
		case <-timer.C:
			l.shutdown("no acknowledgement within timeout", o.timeout)
			return fmt.Errorf("no answer from %s within %v to %d of the messages sent; channel closed",
				o.Address, o.timeout, len(pending))
		}
	}
	return retry
}

// handleReply accounts for one ack or nack. It returns an error for a
// transient nack.
func (o *Ockam) handleReply(l *link, pending map[uint64]*message, m secure.Message) error {
	msg, ok := pending[m.Batch]
	if !ok {
		return nil // the reader only routes batches we registered
	}
	delete(pending, m.Batch)
	switch {
	case m.Type == secure.TypeAck:
		o.stats.acks.Incr(1)
		return nil
	case m.Permanent:
		o.stats.nacksPermanent.Incr(1)
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
// serialized, or whose line no listener would accept, is logged and dropped:
// no retry can deliver it.
func (o *Ockam) split(metrics []telegraf.Metric) []message {
	limit := int(o.MaxMessageSize)
	var msgs []message
	var cur message
	for _, m := range metrics {
		line, err := o.serializer.Serialize(m)
		if err != nil {
			o.Log.Debugf("Could not serialize metric: %v", err)
			continue
		}
		if len(line) > secure.DefaultMaxMessageSize {
			o.Log.Errorf("Dropping a metric of %q: its line of %d bytes is larger than %d, the most a listener accepts",
				m.Name(), len(line), secure.DefaultMaxMessageSize)
			continue
		}
		if cur.metrics > 0 && len(cur.payload)+len(line) > limit {
			msgs = append(msgs, cur)
			cur = message{}
		}
		cur.payload = append(cur.payload, line...)
		cur.metrics++
	}
	if cur.metrics > 0 {
		msgs = append(msgs, cur)
	}
	return msgs
}
