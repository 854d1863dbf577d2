package ockam_listener

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestAttackCredentials (docs/SECURITY.md, attack 5): devices whose
// credential is from an unknown authority, expired, not yet valid, signed
// over other attributes, or stolen (another identity's credential file,
// without its key; with its public identity too, over the thief's own
// key); a device revoked while its channel is open, which then tries again;
// and an older revocation list put back to un-revoke it. Each is refused at
// the handshake or per message, with its own reason.
func TestAttackCredentials(t *testing.T) {
	a := newArena(t, func(p *pki, l *Listener) {
		l.RevocationList = p.write("revoked.list", p.revocationList(1))
		l.RevocationCheckInterval = config.Duration(20 * time.Millisecond)
	})
	p := a.p
	attrs := map[string]string{"role": "sensor", "site": "plant-7"}
	victim := p.fileDevice("victim", attrs)
	thief := newAttacker(t)

	// The victim's credential with site=plant-9, its signature unchanged.
	raw := victim.cred.Marshal()
	i := bytes.Index(raw, []byte("plant-7"))
	require.Positive(t, i)
	raw[i+len("plant-")] = '9'
	forged, err := secure.ParseCredential(raw)
	require.NoError(t, err)

	for _, tt := range []struct {
		name   string
		device *device
		reason string // of handshakes_failed
		log    string // in the log line
		code   secure.RefusalCode
	}{
		{"an unknown authority", p.deviceFrom(newPKI(t).authority, attrs, p.now, time.Hour),
			"unknown_issuer", "unknown issuer", secure.RefusedUnknownIssuer},
		{"expired", p.deviceFrom(p.authority, attrs, p.now.Add(-2*time.Hour), time.Hour),
			"expired", "credential expired at", secure.RefusedExpired},
		{"not yet valid", p.deviceFrom(p.authority, attrs, p.now.Add(time.Hour), time.Hour),
			"not_yet_valid", "not yet valid", secure.RefusedNotYetValid},
		{"signed over other attributes", &device{id: victim.id, cred: forged, pki: p},
			"bad_signature", "bad signature", secure.RefusedInvalidCredential},
		{"stolen, without its key", &device{id: thief.id, cred: victim.cred, pki: p},
			"wrong_subject", "presented by " + thief.id.Identifier().Short(), secure.RefusedInvalidCredential},
	} {
		t.Log(tt.name)
		// The device checks the listener first; the listener then refuses
		// message 3 and tells the device why.
		_, err := tt.device.tryDial(a.addr)
		requireRefused(t, err, tt.code)
		a.expect(map[string]int64{"handshakes_failed/" + tt.reason: 1})
		a.requireLog(testutil.LevelInfo, "Handshake from", "failed ("+tt.reason+")", tt.log)
		a.deliver()
	}

	// Stolen with the victim's public identity too, over the thief's key.
	nc := rawConn(t, a.addr)
	require.NoError(t, rawXX(t, nc, thief, []byte(secure.ProtocolName), []byte(secure.ProtocolName),
		payload(victim.id.Public().Attestation(), victim.cred)))
	requireClosedByPeer(t, nc, wait)
	a.expect(map[string]int64{"handshakes_failed/wrong_subject": 1})
	a.requireLog(testutil.LevelInfo, "failed (wrong_subject)", "purpose key is not the attested one")

	// Revoked while its channel is open: the channel is closed as soon as
	// the list is applied, though the victim sends nothing (before W14's
	// fix it stayed open, then only nacked, until its next message), and
	// its next handshake is refused.
	vc := victim.dial(t, a.addr)
	vc.send(1, victimLine(1))
	a.requireVictim(victim, 1)
	vc.requireAck(1)
	a.expect(map[string]int64{"handshakes_ok": 1})
	p.write("revoked.list", p.revocationList(2, victim.id.Identifier()))
	err = vc.requireClosed()
	require.ErrorIs(t, err, secure.ErrClosed)
	require.ErrorContains(t, err, reasonRevoked)
	a.requireLog(testutil.LevelInfo, "Closed 1 channels of identities revoked", victim.id.Identifier().Short())
	requireRevokedHandshake(t, victim, a.addr)
	a.expect(map[string]int64{"handshakes_failed/revoked": 1})
	a.deliver()

	// The older list put back: refused as stale, the victim stays revoked.
	p.write("revoked.list", p.revocationList(1))
	a.requireLog(testutil.LevelWarn, "revocation_list", "stale", "keeping the current list (sequence 2)")
	requireRevokedHandshake(t, victim, a.addr)
	a.expect(map[string]int64{"handshakes_failed/revoked": 1})
	require.Equal(t, uint64(2), a.l.verifier.RevocationSequence(p.authority.Identifier()))
	// Both refusals counted, the device logged once for this reason.
	a.requireLogCount(1, "failed (revoked), the device was told", victim.id.Identifier().Short())
	a.finish()
}

// requireRevokedHandshake checks that d's new handshake is refused.
func requireRevokedHandshake(t *testing.T, d *device, addr string) {
	t.Helper()
	_, err := d.tryDial(addr)
	requireRefused(t, err, secure.RefusedRevoked)
}

// requireRefused checks that a device's Dial was refused after the
// handshake with code: the device learns why (before protocol version 2
// its Dial succeeded and the connection was just closed).
func requireRefused(t *testing.T, err error, code secure.RefusalCode) {
	t.Helper()
	require.ErrorIs(t, err, secure.ErrRefused)
	re, ok := errors.AsType[*secure.RefusedError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, code, re.Code, "%v", err)
}
