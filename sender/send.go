package ockam

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/serializers/influx"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// serializers hold line-protocol serializers with the settings that Init
// checks on o.serializer (Telegraf's defaults). A serializer is not safe for
// concurrent use, and Send may be called from several goroutines.
var serializers = sync.Pool{New: func() any {
	s := &influx.Serializer{}
	_ = s.Init() // it only allocates
	return s
}}

// Result is what became of the metrics of one Send that returned no error:
// each metric was either acknowledged or refused for good.
type Result struct {
	// Acked is how many metrics the listener acknowledged: it delivered them.
	Acked int
	// Refused are the metrics that no retry can deliver, in the order they
	// were found.
	Refused []Refusal
}

// Refusal is a part of a Send that was refused for good, either by the
// listener (a permanent nack: its policy, a revoked credential, line
// protocol it cannot parse) or by the plugin before sending (a metric that
// cannot be serialized, or whose line is larger than any listener accepts).
type Refusal struct {
	Metrics int    // how many metrics
	Reason  string // the listener's nack reason (peer text: print it with %q), or the plugin's
	// Listener is true when the listener sent the nack, false when the
	// plugin refused the metrics without sending them.
	Listener bool
}

// RefusedMetrics returns how many metrics were refused, in all.
func (r Result) RefusedMetrics() int {
	n := 0
	for _, f := range r.Refused {
		n += f.Metrics
	}
	return n
}

// Send sends metrics and waits until the listener answered every message,
// as Write does, and says what became of them. Each refusal is also logged,
// and counted in the plugin's statistics.
//
// It returns an error, with the metrics acknowledged so far in the Result,
// when the caller should send all of metrics again later: no channel, a
// transient refusal, no answer within timeout, a lost connection, or ctx
// ended. A retry may deliver again the metrics that were acknowledged (a
// duplicate, never a loss). Otherwise the error is nil, and every metric is
// either counted in Result.Acked or in Result.Refused.
//
// ctx bounds the wait for the answers; the wait for a channel is bounded by
// the timeout option alone. Unlike Write, which Telegraf calls from one
// goroutine, Send may be called from several goroutines at once: their
// messages share the channel. Connect must have been called.
func (o *Ockam) Send(ctx context.Context, metrics []telegraf.Metric) (Result, error) {
	var res Result
	msgs, refused := o.split(metrics)
	res.Refused = refused
	if len(msgs) == 0 {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	l, err := o.waitLink()
	if err != nil {
		return res, err
	}
	replies := make(chan secure.Message, len(msgs)) // never blocks the reader
	pending := make(map[uint64]*message, len(msgs))
	for i := range msgs {
		batch := o.lastBatch.Add(1)
		pending[batch] = &msgs[i]
		l.expect(batch, replies)
		if err := l.send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: msgs[i].payload}, o.timeout); err != nil {
			return res, fmt.Errorf("send to %s: %w", o.target, err)
		}
		o.stats.messagesSent.Incr(1)
		o.stats.bytesSent.Incr(int64(len(msgs[i].payload)))
	}
	err = o.awaitReplies(ctx, l, pending, replies, &res)
	return res, err
}

// Peer returns the identifier of the listener that the current channel is
// open to or, when there is no channel, an error saying why: the last dial
// failed, the last channel ended, or the first dial is under way. Call it
// after Connect; it is safe for concurrent use.
func (o *Ockam) Peer() (secure.Identifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.link != nil && !o.link.ended():
		return o.link.peer, nil
	case o.lastErr != nil:
		return secure.Identifier{}, o.lastErr
	}
	return secure.Identifier{}, errors.New("connecting")
}
