package ockam_listener

import (
	"crypto/rand"
	"testing"

	"github.com/flynn/noise"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestAttackDowngrade (docs/SECURITY.md, attack 9): peers that offer
// another protocol version in the cleartext hello of message 1, another
// prologue, another Noise protocol name (Ockam's AES-GCM/SHA-256 suite,
// another pattern), and a listener impostor of another prologue. The
// hello is refused at once with the version the peer spoke; a different
// prologue or protocol name changes the transcript, so the peer cannot
// read message 2 and its message 3 fails to decrypt. Nothing falls back to
// anything weaker: there is nothing to fall back to.
func TestAttackDowngrade(t *testing.T) {
	a := newArena(t)
	m := newAttacker(t)

	// Another version in the hello (a peer of another version, or a man in
	// the middle rewriting it).
	for _, hello := range []string{"telegraf-ockam/0", "telegraf-ockam/1", "telegraf-ockam/3", "OCKAM_XX_25519_AES256_GCM_SHA256", ""} {
		nc := rawConn(t, a.addr)
		hs := m.rawHandshake(t, suite, noise.HandshakeXX, true, []byte(hello), nil)
		msg1, _, _, err := hs.WriteMessage(nil, []byte(hello))
		require.NoError(t, err)
		writeAll(nc, frame(msg1))
		requireClosedByPeer(t, nc, wait)
		a.expect(map[string]int64{"handshakes_failed/unsupported_version": 1})
		a.requireLog(testutil.LevelInfo, "Handshake from "+nc.LocalAddr().String()+" failed (unsupported_version)",
			`peer speaks "`+hello+`", want "`+secure.ProtocolName+`"`)
	}

	// The right hello, but another prologue or protocol name: the listener
	// answers, the peer cannot read the answer, its message 3 is refused.
	ockamSuite := noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)
	for _, tt := range []struct {
		name     string
		cs       noise.CipherSuite
		pattern  noise.HandshakePattern
		prologue string
	}{
		{"prologue telegraf-ockam/0", suite, noise.HandshakeXX, "telegraf-ockam/0"},
		{"Noise_XX_25519_AESGCM_SHA256", ockamSuite, noise.HandshakeXX, secure.ProtocolName},
		{"Noise_NN_25519_ChaChaPoly_BLAKE2s", suite, noise.HandshakeNN, secure.ProtocolName},
	} {
		nc := rawConn(t, a.addr)
		hs := m.rawHandshake(t, tt.cs, tt.pattern, true, []byte(tt.prologue), nil)
		msg1, _, _, err := hs.WriteMessage(nil, []byte(secure.ProtocolName))
		require.NoError(t, err)
		writeAll(nc, frame(msg1))
		msg2, err := readFrameFrom(nc)
		require.NoError(t, err, tt.name)
		_, _, _, err = hs.ReadMessage(nil, msg2)
		require.Error(t, err, "%s: the peer read message 2", tt.name)
		made := make([]byte, 48+300) // the best it can do for a message 3
		_, _ = rand.Read(made)
		writeAll(nc, frame(made))
		requireClosedByPeer(t, nc, wait)
		a.expect(map[string]int64{"handshakes_failed/decrypt": 1})
		a.requireLog(testutil.LevelDebug, "Handshake from "+nc.LocalAddr().String()+" failed (decrypt)", "message 3")
	}

	// Another pattern changes message 1 itself: Noise IK's first message
	// carries more than the hello.
	nc := rawConn(t, a.addr)
	listenerKey := a.l.trust.Current().Identity.Public().Attestation().PurposeKey
	hs := m.rawHandshake(t, suite, noise.HandshakeIK, true, []byte(secure.ProtocolName), listenerKey[:])
	msg1, _, _, err := hs.WriteMessage(nil, []byte(secure.ProtocolName))
	require.NoError(t, err)
	writeAll(nc, frame(msg1))
	requireClosedByPeer(t, nc, wait)
	a.expect(map[string]int64{"handshakes_failed/unsupported_version": 1})
	a.deliver()

	// A listener impostor of another version: the device cannot read its
	// message 2, and sends nothing more.
	device := a.p.fileDevice("device", map[string]string{"role": "sensor"})
	imp := startImpostor(t, m, []byte("telegraf-ockam/1"), payload(m.id.Public().Attestation(), device.cred))
	_, err = device.handshakeOver(rawConn(t, imp.ln.Addr().String()), secure.Identifier{})
	require.ErrorIs(t, err, secure.ErrHandshake)
	require.Equal(t, 1, imp.framesReceived(t))
	a.finish()
}
