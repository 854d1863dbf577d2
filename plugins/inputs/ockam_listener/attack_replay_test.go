package ockam_listener

import (
	"fmt"
	"slices"
	"testing"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/testproxy"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// victimLine is what the victim device of the path attacks sends.
func victimLine(seq int) string {
	return fmt.Sprintf("victim,seq=%d value=1 1700000000000000000\n", seq)
}

// requireVictim checks that the next metric emitted is the victim's
// message seq, once.
func (a *arena) requireVictim(d *device, seq int) {
	a.t.Helper()
	testutil.RequireMetricsEqual(a.t, []telegraf.Metric{
		metric.New("victim", map[string]string{"seq": fmt.Sprint(seq), "ockam_identity": d.id.Identifier().String()},
			map[string]any{"value": 1.0}, ts),
	}, a.out.accept(1))
}

// TestAttackReplay (docs/SECURITY.md, attack 2): an attacker on the path
// records a device's whole session, then replays it into a new connection,
// replays its transport frames alone, after a handshake of its own, and
// into the device's live connection (a frame twice, an old frame later).
// Every replayed frame fails authentication: nothing is emitted twice, and
// a replay into a live channel closes it.
func TestAttackReplay(t *testing.T) {
	a := newArena(t)
	px := testproxy.Start(t, a.addr)
	victim := a.p.fileDevice("victim", map[string]string{"role": "sensor"})

	// The recorded session: two acked messages, then a close.
	c := victim.dial(t, px.Addr())
	for seq := 1; seq <= 2; seq++ {
		c.send(uint64(seq), victimLine(seq))
		a.requireVictim(victim, seq)
		c.requireAck(uint64(seq))
	}
	c.ch.Close("done")
	rec := px.Conns()[0]
	<-rec.Done()
	up := rec.Frames(testproxy.ToTarget) // message 1, message 3, data 1, data 2, close
	require.Len(t, up, 5)
	a.expect(map[string]int64{"handshakes_ok": 1})

	// 1. The whole session into a new connection: message 1 is answered
	// with a fresh message 2, so the recorded message 3 fails to decrypt.
	nc := rawConn(t, a.addr)
	_, err := nc.Write(slices.Concat(up...))
	require.NoError(t, err)
	requireClosedByPeer(t, nc, wait)
	a.expect(map[string]int64{"handshakes_failed/decrypt": 1})
	a.requireLog(testutil.LevelDebug, "Handshake from "+nc.LocalAddr().String()+" failed (decrypt)", "message 3")
	a.deliver()

	// 2. The transport frames alone: the first one is taken for a
	// message 1, whose cleartext payload is not the protocol's name.
	nc = rawConn(t, a.addr)
	_, err = nc.Write(slices.Concat(up[2:]...))
	require.NoError(t, err)
	requireClosedByPeer(t, nc, wait)
	a.expect(map[string]int64{"handshakes_failed/unsupported_version": 1})
	a.requireLog(testutil.LevelInfo, "Handshake from "+nc.LocalAddr().String()+" failed (unsupported_version)",
		"peer speaks")
	a.deliver()

	// 3. The transport frames after a handshake of the attacker's own (a
	// device with a valid credential): they were sealed under other keys.
	insider := a.p.fileDevice("insider", map[string]string{"role": "sensor"})
	nc = rawConn(t, a.addr)
	_, err = insider.handshakeOver(nc, secure.Identifier{})
	require.NoError(t, err)
	_, err = nc.Write(slices.Concat(up[2:]...))
	require.NoError(t, err)
	requireClosedByPeer(t, nc, wait)
	a.expect(map[string]int64{"handshakes_ok": 1, "channels_failed/decrypt": 1})
	a.requireLog(testutil.LevelInfo, "Channel from "+nc.LocalAddr().String(), "failed (decrypt)",
		"message authentication failed")
	a.deliver()

	// 4. Into the live connection, the first data frame twice: the first
	// copy is the device's message, emitted once; the second closes the
	// channel (an ack of the first may or may not make it out before the
	// close, as the listener delivers and reads on different goroutines).
	px.SetTamper(func(dir testproxy.Direction, i int, f []byte) [][]byte {
		if dir == testproxy.ToTarget && i == 2 {
			return [][]byte{f, slices.Clone(f)}
		}
		return [][]byte{f}
	})
	c = victim.dial(t, px.Addr())
	c.send(1, victimLine(1))
	a.requireVictim(victim, 1)
	require.Error(t, c.requireClosedAfterAck(1))
	a.expect(map[string]int64{"handshakes_ok": 1, "channels_failed/decrypt": 1})
	a.deliver()

	// 5. Into the live connection, an old data frame in front of a newer
	// one: the newer message is never emitted.
	px.SetTamper(replayOld())
	c = victim.dial(t, px.Addr())
	c.send(1, victimLine(1))
	a.requireVictim(victim, 1)
	c.requireAck(1)
	c.send(2, victimLine(2))
	require.Error(t, c.requireClosed())
	a.expect(map[string]int64{"handshakes_ok": 1, "channels_failed/decrypt": 1})
	a.requireLogCount(3, "failed (decrypt)", "Channel from")
	a.finish()
}

// replayOld returns a Tamper that sends the first data frame of a
// connection again in front of the second.
func replayOld() testproxy.Tamper {
	var first []byte // frames of one direction arrive on one goroutine
	return func(dir testproxy.Direction, i int, f []byte) [][]byte {
		if dir != testproxy.ToTarget {
			return [][]byte{f}
		}
		switch i {
		case 2:
			first = slices.Clone(f)
		case 3:
			return [][]byte{first, f}
		}
		return [][]byte{f}
	}
}
