// Package freeport picks loopback TCP ports for tests that hand a port to
// another process (influxd, Mosquitto, a command in the docs), which binds
// it later, maybe again after a restart.
//
// A port that 127.0.0.1:0 gave and that was closed at once can meanwhile go
// to any listener or outgoing connection of the tests running beside: the
// kernel hands out the ephemeral range. These ports come from below that
// range, where the kernel hands out nothing by itself, so only a test that
// names a port could take one.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	taken = map[int]bool{} // handed out in this process
)

// Port returns a port of 127.0.0.1 that is free now, below the ephemeral
// range, and not returned before in this process.
func Port(t testing.TB) int {
	t.Helper()
	lo, hi := belowEphemeral()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := lo + rand.IntN(hi-lo) // not a secret: any free port will do
		if taken[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		ln.Close()
		taken[port] = true
		return port
	}
	t.Fatalf("freeport: no free loopback port in [%d, %d)", lo, hi)
	return 0
}

// Addr returns "127.0.0.1:PORT" for a Port.
func Addr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", Port(t))
}

// belowEphemeral returns the ports [lo, hi) that the kernel does not give to
// 127.0.0.1:0 or to outgoing connections: below the start of
// /proc/sys/net/ipv4/ip_local_port_range (32768 by default on Linux; 49152,
// IANA's, elsewhere).
func belowEphemeral() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil && first > lo+2000 {
			hi = first
		}
	}
	return lo, hi
}
