package ockam

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

func TestSendResult(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, log := f.newOutput(t, l.addr(), func(o *Output) { o.MaxMessageSize = 200 })
	require.NoError(t, o.Connect())

	// The message that holds h0 is refused; a line too long for any
	// listener is refused before sending; the rest is acked.
	l.setReply(func(m secure.Message) reply {
		if bytes.Contains(m.Payload, []byte("host=h0 ")) {
			return replyNackPermanent
		}
		return replyAck
	})
	huge := metric.New("huge", nil, map[string]any{"data": strings.Repeat("y", secure.DefaultMaxMessageSize)}, time.Unix(1700000000, 0))
	ms := append(testMetrics(6), huge)
	res, err := o.Send(context.Background(), ms)
	require.NoError(t, err)
	refusedByListener := len(parseMessages(t, l.messages()[:1]))
	require.Len(t, res.Refused, 2)
	require.Regexp(t, `^metric "huge": its line of \d+ bytes is larger than 4194304, the most a listener accepts$`,
		res.Refused[0].Reason)
	res.Refused[0].Reason = ""
	require.Equal(t, sender.Result{
		Acked: 6 - refusedByListener,
		Refused: []sender.Refusal{
			{Metrics: 1},
			{Metrics: refusedByListener, Reason: "refused by policy", Listener: true},
		},
	}, res)
	require.Equal(t, 7, res.Acked+res.RefusedMetrics())
	require.Len(t, log.Errors(), 2, "each refusal is logged, as by Write")

	res, err = o.Send(context.Background(), nil)
	require.NoError(t, err)
	require.Zero(t, res)
}

func TestSendRetryableErrors(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.MaxMessageSize = 100 })
	require.NoError(t, o.Connect())

	// A transient nack after an ack: an error, and the ack is counted.
	l.setReply(func(m secure.Message) reply {
		if bytes.Contains(m.Payload, []byte("host=h0 ")) {
			return replyAck
		}
		return replyNackTransient
	})
	res, err := o.Send(context.Background(), testMetrics(2))
	require.ErrorContains(t, err, "output buffer full")
	require.Equal(t, 1, res.Acked)

	// ctx ends the wait for answers.
	l.setReply(func(secure.Message) reply { return replySilent })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = o.Send(ctx, testMetrics(1))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), time.Duration(o.Timeout))

	// An ended ctx sends nothing. Messages of one channel arrive in order:
	// once a later message is acked, the listener has read everything sent
	// before it, the message of the Send that ctx ended included (which may
	// still be on its way when that Send returns).
	l.setReply(func(secure.Message) reply { return replyAck })
	res, err = o.Send(context.Background(), testMetrics(1))
	require.NoError(t, err)
	require.Equal(t, 1, res.Acked)
	before := len(l.messages())
	_, err = o.Send(ctx, testMetrics(1))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	res, err = o.Send(context.Background(), testMetrics(1))
	require.NoError(t, err)
	require.Equal(t, 1, res.Acked)
	require.Len(t, l.messages(), before+1, "only the message of the Send after it")
}

func TestSendConcurrent(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.MaxMessageSize = 300 })
	require.NoError(t, o.Connect())

	const senders = 8
	var wg sync.WaitGroup
	var all []telegraf.Metric
	results := make([]sender.Result, senders)
	errs := make([]error, senders)
	for i := range senders {
		ms := namedMetrics(string(rune('a'+i)), 20)
		all = append(all, ms...)
		wg.Go(func() { results[i], errs[i] = o.Send(context.Background(), ms) })
	}
	wg.Wait()
	for i := range senders {
		require.NoError(t, errs[i])
		require.Equal(t, sender.Result{Acked: 20}, results[i])
	}
	requireArrivedOnce(t, l, all)
	seen := map[uint64]bool{}
	for _, m := range l.messages() {
		require.False(t, seen[m.Batch], "batch %d used twice", m.Batch)
		seen[m.Batch] = true
	}
	require.Len(t, l.handshakeLog(), 1, "one channel for every sender")
}

func TestPeer(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.Timeout = config.Duration(time.Second) })
	require.NoError(t, o.Connect())
	require.Eventually(t, func() bool {
		id, err := o.Peer()
		return err == nil && id == f.listener.Identifier()
	}, 30*time.Second, 10*time.Millisecond)

	l.stop()
	require.Eventually(t, func() bool {
		_, err := o.Peer()
		return err != nil && !errors.Is(err, context.Canceled)
	}, 30*time.Second, 10*time.Millisecond)
}
