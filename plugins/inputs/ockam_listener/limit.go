package ockam_listener

import (
	"net"
	"net/netip"
	"sync"
)

// handshakeLimit counts the handshakes under way per source address
// (max_handshakes_per_ip). A connection holds a max_connections slot from
// accept to close, but it holds one of its address's handshake slots only
// until its handshake ends: established channels are authenticated and may
// share one address (devices behind NAT), while a host without a credential
// can only ever hold connections in their handshake. So one host cannot fill
// max_connections with half-open connections or stalled handshakes, and
// devices at other addresses still get in (docs/SECURITY.md, "Bounds").
type handshakeLimit struct {
	mu    sync.Mutex
	max   int
	count map[netip.Prefix]int
}

func newHandshakeLimit(max int) *handshakeLimit {
	return &handshakeLimit{max: max, count: make(map[netip.Prefix]int)}
}

// acquire takes a handshake slot of source; it reports false when source
// already holds max of them.
func (h *handshakeLimit) acquire(source netip.Prefix) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count[source] >= h.max {
		return false
	}
	h.count[source]++
	return true
}

// release gives back a slot that acquire took.
func (h *handshakeLimit) release(source netip.Prefix) {
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
// /64). An address that is not IP (a test pipe) counts as one source.
func sourceOf(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
