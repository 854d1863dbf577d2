package ockam

import (
	"context"
	"fmt"
	"iter"
	"sync"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/serializers/influx"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

// serializers hold line-protocol serializers with the settings that Init
// checks on o.serializer (Telegraf's defaults). A serializer is not safe for
// concurrent use, and Send may be called from several goroutines.
var serializers = sync.Pool{New: func() any {
	s := &influx.Serializer{}
	_ = s.Init() // it only allocates
	return s
}}

// Write sends metrics and waits until the listener answered every message.
// It returns nil when each message was acknowledged or refused permanently
// (those metrics are logged and dropped), and an error, so that Telegraf
// keeps the batch and retries it, in every other case: no channel, a
// transient refusal, no answer within timeout, or a lost connection.
func (o *Output) Write(metrics []telegraf.Metric) error {
	_, err := o.Send(context.Background(), metrics)
	return err
}

// Send serializes metrics and sends them with sender.Sender.Send, whose
// contract it has: an error means "send them all again later"; otherwise
// each metric was acknowledged or refused for good (a metric that cannot
// be serialized is refused here). Unlike Write, it may be called from
// several goroutines at once. Connect must have been called.
func (o *Output) Send(ctx context.Context, metrics []telegraf.Metric) (sender.Result, error) {
	if !o.connected {
		return sender.Result{}, fmt.Errorf("not connected: Connect was not called")
	}
	var refused []sender.Refusal
	res, err := o.sender.SendSeq(ctx, o.serialize(metrics, &refused))
	res.Refused = append(refused, res.Refused...)
	return res, err
}

// Peer returns the identifier of the listener that the current channel is
// open to or, when there is no channel, an error saying why: the last dial
// failed, the last channel ended, or the first dial is under way. Call it
// after Connect; it is safe for concurrent use.
func (o *Output) Peer() (secure.Identifier, error) { return o.sender.Peer() }

// serialize returns metrics as line protocol, one payload per metric,
// serialized as the sender asks for them (so that the first messages of a
// batch leave while the rest is serialized), all in one buffer (the sender
// packs adjacent payloads without copying). A metric that cannot be
// serialized is logged, dropped and added to refused: no retry can deliver
// it.
func (o *Output) serialize(metrics []telegraf.Metric, refused *[]sender.Refusal) iter.Seq[sender.Payload] {
	return func(yield func(sender.Payload) bool) {
		serializer := serializers.Get().(*influx.Serializer)
		defer serializers.Put(serializer)
		var buf []byte
		for _, m := range metrics {
			line, err := serializer.Serialize(m)
			if err != nil {
				o.Log.Debugf("Could not serialize metric: %v", err)
				*refused = append(*refused, sender.Refusal{Metrics: 1, Reason: fmt.Sprintf("metric %q: %v", m.Name(), err)})
				continue
			}
			if buf == nil {
				// Room for the batch at this line's length: growing the
				// buffer line by line copies it twice over (and a payload
				// in a new array is not adjacent to the one before).
				buf = make([]byte, 0, len(line)*len(metrics))
			}
			start := len(buf)
			buf = append(buf, line...)
			if !yield(sender.Payload{Lines: buf[start:], Metrics: 1}) {
				return
			}
		}
	}
}
