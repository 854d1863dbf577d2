package receiver

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

func TestSourceOf(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4000}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 4000}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, "fe80::/64"},
		{pipeAddr{}, ""},
		{msgconn.Addr{Net: "relay", Text: "tcp://127.0.0.1:4000 #0123456789abcdef"}, ""},
		{msgconn.Addr{Net: "mqtt", Text: "mqtt://127.0.0.1:1883/ockam session 0123"}, ""},
	} {
		require.Equal(t, tt.want, sourceOf(tt.addr), "%v", tt.addr)
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func TestHandshakeLimit(t *testing.T) {
	h := newKeyedLimit(2)
	a, b := "192.0.2.1/32", "192.0.2.2/32"
	require.True(t, h.acquire(a))
	require.True(t, h.acquire(a))
	require.False(t, h.acquire(a), "a third handshake from a")
	require.True(t, h.acquire(b), "another source is not affected")
	h.release(a)
	require.True(t, h.acquire(a))
	h.release(a)
	h.release(a)
	h.release(b)
	require.Empty(t, h.count, "sources without handshakes are forgotten")
	for range 10 {
		require.True(t, h.acquire(""), "sessions of a relay or a broker are not limited per source")
	}
	require.Empty(t, h.count)
}
