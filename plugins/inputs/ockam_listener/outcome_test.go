package ockam_listener

import (
	"strings"
	"testing"

	"github.com/influxdata/telegraf"
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
	c := p.device(nil).dial(t, l.ln.Addr().String())

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
