package ockam_listener

import (
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// listBytes is the binary encoding of a list of the authority.
func (p *pki) listBytes(seq uint64, revoked ...secure.Identifier) []byte {
	p.t.Helper()
	l, err := secure.NewRevocationList(p.authority.Signer(), seq, p.now, p.now.Add(secure.DefaultRevocationListValidity), revoked, nil)
	require.NoError(p.t, err)
	return l.Marshal()
}

func TestRevocationSource(t *testing.T) {
	p := newPKI(t)
	src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l := p.listener()
	l.Log = log
	l.RevocationSource = src.Source()
	l.RevocationPollInterval = config.Duration(10 * time.Millisecond)
	src.Serve(p.listBytes(1)) // the service's first list: empty, signed
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

	// An empty list: everyone writes.
	src.FetchedTwice(t)
	a.send(1, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	a.requireAck(1)

	// The authority revokes a: its channel is closed at once, without a
	// message from it.
	src.Serve(p.listBytes(2, revoked.id.Identifier()))
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
		{nil, "it has no revocation list, but sequence 2 was applied before"},
	} {
		src.Serve(tc.body)
		src.FetchedTwice(t)
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
