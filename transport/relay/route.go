package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// hopKind says what a hop names.
type hopKind int

const (
	hopRelay hopKind = iota + 1 // "tcp://host:port": the next relay
	hopConn                     // "#" and 16 lowercase hex digits: a connection at this relay
	hopName                     // a registered forwarding name
)

// Hop syntax limits.
const (
	connIDLen = 1 + 16 // "#" and 16 hex digits: 64 random bits
	maxName   = 64
)

// parseHop checks the syntax of one hop and says what it names.
func parseHop(h string) (hopKind, error) {
	switch {
	case h == "":
		return 0, errors.New("empty hop")
	case len(h) > maxHop:
		return 0, fmt.Errorf("hop of %d bytes, at most %d", len(h), maxHop)
	case strings.HasPrefix(h, "tcp://"):
		return hopRelay, checkRelayAddress(h)
	case h[0] == '#':
		return hopConn, checkConnID(h)
	default:
		return hopName, checkName(h)
	}
}

// checkRelayAddress checks "tcp://host:port": a host of letters, digits,
// '.', '-' (or an IPv6 address in brackets) and a port 1..65535 without
// leading zeros, nothing else.
func checkRelayAddress(h string) error {
	hostport := strings.TrimPrefix(h, "tcp://")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not tcp://HOST:PORT", h)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || strconv.FormatUint(p, 10) != port {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", h, port)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", h)
	}
	if strings.HasPrefix(hostport, "[") {
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil || strings.Contains(host, "%") {
			return fmt.Errorf("%q: %q in brackets is not an IPv6 address", h, host)
		}
		return nil
	}
	for _, c := range host {
		if !(isAlnum(c) || c == '.' || c == '-') {
			return fmt.Errorf("%q: host holds %q (want letters, digits, '.', '-', or [IPv6])", h, c)
		}
	}
	return nil
}

// checkConnID checks "#" and 16 lowercase hex digits.
func checkConnID(h string) error {
	if len(h) != connIDLen {
		return fmt.Errorf("connection id %q: want # and 16 lowercase hex digits", h)
	}
	for _, c := range h[1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("connection id %q: want # and 16 lowercase hex digits", h)
		}
	}
	return nil
}

// checkName checks a forwarding name: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
func checkName(n string) error {
	if n == "" || len(n) > maxName {
		return fmt.Errorf("name %q: want 1..%d characters", n, maxName)
	}
	for i, c := range n {
		if !(isAlnum(c) || i > 0 && (c == '.' || c == '_' || c == '-')) {
			return fmt.Errorf("name %q: want a letter or digit, then letters, digits, '.', '_', '-'", n)
		}
	}
	return nil
}

func isAlnum(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ParseRoute checks a route as a user writes it: the first hop is
// "tcp://host:port" of the first relay, then at least one and at most
// MaxHops more hops, each a relay address, a connection id ("#" and 16
// lowercase hex digits) or a forwarding name. The error names the bad hop
// and why.
func ParseRoute(route []string) error {
	switch {
	case len(route) == 0:
		return errors.New("relay: empty route")
	case len(route) == 1:
		return fmt.Errorf("relay: route %q ends at a relay; add the name the listener registered there", route)
	case len(route)-1 > MaxHops:
		return fmt.Errorf("relay: route of %d hops after the first relay, at most %d", len(route)-1, MaxHops)
	}
	for i, h := range route {
		k, err := parseHop(h)
		if err != nil {
			return fmt.Errorf("relay: route hop %d: %w", i, err)
		}
		if i == 0 && k != hopRelay {
			return fmt.Errorf("relay: route hop 0 %q: the first hop must be tcp://HOST:PORT of a relay", h)
		}
	}
	return nil
}

// connID is the identifier of a connection at a relay: 64 random bits, so
// that no one can address another's connection by guessing.
type connID uint64

func newConnID() connID {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	return connID(binary.BigEndian.Uint64(b[:]))
}

// randRead fills b with random bytes.
func randRead(b []byte) { _, _ = rand.Read(b) } // never fails (Go 1.24+)

// hop returns the id as a hop: "#" and 16 lowercase hex digits.
func (id connID) hop() string { return fmt.Sprintf("#%016x", uint64(id)) }

// parseConnID reads a hop of kind hopConn.
func parseConnID(h string) connID {
	v, _ := strconv.ParseUint(h[1:], 16, 64)
	return connID(v)
}
