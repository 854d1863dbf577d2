package authority

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// dialFrom connects to addr from the loopback address local (127.0.0.2
// and the like are loopback on Linux).
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 30 * time.Second}
	nc, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	return nc
}

// syncLog is a slog handler's buffer that tests read while it is written.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// TestBundleRateLimit is issue 23's item 2: one address fetching bundles
// in a loop took a one-time prekey each time, until the pool was empty and
// every device enrolled without one. Now one address gets BundleBurst
// one-time prekeys at once, then one per BundleInterval (the fixture's
// clock stands still); its other bundles carry none, and are counted.
// Another address is not affected.
func TestBundleRateLimit(t *testing.T) {
	f := newFixture(t)
	log := &syncLog{}
	addr := f.serveWith(&Service{Logger: slog.New(slog.NewTextHandler(log, nil)), BundleBurst: 5})
	nc := dialFrom(t, "127.0.0.2", addr)
	defer nc.Close()
	fetch := func(nc net.Conn) int {
		t.Helper()
		b, err := wire.FetchBundle(nc)
		require.NoError(t, err)
		return len(b.OneTimePrekeys)
	}
	for range 5 {
		require.Equal(t, 1, fetch(nc))
	}
	for range 3 {
		require.Equal(t, 0, fetch(nc), "over the rate")
	}
	require.Equal(t, uint64(3), f.a.BundlesOverRate())
	other := dialFrom(t, "127.0.0.3", addr)
	defer other.Close()
	require.Equal(t, 1, fetch(other), "another address has its own allowance")
	f.clock.Add(DefaultBundleInterval)
	require.Equal(t, 1, fetch(nc), "one more after an interval")
	require.Equal(t, 0, fetch(nc))
	require.Equal(t, uint64(4), f.a.BundlesOverRate())
	require.Equal(t, uint64(0), f.a.BundlesWithoutOneTimePrekey(), "the pool is not exhausted")
	require.Equal(t, 1, log.count("bundle requests over the rate of one address"), "one warning per minute")
}

// TestPoolExhaustedCounted: past MaxOneTimePrekeys outstanding, bundles go
// out without a one-time prekey, and each is counted.
func TestPoolExhaustedCounted(t *testing.T) {
	f := newFixture(t)
	f.a.cfg.MaxOneTimePrekeys = 2
	addr := f.serve()
	nc := dialFrom(t, "127.0.0.1", addr)
	defer nc.Close()
	for i, want := range []int{1, 1, 0, 0} {
		b, err := wire.FetchBundle(nc)
		require.NoError(t, err)
		require.Len(t, b.OneTimePrekeys, want, "bundle %d", i)
	}
	require.Equal(t, uint64(2), f.a.BundlesWithoutOneTimePrekey())
}

// TestConnectionFloodFromOneAddress is issue 15's item 4: 4096 idle
// connections from one address took every connection slot, so that every
// revocation fetch and enrollment failed. Now one address holds at most
// MaxConnectionsPerIP; while it floods, another address fetches the list
// 200 times, each on a new connection, and every fetch succeeds. The
// refusals are logged at most once a minute.
func TestConnectionFloodFromOneAddress(t *testing.T) {
	f := newFixture(t)
	d := newDevice(t)
	_, err := f.a.Revoke([]secure.Identifier{d.id.Identifier()}, nil)
	require.NoError(t, err)
	log := &syncLog{}
	addr := f.serveWith(&Service{Logger: slog.New(slog.NewTextHandler(log, nil))})

	flood := make([]net.Conn, 0, DefaultMaxConnections)
	defer func() {
		for _, nc := range flood {
			nc.Close()
		}
	}()
	for range DefaultMaxConnections {
		flood = append(flood, dialFrom(t, "127.0.0.2", addr))
	}
	// The flood has met the limit once the service has said so.
	require.Eventually(t, func() bool { return log.count("too many connections from one address") > 0 },
		30*time.Second, 10*time.Millisecond)

	for i := range 200 {
		nc := dialFrom(t, "127.0.0.1", addr)
		l, err := wire.FetchRevocationList(nc)
		nc.Close()
		require.NoError(t, err, "fetch %d", i)
		require.NotNil(t, l)
		require.True(t, l.Revokes(&secure.Credential{Subject: d.id.Identifier()}))
	}
	require.Less(t, log.count("too many connections from one address"), 10, "warnings are rate-limited")
}

// TestConnTimeouts: a connection that sends no first request is closed
// after timeouts.first; one that made a request may then stay silent for
// timeouts.idle, not longer. Under synctest, on net.Pipe.
func TestConnTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		timeouts := connTimeouts{first: 10 * time.Second, idle: 30 * time.Second}
		echo := func(typ byte, body []byte) (byte, []byte, error) { return typ | wire.ServiceReply, nil, nil }
		closedAfter := func(request bool) time.Duration {
			client, server := net.Pipe()
			defer client.Close()
			go serveConn(t.Context(), server, timeouts, wire.ServiceBodyLimit, echo)
			if request {
				_, err := wire.FetchRevocationList(client)
				require.NoError(t, err)
			}
			start := time.Now()
			_, err := client.Read(make([]byte, 1))
			require.ErrorIs(t, err, io.EOF, "the service closed the connection")
			return time.Since(start)
		}
		require.Equal(t, timeouts.first, closedAfter(false))
		require.Equal(t, timeouts.idle, closedAfter(true))
	})
}

// TestServeSignsFirstList: a service started without a revocation list signs
// the first one, empty (sequence 1), and serves it, so that parties never
// have to take an unsigned "no list" as "nobody is revoked"
// (docs/PROTOCOL.md §14.7). A service started with a list keeps it.
func TestServeSignsFirstList(t *testing.T) {
	f := newFixture(t)
	require.Nil(t, f.a.RevocationList())
	log := &syncLog{}
	addr := f.serveWith(&Service{Logger: slog.New(slog.NewTextHandler(log, nil))})
	fetch := func() *secure.RevocationList {
		t.Helper()
		nc := dialFrom(t, "127.0.0.1", addr)
		defer nc.Close()
		l, err := wire.FetchRevocationList(nc)
		require.NoError(t, err)
		require.NotNil(t, l, "the service always has a list")
		return l
	}
	l := fetch()
	require.Equal(t, uint64(1), l.Sequence)
	require.Empty(t, l.Subjects())
	require.Empty(t, l.Credentials())
	require.NoError(t, f.verifier.UpdateRevocations(l), "signed by the authority")
	require.Equal(t, 1, log.count("signed the first revocation list (empty)"))
	require.Equal(t, uint64(1), f.requireConsistent().RevocationSequence, "stored")

	log2 := &syncLog{}
	addr = f.serveWith(&Service{Logger: slog.New(slog.NewTextHandler(log2, nil))})
	require.Equal(t, uint64(1), fetch().Sequence, "a second start signs nothing")
	require.Zero(t, log2.count("signed the first revocation list"))
}
