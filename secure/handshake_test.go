package secure

import (
	"bytes"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// doHandshake runs both roles with the sans-IO types and returns the
// sessions, or the first error. An initiator that fails must not have
// produced message 3.
func doHandshake(t *testing.T, icfg, rcfg HandshakeConfig) (dev, lis *Session, err error) {
	t.Helper()
	i, err := NewInitiator(icfg)
	require.NoError(t, err)
	r, err := NewResponder(rcfg)
	require.NoError(t, err)
	msg1, err := i.Start()
	require.NoError(t, err)
	msg2, err := r.Respond(msg1)
	if err != nil {
		return nil, nil, err
	}
	msg3, dev, err := i.Finish(msg2)
	if err != nil {
		require.Nil(t, msg3, "message 3 after a failed verification")
		require.Nil(t, dev)
		return nil, nil, err
	}
	lis, err = r.Finish(msg3)
	return dev, lis, err
}

// requireCrossDecrypt checks that each session opens what the other seals,
// in both directions, n messages each, then again after a rekey.
func requireCrossDecrypt(t *testing.T, a, b *Session, n int) {
	t.Helper()
	for round := range 2 {
		for i := range n {
			for _, dir := range [][2]*Session{{a, b}, {b, a}} {
				msg := []byte{byte(round), byte(i), 0xab}
				ct, err := dir[0].seal(nil, msg)
				require.NoError(t, err)
				pt, err := dir[1].open(nil, ct, time.Now())
				require.NoError(t, err)
				require.Equal(t, msg, pt)
			}
		}
		a.rekeySend(time.Now())
		b.rekeyRecv(time.Now())
		b.rekeySend(time.Now())
		a.rekeyRecv(time.Now())
	}
}

func TestHandshake(t *testing.T) {
	e := newTestEnv(t)
	i, err := NewInitiator(e.deviceConfig())
	require.NoError(t, err)
	r, err := NewResponder(e.listenerConfig())
	require.NoError(t, err)

	msg1, err := i.Start()
	require.NoError(t, err)
	require.Len(t, msg1, 32+len(ProtocolName))
	require.Equal(t, []byte(ProtocolName), msg1[32:], "the cleartext hello")

	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	require.Len(t, msg2, 32+(32+16)+(1+AttestationSize+2+len(e.listenerCred.raw)+16))
	require.False(t, bytes.Contains(msg2, e.listenerCred.raw), "the listener's credential is encrypted")

	msg3, dev, err := i.Finish(msg2)
	require.NoError(t, err)
	require.Len(t, msg3, (32+16)+(1+AttestationSize+2+len(e.deviceCred.raw)+16))
	require.False(t, bytes.Contains(msg3, e.deviceCred.raw), "the device's credential is encrypted")
	require.False(t, bytes.Contains(msg3, e.device.Public().Attestation().raw[:]), "the device's identity is encrypted")

	lis, err := r.Finish(msg3)
	require.NoError(t, err)

	require.Len(t, dev.ChannelBinding(), 32)
	require.Equal(t, dev.ChannelBinding(), lis.ChannelBinding())
	requireCrossDecrypt(t, dev, lis, 3)

	require.Equal(t, e.listener.Identifier(), dev.Peer().Identifier)
	require.Equal(t, e.listenerCred.raw, dev.Peer().Credential.raw)
	require.Equal(t, e.listener.Public().Attestation().raw, dev.Peer().Attestation.raw)
	require.Equal(t, e.device.Identifier(), lis.Peer().Identifier)
	require.Equal(t, e.deviceCred.raw, lis.Peer().Credential.raw)
	require.Equal(t, sensorAttrs, lis.Peer().Credential.Attributes)

	// Fresh ephemerals: another handshake has another binding.
	dev2, lis2, err := doHandshake(t, e.deviceConfig(), e.listenerConfig())
	require.NoError(t, err)
	require.Equal(t, dev2.ChannelBinding(), lis2.ChannelBinding())
	require.NotEqual(t, dev.ChannelBinding(), dev2.ChannelBinding())
}

// TestHandshakeVerification: each check of docs/PROTOCOL.md, section 7,
// on each side, with the error it must give.
func TestHandshakeVerification(t *testing.T) {
	e := newTestEnv(t)
	stranger := newIdentity(t) // an authority nobody here trusts
	credential := func(t *testing.T, authority *LocalIdentity, subject *LocalIdentity, issued time.Time, ttl time.Duration) *Credential {
		c, err := IssueCredential(authority.Signer(), subject.Identifier(), sensorAttrs, issued, ttl, nil)
		require.NoError(t, err)
		return c
	}
	revoking := func(t *testing.T, subject Identifier) *Verifier {
		v := newVerifier(t, e.authority)
		l, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{subject}, nil)
		require.NoError(t, err)
		require.NoError(t, v.UpdateRevocations(l))
		return v
	}
	// withAttestation presents att while keeping l's purpose key.
	withAttestation := func(l *LocalIdentity, att *Attestation) *LocalIdentity {
		forged := *l
		forged.public = &Identity{attestation: att}
		return &forged
	}
	expiredAttestation := func(t *testing.T, l *LocalIdentity) *Attestation {
		a, err := Attest(l.Signer(), l.purpose.PublicKey(), t0.Add(-2*time.Hour), time.Hour)
		require.NoError(t, err)
		return a
	}
	// rotated is the listener after a purpose-key rotation that presents
	// its previous attestation.
	rotatedVault := vault.NewMemory()
	rotated, err := CreateIdentity(rotatedVault, t0)
	require.NoError(t, err)
	oldAttestation := rotated.Public().Attestation()
	require.NoError(t, rotated.RotatePurposeKey(rotatedVault, t0, time.Hour))
	rotatedCred := credential(t, e.authority, rotated, t0, time.Hour)

	type side int
	const (
		initiator side = iota // the device refuses the listener
		responder             // the listener refuses the device
	)
	for _, tc := range []struct {
		name   string
		dev    func(*testing.T, *HandshakeConfig)
		lis    func(*testing.T, *HandshakeConfig)
		failAt side
		want   error
	}{
		{"listener credential from an unknown authority", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, stranger, e.listener, t0, time.Hour)
		}, initiator, ErrUnknownIssuer},
		{"device credential from an unknown authority", func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, stranger, e.device, t0, time.Hour)
		}, nil, responder, ErrUnknownIssuer},
		{"device trusts another authority", func(t *testing.T, c *HandshakeConfig) {
			c.Verifier = newVerifier(t, stranger)
		}, nil, initiator, ErrUnknownIssuer},
		{"listener credential expired", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, e.authority, e.listener, t0.Add(-time.Hour), time.Hour)
		}, initiator, ErrExpired},
		{"device credential expired", func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, e.authority, e.device, t0.Add(-time.Hour), time.Hour)
		}, nil, responder, ErrExpired},
		{"listener credential not yet valid", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, e.authority, e.listener, t0.Add(ClockSkew+time.Second), time.Hour)
		}, initiator, ErrNotYetValid},
		{"device credential not yet valid", func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, e.authority, e.device, t0.Add(ClockSkew+time.Second), time.Hour)
		}, nil, responder, ErrNotYetValid},
		{"device credential valid within the skew", func(t *testing.T, c *HandshakeConfig) {
			c.Credential = credential(t, e.authority, e.device, t0.Add(ClockSkew), time.Hour)
		}, nil, 0, nil},
		{"listener revoked", func(t *testing.T, c *HandshakeConfig) {
			c.Verifier = revoking(t, e.listener.Identifier())
		}, nil, initiator, ErrRevoked},
		{"device revoked", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Verifier = revoking(t, e.device.Identifier())
		}, responder, ErrRevoked},
		{"listener attestation expired", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Identity = withAttestation(e.listener, expiredAttestation(t, e.listener))
		}, initiator, ErrExpired},
		{"device attestation expired", func(t *testing.T, c *HandshakeConfig) {
			c.Identity = withAttestation(e.device, expiredAttestation(t, e.device))
		}, nil, responder, ErrExpired},
		{"device pins another listener", func(t *testing.T, c *HandshakeConfig) {
			c.PeerIdentifier = e.device.Identifier()
		}, nil, initiator, ErrPinMismatch},
		{"listener pins another device", nil, func(t *testing.T, c *HandshakeConfig) {
			c.PeerIdentifier = e.listener.Identifier()
		}, responder, ErrPinMismatch},
		{"both pin the right peer", func(t *testing.T, c *HandshakeConfig) {
			c.PeerIdentifier = e.listener.Identifier()
		}, func(t *testing.T, c *HandshakeConfig) {
			c.PeerIdentifier = e.device.Identifier()
		}, 0, nil},
		{"device requires role=listener, and gets it", func(t *testing.T, c *HandshakeConfig) {
			c.PeerAttributes = map[string]string{"role": "listener"}
		}, nil, 0, nil},
		{"device requires role=listener; a fellow device poses as the listener", func(t *testing.T, c *HandshakeConfig) {
			c.PeerAttributes = map[string]string{"role": "listener"}
		}, func(t *testing.T, c *HandshakeConfig) {
			c.Identity, c.Credential = e.device, e.deviceCred
		}, initiator, ErrPeerAttributes},
		{"device requires an attribute the listener lacks", func(t *testing.T, c *HandshakeConfig) {
			c.PeerAttributes = map[string]string{"role": "listener", "site": "plant-7"}
		}, nil, initiator, ErrPeerAttributes},
		{"listener presents the device's credential", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Credential = e.deviceCred
		}, initiator, ErrWrongSubject},
		{"device presents the listener's credential", func(t *testing.T, c *HandshakeConfig) {
			c.Credential = e.listenerCred
		}, nil, responder, ErrWrongSubject},
		{"listener presents the attestation of its previous purpose key", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Identity, c.Credential = withAttestation(rotated, oldAttestation), rotatedCred
		}, initiator, ErrWrongSubject},
		{"device replays the listener's whole payload", func(t *testing.T, c *HandshakeConfig) {
			c.Identity = withAttestation(e.device, e.listener.Public().Attestation())
			c.Credential = e.listenerCred
		}, nil, responder, ErrWrongSubject},
		{"listener replays the device's whole payload", nil, func(t *testing.T, c *HandshakeConfig) {
			c.Identity = withAttestation(e.listener, e.device.Public().Attestation())
			c.Credential = e.deviceCred
		}, initiator, ErrWrongSubject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dcfg, lcfg := e.deviceConfig(), e.listenerConfig()
			if tc.dev != nil {
				tc.dev(t, &dcfg)
			}
			if tc.lis != nil {
				tc.lis(t, &lcfg)
			}
			i, err := NewInitiator(dcfg)
			require.NoError(t, err)
			r, err := NewResponder(lcfg)
			require.NoError(t, err)
			msg1, err := i.Start()
			require.NoError(t, err)
			msg2, err := r.Respond(msg1)
			require.NoError(t, err)
			msg3, dev, err := i.Finish(msg2)
			if tc.want != nil && tc.failAt == initiator {
				require.ErrorIs(t, err, tc.want)
				require.Nil(t, msg3, "the device revealed itself to a listener it refused")
				require.Nil(t, dev)
				_, _, err = i.Finish(msg2)
				require.ErrorIs(t, err, ErrHandshake, "the handshake is dead")
				return
			}
			require.NoError(t, err)
			lis, err := r.Finish(msg3)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.Nil(t, lis)
				return
			}
			require.NoError(t, err)
			require.Equal(t, dev.ChannelBinding(), lis.ChannelBinding())
			require.Equal(t, lcfg.Identity.Identifier(), dev.Peer().Identifier)
			require.Equal(t, dcfg.Identity.Identifier(), lis.Peer().Identifier)
		})
	}
}

// foreignInitiator starts a handshake with plain flynn/noise, as another
// implementation (or version) would.
func foreignInitiator(t *testing.T, prologue, hello string, static noise.DHKey) (*noise.HandshakeState, []byte) {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
		Pattern:       noise.HandshakeXX,
		Initiator:     true,
		Prologue:      []byte(prologue),
		StaticKeypair: static,
	})
	require.NoError(t, err)
	msg1, _, _, err := hs.WriteMessage(nil, []byte(hello))
	require.NoError(t, err)
	return hs, msg1
}

func TestHandshakeVersion(t *testing.T) {
	e := newTestEnv(t)
	static, err := noise.DH25519.GenerateKeypair(nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, prologue, hello string
	}{
		{"next version", "telegraf-ockam/3", "telegraf-ockam/3"},
		{"version 1, without accept and refuse", "telegraf-ockam/1", "telegraf-ockam/1"},
		{"no hello", ProtocolName, ""},
		{"hello with NUL", ProtocolName, ProtocolName + "\x00"},
		{"uppercase hello", ProtocolName, "TELEGRAF-OCKAM/1"},
		{"old version", "telegraf-ockam/0", "telegraf-ockam/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, msg1 := foreignInitiator(t, tc.prologue, tc.hello, static)
			r, err := NewResponder(e.listenerConfig())
			require.NoError(t, err)
			msg2, err := r.Respond(msg1)
			require.ErrorIs(t, err, ErrUnsupportedVersion)
			require.Nil(t, msg2, "nothing is revealed to another version")
		})
	}

	t.Run("right hello, other prologue", func(t *testing.T) {
		hs, msg1 := foreignInitiator(t, "telegraf-ockam/3", ProtocolName, static)
		r, err := NewResponder(e.listenerConfig())
		require.NoError(t, err)
		msg2, err := r.Respond(msg1)
		require.NoError(t, err)
		_, _, _, err = hs.ReadMessage(nil, msg2)
		require.Error(t, err, "the transcripts differ")
	})

	t.Run("responder with another prologue", func(t *testing.T) {
		i, err := NewInitiator(e.deviceConfig())
		require.NoError(t, err)
		msg1, err := i.Start()
		require.NoError(t, err)
		hs, err := noise.NewHandshakeState(noise.Config{
			CipherSuite:   noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s),
			Pattern:       noise.HandshakeXX,
			Prologue:      []byte("telegraf-ockam/3"),
			StaticKeypair: static,
		})
		require.NoError(t, err)
		_, _, _, err = hs.ReadMessage(nil, msg1)
		require.NoError(t, err)
		msg2, _, _, err := hs.WriteMessage(nil, []byte("payload"))
		require.NoError(t, err)
		msg3, _, err := i.Finish(msg2)
		require.ErrorIs(t, err, ErrHandshake)
		require.Nil(t, msg3)
	})
}

// TestHandshakeInterop completes a handshake between our responder and a
// plain flynn/noise initiator using Noise's own DH25519 with the device's
// purpose-key scalar: vaultDH is standard X25519.
func TestHandshakeInterop(t *testing.T) {
	e := newTestEnv(t)
	var seed, scalar [32]byte
	seed[0], scalar[0] = 1, 2
	device := seededIdentity(t, seed, scalar, t0)
	cred := issue(t, e.authority, device.Identifier(), sensorAttrs)
	pub := device.purpose.PublicKey()
	hs, msg1 := foreignInitiator(t, ProtocolName, ProtocolName, noise.DHKey{Private: scalar[:], Public: pub[:]})

	r, err := NewResponder(e.listenerConfig())
	require.NoError(t, err)
	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	payload, _, _, err := hs.ReadMessage(nil, msg2)
	require.NoError(t, err)
	a, c, err := parsePayload(payload)
	require.NoError(t, err)
	require.Equal(t, e.listener.Identifier(), a.Identifier())
	require.Equal(t, e.listenerCred.raw, c.raw)

	msg3, cs1, cs2, err := hs.WriteMessage(nil, appendPayload(nil, device, cred))
	require.NoError(t, err)
	lis, err := r.Finish(msg3)
	require.NoError(t, err)
	require.Equal(t, hs.ChannelBinding(), lis.ChannelBinding())
	require.Equal(t, device.Identifier(), lis.Peer().Identifier)

	ct, err := cs1.Encrypt(nil, nil, []byte("to the listener"))
	require.NoError(t, err)
	pt, err := lis.open(nil, ct, time.Now())
	require.NoError(t, err)
	require.Equal(t, "to the listener", string(pt))
	ct, err = lis.seal(nil, []byte("to the device"))
	require.NoError(t, err)
	pt, err = cs2.Decrypt(nil, nil, ct)
	require.NoError(t, err)
	require.Equal(t, "to the device", string(pt))
}

// seededConfigs returns configs whose ephemerals come from fixed streams,
// so every run produces the same three messages.
func seededConfigs(e *testEnv) (dev, lis func() HandshakeConfig) {
	return func() HandshakeConfig {
			c := e.deviceConfig()
			c.Random = vectorfile.NewHashStream("tamper device")
			return c
		}, func() HandshakeConfig {
			c := e.listenerConfig()
			c.Random = vectorfile.NewHashStream("tamper listener")
			return c
		}
}

// TestHandshakeTamper changes each byte of each message, and cuts and
// extends each message: the handshake must fail, and no session may come
// out of it but the one the initiator holds after a genuine message 2.
func TestHandshakeTamper(t *testing.T) {
	e := newTestEnv(t)
	dcfg, lcfg := seededConfigs(e)
	newPair := func(t *testing.T) (*Initiator, *Responder) { return mustPair(t, dcfg(), lcfg()) }
	i, r := newPair(t)
	msg1, err := i.Start()
	require.NoError(t, err)
	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	msg3, _, err := i.Finish(msg2)
	require.NoError(t, err)
	_, err = r.Finish(msg3)
	require.NoError(t, err)

	variants := func(m []byte) (out [][]byte, where []int) {
		for p := range m {
			out, where = append(out, flip(m, p, 0x01)), append(where, p)
		}
		out = append(out, m[:len(m)-1], append(bytes.Clone(m), 0), nil)
		return out, append(where, -1, -1, -1)
	}

	t.Run("message 1", func(t *testing.T) {
		t.Parallel()
		bad, where := variants(msg1)
		for k, m := range bad {
			i, r := newPair(t)
			_, err := i.Start()
			require.NoError(t, err)
			m2, err := r.Respond(m)
			switch {
			case where[k] >= 32:
				require.ErrorIs(t, err, ErrUnsupportedVersion, "hello byte %d", where[k])
				continue
			case where[k] >= 0:
				require.NoError(t, err, "ephemeral byte %d", where[k])
			case err != nil:
				continue
			}
			m3, s, err := i.Finish(m2)
			require.ErrorIs(t, err, ErrHandshake, "variant %d", k)
			require.Nil(t, m3)
			require.Nil(t, s)
		}
	})
	t.Run("message 2", func(t *testing.T) {
		t.Parallel()
		bad, where := variants(msg2)
		for k, m := range bad {
			i, _ := newPair(t)
			_, err := i.Start()
			require.NoError(t, err)
			m3, s, err := i.Finish(m)
			require.ErrorIs(t, err, ErrHandshake, "byte %d", where[k])
			require.Nil(t, m3)
			require.Nil(t, s)
		}
	})
	t.Run("message 3", func(t *testing.T) {
		t.Parallel()
		bad, where := variants(msg3)
		for k, m := range bad {
			_, r := newPair(t)
			m2, err := r.Respond(msg1)
			require.NoError(t, err)
			require.Equal(t, msg2, m2, "seeded ephemerals")
			s, err := r.Finish(m)
			require.ErrorIs(t, err, ErrHandshake, "byte %d", where[k])
			require.Nil(t, s)
		}
	})
	t.Run("message 3 of another handshake", func(t *testing.T) {
		_, other, err := doHandshakeMessages(t, e.deviceConfig(), e.listenerConfig())
		require.NoError(t, err)
		_, r := newPair(t)
		_, err = r.Respond(msg1)
		require.NoError(t, err)
		_, err = r.Finish(other[2])
		require.ErrorIs(t, err, ErrHandshake)
	})
}

// doHandshakeMessages runs a handshake and returns its three messages.
func doHandshakeMessages(t *testing.T, icfg, rcfg HandshakeConfig) (*Session, [3][]byte, error) {
	t.Helper()
	var msgs [3][]byte
	i, err := NewInitiator(icfg)
	require.NoError(t, err)
	r, err := NewResponder(rcfg)
	require.NoError(t, err)
	if msgs[0], err = i.Start(); err != nil {
		return nil, msgs, err
	}
	if msgs[1], err = r.Respond(msgs[0]); err != nil {
		return nil, msgs, err
	}
	if msgs[2], _, err = i.Finish(msgs[1]); err != nil {
		return nil, msgs, err
	}
	s, err := r.Finish(msgs[2])
	return s, msgs, err
}

// TestHandshakeLowOrder sends low-order X25519 points as ephemeral keys.
func TestHandshakeLowOrder(t *testing.T) {
	e := newTestEnv(t)
	// Two points of small order (RFC 7748 section 6.1 forbids the zero
	// result; these produce it).
	for _, point := range [][]byte{
		make([]byte, 32),
		append([]byte{1}, make([]byte, 31)...),
	} {
		r, err := NewResponder(e.listenerConfig())
		require.NoError(t, err)
		msg2, err := r.Respond(append(bytes.Clone(point), ProtocolName...))
		require.ErrorIs(t, err, ErrHandshake)
		require.Nil(t, msg2)

		i, err := NewInitiator(e.deviceConfig())
		require.NoError(t, err)
		_, err = i.Start()
		require.NoError(t, err)
		msg3, _, err := i.Finish(append(bytes.Clone(point), make([]byte, 200)...))
		require.ErrorIs(t, err, ErrHandshake)
		require.Nil(t, msg3)
	}
}

func TestHandshakeOutOfOrder(t *testing.T) {
	e := newTestEnv(t)
	_, msgs, err := doHandshakeMessages(t, e.deviceConfig(), e.listenerConfig())
	require.NoError(t, err)

	t.Run("initiator", func(t *testing.T) {
		i, err := NewInitiator(e.deviceConfig())
		require.NoError(t, err)
		_, _, err = i.Finish(msgs[1])
		require.ErrorIs(t, err, ErrHandshake, "Finish before Start")
		_, err = i.Start()
		require.NoError(t, err, "a call out of order does not kill the handshake")
		_, err = i.Start()
		require.ErrorIs(t, err, ErrHandshake, "Start twice")
	})
	t.Run("initiator after success", func(t *testing.T) {
		dcfg, lcfg := e.deviceConfig(), e.listenerConfig()
		i, err := NewInitiator(dcfg)
		require.NoError(t, err)
		r, err := NewResponder(lcfg)
		require.NoError(t, err)
		m1, err := i.Start()
		require.NoError(t, err)
		m2, err := r.Respond(m1)
		require.NoError(t, err)
		_, _, err = i.Finish(m2)
		require.NoError(t, err)
		_, _, err = i.Finish(m2)
		require.ErrorIs(t, err, ErrHandshake)
		_, err = i.Start()
		require.ErrorIs(t, err, ErrHandshake)
	})
	t.Run("responder", func(t *testing.T) {
		r, err := NewResponder(e.listenerConfig())
		require.NoError(t, err)
		_, err = r.Finish(msgs[2])
		require.ErrorIs(t, err, ErrHandshake, "Finish before Respond")
		m2, err := r.Respond(msgs[0])
		require.NoError(t, err)
		_, err = r.Respond(msgs[0])
		require.ErrorIs(t, err, ErrHandshake, "Respond twice")
		i, err := NewInitiator(e.deviceConfig())
		require.NoError(t, err)
		_, err = i.Start()
		require.NoError(t, err)
		_, err = r.Finish(m2)
		require.ErrorIs(t, err, ErrHandshake, "its own message back")
		_, err = r.Finish(msgs[2])
		require.ErrorIs(t, err, ErrHandshake, "dead after a failure")
	})
	t.Run("dead after a failed Respond", func(t *testing.T) {
		r, err := NewResponder(e.listenerConfig())
		require.NoError(t, err)
		_, err = r.Respond(msgs[0][:31])
		require.ErrorIs(t, err, ErrHandshake)
		_, err = r.Respond(msgs[0])
		require.ErrorIs(t, err, ErrHandshake)
	})
	t.Run("dead after a failed Finish", func(t *testing.T) {
		i, r := mustPair(t, e.deviceConfig(), e.listenerConfig())
		m1, err := i.Start()
		require.NoError(t, err)
		m2, err := r.Respond(m1)
		require.NoError(t, err)
		_, _, err = i.Finish(flip(m2, 40, 1))
		require.ErrorIs(t, err, ErrHandshake)
		_, _, err = i.Finish(m2)
		require.ErrorIs(t, err, ErrHandshake, "the genuine message after a tampered one")
	})
	t.Run("incomplete config", func(t *testing.T) {
		for _, cfg := range []HandshakeConfig{
			{Credential: e.deviceCred, Verifier: e.verifier},
			{Identity: e.device, Verifier: e.verifier},
			{Identity: e.device, Credential: e.deviceCred},
		} {
			_, err := NewInitiator(cfg)
			require.Error(t, err)
			_, err = NewResponder(cfg)
			require.Error(t, err)
		}
	})
}

func mustPair(t testing.TB, icfg, rcfg HandshakeConfig) (*Initiator, *Responder) {
	t.Helper()
	i, err := NewInitiator(icfg)
	require.NoError(t, err)
	r, err := NewResponder(rcfg)
	require.NoError(t, err)
	return i, r
}
