package ockam_listener

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/models"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// outcomeInfo is a DeliveryInfo that also implements DeliveryOutcome.
type outcomeInfo struct {
	telegraf.DeliveryInfo
	permanent bool
	reason    string
}

func (o outcomeInfo) Permanent() bool { return o.permanent }
func (o outcomeInfo) Reason() string  { return o.reason }

var _ DeliveryOutcome = outcomeInfo{}

// outcomeAccumulator is testutil.Accumulator whose delivery results pass
// through decorate on their way to the listener, as ockamd's accumulator
// reports its own.
type outcomeAccumulator struct {
	*testutil.Accumulator
	decorate func(telegraf.DeliveryInfo) telegraf.DeliveryInfo
	out      chan telegraf.DeliveryInfo
	done     chan struct{}
}

func (a *outcomeAccumulator) WithTracking(n int) telegraf.TrackingAccumulator {
	in := a.Accumulator.WithTracking(n).Delivered()
	a.out = make(chan telegraf.DeliveryInfo, n)
	go func() {
		for {
			select {
			case info := <-in:
				a.out <- a.decorate(info)
			case <-a.done:
				return
			}
		}
	}()
	return a
}

func (a *outcomeAccumulator) Delivered() <-chan telegraf.DeliveryInfo { return a.out }

func TestDeliveryOutcome(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	require.NoError(t, l.Init())
	// Batch 1's group is the first one: its result says "permanent"; any
	// other rejection is transient, with a reason of its own or none.
	long := strings.Repeat("x", secure.MaxReason+10)
	acc := &outcomeAccumulator{Accumulator: &testutil.Accumulator{}, done: make(chan struct{})}
	n := 0
	acc.decorate = func(info telegraf.DeliveryInfo) telegraf.DeliveryInfo {
		n++
		switch n {
		case 1:
			return outcomeInfo{info, true, "influxdb 400: partial write: field type conflict"}
		case 2:
			return outcomeInfo{info, false, "influxdb unreachable"}
		case 3:
			return outcomeInfo{info, false, ""}
		case 4:
			return outcomeInfo{info, true, long}
		}
		return outcomeInfo{info, true, "ignored: the group was delivered"}
	}
	require.NoError(t, l.Start(acc))
	t.Cleanup(func() { l.Stop(); close(acc.done) })
	out := &outputs{t: t, acc: acc.Accumulator}
	c := p.device(nil).dial(t, l.receiver.Addr().String())

	c.send(1, "cpu usage=1 1700000000000000000\n")
	out.take(1)[0].Reject()
	c.requireNack(1, true, "influxdb 400: partial write: field type conflict")

	c.send(2, "cpu usage=1 1700000000000000000\n")
	out.take(1)[0].Reject()
	c.requireNack(2, false, "influxdb unreachable")

	c.send(3, "cpu usage=1 1700000000000000000\n")
	out.take(1)[0].Reject()
	m := c.requireNack(3, false, reasonNotDelivered)
	require.Equal(t, reasonNotDelivered, m.Reason, "an empty reason falls back to %q", reasonNotDelivered)

	c.send(4, "cpu usage=1 1700000000000000000\n")
	out.take(1)[0].Reject()
	m = c.requireNack(4, true, "xxx")
	require.Len(t, m.Reason, secure.MaxReason)

	// A delivered group is acked whatever its outcome says.
	c.send(5, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	c.requireAck(5)

	require.Equal(t, int64(4), l.stats.messagesUndelivered.Get())
	require.Equal(t, int64(1), l.stats.messagesDelivered.Get())
}

// TestUndeliveredWarning: Telegraf tells the listener only "not delivered"
// (a missing database behind outputs.influxdb_v2 is a 404 that drops the
// batch; a full buffer evicts it). The device gets a transient nack that
// sends its operator to the gateway, and the gateway logs, rate-limited,
// what devices are waiting for and where to look. Before, the nack said
// only "not delivered" and the listener logged nothing.
func TestUndeliveredWarning(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l.Log = log
	out, addr := start(t, l)
	d := p.device(nil)
	c := d.dial(t, addr)

	// Evicted from a full output buffer: transient, with no probe.
	c.send(1, "cpu usage=1 1700000000000000000\n")
	ms := out.take(1)
	models.AgentMetricsDropped.Incr(1)
	ms[0].Reject()
	m := c.requireNack(1, false, reasonNotDelivered)
	require.Equal(t, "not delivered: the gateway's outputs did not accept it (the gateway's log has the output's error)", m.Reason)

	want := "The outputs did not deliver 1 messages from 1 senders (the last from " + d.id.Identifier().Short() +
		") since the last such warning; the senders keep them and retry. See the outputs' errors above (a missing " +
		"database or bucket gives 404 Not Found); this warning is logged at most once a minute"
	require.Eventually(t, func() bool { return len(log.Warnings()) > 0 }, wait, time.Millisecond)
	require.Equal(t, []string{want}, warningTexts(log))
}

// warningTexts returns the text of each warning log.
func warningTexts(log *testutil.CaptureLogger) []string {
	var texts []string
	for _, m := range log.Messages() {
		if m.Level == testutil.LevelWarn {
			texts = append(texts, m.Text)
		}
	}
	return texts
}

// TestUndeliveredLogLimit: one warning per period, which counts every
// message and sender since the last one; the senders kept are bounded.
func TestUndeliveredLogLimit(t *testing.T) {
	var u undeliveredLog
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type result struct {
		n       int64
		senders int
		warn    bool
	}
	add := func(sender string, at time.Duration) result {
		n, s, w := u.add(sender, t0.Add(at), time.Minute)
		return result{n, s, w}
	}
	require.Equal(t, result{1, 1, true}, add("a", 0), "the first warns at once")
	require.Equal(t, result{}, add("a", time.Second))
	require.Equal(t, result{}, add("b", 30*time.Second))
	require.Equal(t, result{}, add("a", time.Minute-time.Nanosecond))
	require.Equal(t, result{4, 3, true}, add("c", time.Minute), "3 held back + this one, from a, b and c")
	require.Equal(t, result{}, add("a", time.Minute+time.Second))
	require.Equal(t, result{2, 1, true}, add("a", 3*time.Minute))

	for i := range maxOnce + 10 {
		require.Equal(t, result{}, add(fmt.Sprint(i), 3*time.Minute+time.Second))
	}
	require.Equal(t, result{maxOnce + 11, maxOnce, true}, add("x", 5*time.Minute), "senders are bounded; messages are counted")
}
