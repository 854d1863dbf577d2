package receiver

import (
	"net"
	"net/netip"
	"sync"
)

// keyedLimit counts what each key holds against a maximum: the handshakes
// under way per source address (max_handshakes_per_ip), the open channels
// per identity (max_channels_per_identity).
//
// For max_handshakes_per_ip: A connection holds a max_connections slot from
// accept to close, but it holds one of its address's handshake slots only
// until its handshake ends: established channels are authenticated and may
// share one address (devices behind NAT), while a host without a credential
// can only ever hold connections in their handshake. So one host cannot fill
// max_connections with half-open connections or stalled handshakes, and
// devices at other addresses still get in (docs/SECURITY.md, "Bounds").
type keyedLimit struct {
	mu    sync.Mutex
	max   int
	count map[string]int
}

func newKeyedLimit(max int) *keyedLimit {
	return &keyedLimit{max: max, count: make(map[string]int)}
}

// acquire takes a slot of source; it reports false when source already
// holds max of them. The source "" (not an IP address) is not limited.
func (h *keyedLimit) acquire(source string) bool {
	if source == "" {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count[source] >= h.max {
		return false
	}
	h.count[source]++
	return true
}

// release gives back a slot that acquire took.
func (h *keyedLimit) release(source string) {
	if source == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count[source] <= 1 {
		delete(h.count, source) // the map holds only addresses in a handshake
		return
	}
	h.count[source]--
}

// sourceOf returns what a connection from a counts against: its IPv4
// address, or the /64 of its IPv6 address (one host commonly has a whole
// /64). An address that is not IP, a session through a relay or an MQTT
// broker, returns "": the listener cannot tell who is behind the carrier,
// and one shared allowance would let whoever can reach the relay or
// publish on the broker stall every relayed device's handshake
// (docs/SECURITY.md, "Bounds"). Such sessions are bounded by
// max_connections, handshake_timeout and the carrier's own limits.
func sourceOf(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return ""
	}
	ip := ap.Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p.String()
}
