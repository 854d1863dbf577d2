package ockam_listener

import (
	"net"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// impostor is a listener impostor: it answers a device's message 1 with a
// message 2 of its own making (any prologue, its own static key, any
// payload) and counts the frames the device sends.
type impostor struct {
	ln     net.Listener
	frames chan int // frames received on each connection, once it ended
}

func startImpostor(t *testing.T, m *attacker, prologue, payload []byte) *impostor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	imp := &impostor{ln: ln, frames: make(chan int, 10)}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go imp.serve(t, nc, m, prologue, payload)
		}
	}()
	return imp
}

func (imp *impostor) serve(t *testing.T, nc net.Conn, m *attacker, prologue, payload []byte) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(wait))
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite, Pattern: noise.HandshakeXX, Prologue: prologue, StaticKeypair: m.static,
	})
	if err != nil {
		t.Error(err)
		return
	}
	n := 0
	defer func() { imp.frames <- n }()
	msg1, err := readFrameFrom(nc)
	if err != nil {
		return
	}
	n++
	if _, _, _, err := hs.ReadMessage(nil, msg1); err != nil {
		return
	}
	msg2, _, _, err := hs.WriteMessage(nil, payload)
	if err != nil {
		return
	}
	if _, err := nc.Write(frame(msg2)); err != nil {
		return
	}
	for { // whatever the device sends next: message 3 would carry its credential
		f, err := readFrameFrom(nc)
		if err != nil {
			return
		}
		n++
		if n == 2 {
			// Message 3 read: the impostor holds the channel keys and
			// accepts, as a listener does (docs/PROTOCOL.md, section 9).
			if _, _, cs2, err := hs.ReadMessage(nil, f); err == nil && cs2 != nil {
				accept, err := cs2.Encrypt(nil, nil, []byte{byte(secure.TypeAccept)})
				if err == nil {
					_, _ = nc.Write(frame(accept))
				}
			}
		}
	}
}

// framesReceived returns how many frames the impostor's next connection
// received from the device before it ended.
func (imp *impostor) framesReceived(t *testing.T) int {
	t.Helper()
	select {
	case n := <-imp.frames:
		return n
	case <-time.After(wait):
		t.Fatal("the impostor's connection did not end")
		return 0
	}
}

// TestAttackMITM (docs/SECURITY.md, attack 4): a man in the middle with
// keys of its own sits where the device dials. Towards the device it plays
// the listener with a message 2 of its making: its own identity and a
// credential from its own authority; the real listener's public identity
// and credential over its own static key; a valid credential of the real
// authority (a compromised device) against a device that pins the
// listener. The device refuses each after message 2, so the impostor never
// receives message 3, which would reveal the device's identity and
// credential. Towards the listener it plays the device: with its own
// authority's credential, and with the device's stolen credential and
// public identity over its own static key. The listener refuses both.
func TestAttackMITM(t *testing.T) {
	a := newArena(t)
	p := a.p
	victim := p.fileDevice("victim", map[string]string{"role": "sensor"})
	listener := a.l.trust.Current().Identity
	listenerCred := a.l.trust.Current().Credential
	mallory := newAttacker(t)
	rogue := newPKI(t)
	rogueCred, err := secure.IssueCredential(rogue.authority.Signer(), mallory.id.Identifier(),
		map[string]string{"role": "listener"}, p.now, time.Hour, nil)
	require.NoError(t, err)
	// Mallory compromised a device: a credential of the real authority.
	insiderCred, err := secure.IssueCredential(p.authority.Signer(), mallory.id.Identifier(),
		map[string]string{"role": "sensor"}, p.now, time.Hour, nil)
	require.NoError(t, err)

	for _, tt := range []struct {
		name    string
		payload []byte
		pin     bool
		want    error
	}{
		{"its own keys, a credential of its own authority",
			payload(mallory.id.Public().Attestation(), rogueCred), false, secure.ErrUnknownIssuer},
		{"the listener's identity and credential, its own static key",
			payload(listener.Public().Attestation(), listenerCred), false, secure.ErrWrongSubject},
		{"a compromised device's credential, to a device that pins the listener",
			payload(mallory.id.Public().Attestation(), insiderCred), true, secure.ErrPinMismatch},
	} {
		imp := startImpostor(t, mallory, []byte(secure.ProtocolName), tt.payload)
		var pin secure.Identifier
		if tt.pin {
			pin = listener.Identifier()
		}
		_, err := victim.handshakeOver(rawConn(t, imp.ln.Addr().String()), pin)
		require.ErrorIs(t, err, tt.want, tt.name)
		require.Equal(t, 1, imp.framesReceived(t), "%s: the impostor received more than message 1", tt.name)
	}

	// Why the pin matters (docs/SECURITY.md, weakness W4): a device that
	// does not pin the listener accepts any identity with a credential of
	// its authority, a compromised device's included, and sends it message 3.
	imp := startImpostor(t, mallory, []byte(secure.ProtocolName), payload(mallory.id.Public().Attestation(), insiderCred))
	nc := rawConn(t, imp.ln.Addr().String())
	_, err = victim.handshakeOver(nc, secure.Identifier{})
	require.NoError(t, err)
	nc.Close()
	require.Equal(t, 2, imp.framesReceived(t), "without a pin, the impostor gets message 3")

	// Towards the listener, as itself with its own authority's credential.
	m := &device{id: mallory.id, cred: rogueCred, pki: p}
	if c, err := m.tryDial(a.addr); err == nil {
		c.t = t
		require.Error(t, c.requireClosed())
	}
	a.expect(map[string]int64{"handshakes_failed/unknown_issuer": 1})
	a.requireLog(testutil.LevelInfo, "failed (unknown_issuer)", "credential issued by "+rogue.authority.Identifier().Short())
	a.deliver()

	// As the device: its stolen credential and public identity, but
	// Mallory's static key, which the identity never attested.
	nc = rawConn(t, a.addr)
	stolen := payload(victim.id.Public().Attestation(), victim.cred)
	require.NoError(t, rawXX(t, nc, mallory, []byte(secure.ProtocolName), []byte(secure.ProtocolName), stolen))
	requireClosedByPeer(t, nc, wait)
	a.expect(map[string]int64{"handshakes_failed/wrong_subject": 1})
	a.requireLog(testutil.LevelInfo, "failed (wrong_subject)", "purpose key is not the attested one")
	a.finish()
}

// rawXX runs the initiator's side of an XX handshake with flynn/noise over
// nc: message 1 with hello as its payload, then message 3 with payload. It
// returns the error of reading message 2 (then message 3 is not sent).
func rawXX(t *testing.T, nc net.Conn, m *attacker, prologue, hello, payload []byte) error {
	t.Helper()
	hs := m.rawHandshake(t, suite, noise.HandshakeXX, true, prologue, nil)
	msg1, _, _, err := hs.WriteMessage(nil, hello)
	require.NoError(t, err)
	_, err = nc.Write(frame(msg1))
	require.NoError(t, err)
	msg2, err := readFrameFrom(nc)
	require.NoError(t, err)
	if _, _, _, err := hs.ReadMessage(nil, msg2); err != nil {
		return err
	}
	msg3, _, _, err := hs.WriteMessage(nil, payload)
	require.NoError(t, err)
	_, err = nc.Write(frame(msg3))
	require.NoError(t, err)
	return nil
}
