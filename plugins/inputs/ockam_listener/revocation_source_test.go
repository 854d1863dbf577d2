package ockam_listener

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// fakeAuthority serves whatever revocation list body it is given, as the
// authority service does (wire.ServiceRevocationList), and counts fetches.
type fakeAuthority struct {
	mu      sync.Mutex
	body    []byte // nil: no list yet
	fetches int
	addr    string
}

func newFakeAuthority(t *testing.T) *fakeAuthority {
	t.Helper()
	return newFakeAuthorityAt(t, "127.0.0.1:0")
}

// newFakeAuthorityAt serves at addr (host:port).
func newFakeAuthorityAt(t *testing.T, addr string) *fakeAuthority {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	f := &fakeAuthority{addr: ln.Addr().String()}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				typ, _, err := wire.ReadServiceFrame(nc, wire.ServiceBodyLimit)
				if err != nil || typ != wire.ServiceRevocationList {
					return
				}
				f.mu.Lock()
				body := f.body
				f.fetches++
				f.mu.Unlock()
				wire.WriteServiceFrame(nc, typ|wire.ServiceReply, body)
			}()
		}
	}()
	return f
}

func (f *fakeAuthority) serve(body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.body, f.fetches = body, 0
}

// fetchedTwice waits until the listener has fetched what serve set, twice.
func (f *fakeAuthority) fetchedTwice(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.fetches >= 2
	}, wait, time.Millisecond)
}

// listBytes is the binary encoding of a list of the authority.
func (p *pki) listBytes(seq uint64, revoked ...secure.Identifier) []byte {
	p.t.Helper()
	l, err := secure.NewRevocationList(p.authority.Signer(), seq, p.now, p.now.Add(secure.DefaultRevocationListValidity), revoked, nil)
	require.NoError(p.t, err)
	return l.Marshal()
}

func TestRevocationSource(t *testing.T) {
	p := newPKI(t)
	src := newFakeAuthority(t)
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l := p.listener()
	l.Log = log
	l.RevocationSource = "tcp://" + src.addr
	l.RevocationPollInterval = config.Duration(10 * time.Millisecond)
	out, addr := start(t, l)

	revoked := p.device(map[string]string{"role": "sensor"})
	a := revoked.dial(t, addr)
	b := p.device(map[string]string{"role": "sensor"}).dial(t, addr)
	legit := func(batch uint64) {
		t.Helper()
		b.send(batch, "cpu usage=1 1700000000000000000\n")
		out.accept(1)
		b.requireAck(batch)
	}

	// No list yet: everyone writes.
	src.fetchedTwice(t)
	a.send(1, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	a.requireAck(1)

	// The authority revokes a: its channel is closed at once, without a
	// message from it.
	src.serve(p.listBytes(2, revoked.id.Identifier()))
	requireClosedRevoked(t, a)
	require.Equal(t, uint64(2), l.verifier.RevocationSequence(p.authority.Identifier()))
	legit(2)

	// Going back is refused: an older list, a forged one, another
	// authority's, garbage, or no service at all change nothing.
	forged := p.listBytes(3)
	forged[len(forged)-1] ^= 1
	for _, tc := range []struct {
		body []byte
		log  string
	}{
		{p.listBytes(1), "older list"},
		{forged, "bad signature"},
		{newPKI(t).listBytes(9), "unknown issuer"},
		{[]byte{1, 2, 3}, "malformed"},
	} {
		src.serve(tc.body)
		src.fetchedTwice(t)
		requireLog(t, log, "revocation_source", tc.log)
		require.Equal(t, uint64(2), l.verifier.RevocationSequence(p.authority.Identifier()))
		requireRevokedHandshake(t, revoked, addr)
	}
	legit(3)
}

func TestRevocationSourceSettings(t *testing.T) {
	for _, tc := range []struct {
		source   string
		interval time.Duration
		err      string
	}{
		{"authority:4100", 0, `revocation_source "authority:4100": want tcp://host:port`},
		{"udp://authority:4100", 0, "want tcp://host:port"},
		{"tcp://authority", 0, "want tcp://host:port"},
		{"tcp://authority:4100/path", 0, "want tcp://host:port"},
		{"tcp://authority:4100", -time.Second, "revocation_poll_interval must not be negative"},
	} {
		l := newPKI(t).listener()
		l.RevocationSource, l.RevocationPollInterval = tc.source, config.Duration(tc.interval)
		require.ErrorContains(t, l.Init(), tc.err, "%q", tc.source)
	}
}
