package ockam_listener

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/receiver"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestAttackPinMemory (docs/SECURITY.md, W14): one device sends 200
// messages of 4 MiB while the outputs deliver nothing. Before the fix the
// listener emitted all of them (max_undelivered_messages is 1000): about
// 900 MiB of heap for one channel. Now it stops reading the channel once
// the device's undelivered bytes reach max_undelivered_bytes_per_identity,
// and heap growth stays under that bound plus the one payload waiting for
// room and the sender's own. Once the outputs deliver, every message is
// acked: nothing is lost.
func TestAttackPinMemory(t *testing.T) {
	const (
		bound    = 32 << 20
		messages = 200
	)
	p := newPKI(t)
	l := p.listener()
	l.Log = &recordLog{}
	l.MaxUndeliveredBytesPerChannel = config.Size(bound)
	l.MaxUndeliveredBytesPerIdentity = config.Size(bound)
	out, addr := start(t, l)
	c := p.device(nil).dial(t, addr)

	// 4 MiB of line protocol: 69 points of a 60,000-byte string field.
	line := `big,host=a s="` + strings.Repeat("x", 60000) + `" 1700000000000000000` + "\n"
	payload := []byte(strings.Repeat(line, (4<<20)/len(line)))
	require.LessOrEqual(t, len(payload), int(l.MaxReceivedMessageSize))
	// The stamped tags are ockam_identity and the attribute tags; under an
	// accumulator without DeliveryOutcome (Telegraf's, this test's), the
	// copy kept to emit a message again counts too.
	estimate := 2 * receiver.SizeEstimate(payload, 1+len(l.AttributeTags))
	require.Less(t, estimate, int64(bound)/2, "several messages fit under the bound")

	before := heapInUse()
	sent := make(chan error, 1)
	go func() {
		for i := range messages {
			if err := c.ch.Send(secure.Message{Type: secure.TypeData, Batch: uint64(i + 1), Payload: payload}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// The reader waits for room: the outputs hold what fits under the bound.
	// (Without a bound, all messages are emitted.)
	require.Eventually(t, func() bool {
		return l.stats.byteLimitStalls.Get() >= 1 || l.stats.messagesAccepted.Get() == messages
	}, 120*time.Second, time.Millisecond)
	grown := int64(heapInUse()) - int64(before)
	emitted := l.stats.messagesAccepted.Get()
	held := l.stats.undeliveredBytes.Get()
	t.Logf("figures: %d messages of %d bytes (estimate %d) emitted before the reader stopped; "+
		"%d bytes estimated undelivered, heap grew by %.1f MiB (bound %d MiB)",
		emitted, len(payload), estimate, held, float64(grown)/(1<<20), bound>>20)
	// Beyond the bound: the payload the reader holds while it waits, and the
	// one the sender is writing (Send copies it into frames as it goes).
	require.Less(t, grown, int64(bound+2*len(payload)), "heap growth")
	require.Equal(t, int64(bound/estimate), emitted, "messages emitted under the bound")
	require.LessOrEqual(t, held, int64(bound))

	// The outputs deliver what they hold: each message is acked, in order,
	// and the reader goes on with the next ones. (The rest would take
	// minutes under -race: the parser is the slow part.)
	perMessage := len(payload) / len(line)
	for range emitted {
		out.acceptWithin(perMessage, 120*time.Second)
	}
	for i := range emitted {
		c.requireAck(uint64(i + 1))
	}
	out.acceptWithin(perMessage, 120*time.Second)
	c.requireAck(uint64(emitted + 1))
	// 2×emitted+1 emitted in all, and the reader waits again, the bound full.
	// (Parsing 4 MiB takes about a second under -race: wait generously.)
	require.Eventually(t, func() bool {
		return l.stats.messagesAccepted.Get() == 2*emitted+1 && l.stats.undeliveredBytes.Get() == emitted*estimate
	}, 120*time.Second, time.Millisecond)
	requireStat(t, l.stats.messagesAccepted, 2*emitted+1)
	// Stop: what was not acked stays with the sender, which sends it again.
	l.Stop()
	require.Error(t, <-sent)
	c.requireNoReply(0)
}

// acceptWithin is outputs.accept with a deadline of d.
func (o *outputs) acceptWithin(n int, d time.Duration) {
	o.t.Helper()
	require.Eventually(o.t, func() bool { return len(o.acc.GetTelegrafMetrics()) >= o.taken+n }, d, time.Millisecond)
	o.accept(n)
}

// heapInUse returns the bytes of live heap objects after two collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
