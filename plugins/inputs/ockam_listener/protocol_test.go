package ockam_listener

import (
	"testing"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// The rules of docs/PROTOCOL.md, section 9, as the listener applies them to
// what a device sends.

// TestProtocolDeviceSendsAnswer: a device may send data, rekey and close; an
// ack or a nack from it is a protocol error that closes its channel, as a
// data message from the listener closes the device's.
func TestProtocolDeviceSendsAnswer(t *testing.T) {
	a := newArena(t)
	insider := a.p.fileDevice("insider", map[string]string{"role": "sensor"})
	for _, m := range []secure.Message{
		{Type: secure.TypeAck, Batch: 1},
		{Type: secure.TypeNack, Batch: 1, Permanent: true, Reason: "no"},
	} {
		c := insider.dial(t, a.addr)
		require.NoError(t, c.ch.Send(m))
		err := c.requireClosed()
		require.ErrorIs(t, err, secure.ErrClosed)
		require.ErrorContains(t, err, `"protocol error"`)
		a.expect(map[string]int64{"handshakes_ok": 1, "channels_failed/malformed": 1})
		a.requireLog(testutil.LevelInfo, "failed (malformed)", m.Type.String()+" message from a device")
		a.deliver()
	}
	a.finish()
}

// TestProtocolEmptyDataMessage: a data message without payload is acked at
// once; nothing is emitted.
func TestProtocolEmptyDataMessage(t *testing.T) {
	a := newArena(t)
	c := a.p.fileDevice("empty", map[string]string{"role": "sensor"}).dial(t, a.addr)
	a.expect(map[string]int64{"handshakes_ok": 1})
	c.send(7, "")
	c.requireAck(7)
	a.out.requireNone()
	a.finish()
}

// TestProtocolDeviceClose: after a device's close, the listener answers
// with a close of its own, and a message still awaiting delivery gets no
// answer: the device counts it as not written.
func TestProtocolDeviceClose(t *testing.T) {
	a := newArena(t)
	c := a.p.fileDevice("closing", map[string]string{"role": "sensor"}).dial(t, a.addr)
	a.expect(map[string]int64{"handshakes_ok": 1})
	c.send(1, "closing value=1 1700000000000000000\n")
	require.Len(t, a.out.take(1), 1) // emitted, not yet delivered
	require.NoError(t, c.ch.Send(secure.Message{Type: secure.TypeClose, Reason: "device stopping"}))
	err := c.requireClosed()
	require.ErrorIs(t, err, secure.ErrClosed)
	a.requireLog(testutil.LevelDebug, "device stopping")
	a.finish()
}
