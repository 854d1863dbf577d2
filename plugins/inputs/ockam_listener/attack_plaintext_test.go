package ockam_listener

import (
	"testing"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// TestAttackPlaintext (docs/SECURITY.md, attack 1): anyone who reaches the
// port sends metrics in clear, as line protocol, as an InfluxDB or
// http_listener_v2 write request, or opens TLS. The first two bytes are
// not the length of a handshake message 1, so the listener closes the
// connection at once, well before handshake_timeout (10 s here).
func TestAttackPlaintext(t *testing.T) {
	a := newArena(t)
	for _, tt := range []struct{ name, data, firstBytes string }{
		{"line protocol", "cpu,host=evil usage=99 1700000000000000000\n", `"cp"`},
		{"influxdb write", "POST /api/v2/write?bucket=db HTTP/1.1\r\nHost: gateway\r\nContent-Length: 43\r\n\r\n" +
			"cpu,host=evil usage=99 1700000000000000000\n", `"PO"`},
		{"http_listener_v2 write", "POST /telegraf HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 43\r\n\r\n" +
			"cpu,host=evil usage=99 1700000000000000000\n", `"PO"`},
		{"tls client hello", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", `"\x16\x03"`},
	} {
		t.Log(tt.name)
		nc := rawConn(t, a.addr)
		_, err := nc.Write([]byte(tt.data))
		require.NoError(t, err)
		requireClosedByPeer(t, nc, wait)
		// Malformed, not timeout: closed at the first frame, not at handshake_timeout.
		a.expect(map[string]int64{"handshakes_failed/malformed": 1})
		a.requireLog(testutil.LevelDebug, "Handshake from "+nc.LocalAddr().String()+" failed (malformed)",
			"first frame is not a handshake message", "first bytes "+tt.firstBytes)
		a.deliver()
	}
	a.finish()
}
