package ockam_listener

import (
	"bytes"
	"crypto/rand"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestAttackShapes (docs/SECURITY.md, attack 7): frames of the wrong size
// or shape, before the handshake (from anyone) and inside an established
// channel (from a device with a valid credential, or injected into its TCP
// stream): a length of 0, a length at its maximum followed by more than
// 65535 bytes, a frame cut short, and garbage after a valid frame. (A data
// message reassembled past max_received_message_size is refused with a
// permanent nack and the channel goes on: TestMaxReceivedMessageSize.)
func TestAttackShapes(t *testing.T) {
	const maxMessage = 64 << 10
	a := newArena(t, func(_ *pki, l *Listener) { l.MaxReceivedMessageSize = config.Size(maxMessage) })
	insider := a.p.fileDevice("insider", map[string]string{"role": "sensor"})
	garbage := make([]byte, 64)
	_, _ = rand.Read(garbage)
	huge := slices.Concat([]byte{0xff, 0xff}, bytes.Repeat([]byte{0xa5}, 65536+2))

	// Before the handshake.
	for _, tt := range []struct {
		name, reason string
		data         []byte
		log          string
	}{
		{"zero length", "malformed", []byte{0, 0}, "length 0"},
		{"length 65535 and 65538 bytes", "malformed", huge, "length 65535"},
		{"message 1 cut short", "eof", frame(message1(t))[:20], "read message 1: unexpected EOF"},
		{"garbage after a valid message 1", "decrypt", slices.Concat(frame(message1(t)), frame(garbage)), "message 3"},
	} {
		nc := rawConn(t, a.addr)
		writeAll(nc, tt.data)
		if tt.reason == "eof" {
			require.NoError(t, nc.(*net.TCPConn).CloseWrite())
		}
		requireClosedByPeer(t, nc, wait)
		a.expect(map[string]int64{"handshakes_failed/" + tt.reason: 1})
		a.requireLog(testutil.LevelDebug, "Handshake from "+nc.LocalAddr().String()+" failed ("+tt.reason+")", tt.log)
		a.deliver()
	}

	// Inside an established channel.
	line := "insider value=1 1700000000000000000\n"
	for _, tt := range []struct {
		name, reason string
		send         func(c *client, nc net.Conn)
		log          string
	}{
		{"zero length", "malformed", func(_ *client, nc net.Conn) { writeAll(nc, []byte{0, 0}) }, "zero-length frame"},
		{"length 65535 and 65538 bytes", "decrypt", func(_ *client, nc net.Conn) { writeAll(nc, huge) },
			"message authentication failed"},
		{"cut short", "truncated", func(_ *client, nc net.Conn) {
			writeAll(nc, []byte{0, 100, 1, 2, 3})
			_ = nc.(*net.TCPConn).CloseWrite()
		}, "unexpected EOF"},
		{"garbage frame after a valid one", "decrypt", func(c *client, nc net.Conn) {
			require.NoError(t, c.ch.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: []byte(line)}))
			writeAll(nc, frame(garbage))
		}, "message authentication failed"},
		{"unframed garbage after a valid frame", "truncated", func(c *client, nc net.Conn) {
			require.NoError(t, c.ch.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: []byte(line)}))
			writeAll(nc, []byte("GARBAGE"))
			_ = nc.(*net.TCPConn).CloseWrite()
		}, "unexpected EOF"},
	} {
		t.Log(tt.name)
		nc := rawConn(t, a.addr)
		c, err := insider.handshakeOver(nc, secure.Identifier{})
		require.NoError(t, err)
		c.t = t
		tt.send(c, nc)
		if strings.Contains(tt.name, "after a valid") { // the valid frame is the device's own message
			testutil.RequireMetricsEqual(t, []telegraf.Metric{metric.New("insider",
				map[string]string{"ockam_identity": insider.id.Identifier().String()}, map[string]any{"value": 1.0}, ts),
			}, a.out.take(1))
		}
		require.Error(t, c.requireClosed(), tt.name)
		a.expect(map[string]int64{"handshakes_ok": 1, "channels_failed/" + tt.reason: 1})
		a.requireLog(testutil.LevelInfo, "Channel from "+nc.LocalAddr().String(), "failed ("+tt.reason+")", tt.log)
		a.deliver()
	}
	a.finish()
}

// writeAll writes b, ignoring errors: the listener may close the
// connection before it read everything.
func writeAll(nc net.Conn, b []byte) {
	_ = nc.SetWriteDeadline(time.Now().Add(wait))
	_, _ = nc.Write(b)
}
