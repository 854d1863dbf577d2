package secure

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/stretchr/testify/require"
)

// foreignSuite is the cipher suite of a peer built on plain flynn/noise.
var foreignSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// rawPayload encodes a handshake payload field by field, without checks.
func rawPayload(version byte, attestation, credential []byte) []byte {
	b := append([]byte{version}, attestation...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(credential)))
	return append(b, credential...)
}

// finishAgainst runs the device's side against a listener built on plain
// flynn/noise, whose static key is static and whose message 2 carries
// payload. It returns the device's error, and checks that a device that
// refused wrote no message 3.
func finishAgainst(t *testing.T, dcfg HandshakeConfig, static noise.DHKey, payload []byte) error {
	t.Helper()
	i, err := NewInitiator(dcfg)
	require.NoError(t, err)
	msg1, err := i.Start()
	require.NoError(t, err)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: foreignSuite, Pattern: noise.HandshakeXX, Prologue: []byte(ProtocolName), StaticKeypair: static,
	})
	require.NoError(t, err)
	_, _, _, err = hs.ReadMessage(nil, msg1)
	require.NoError(t, err)
	msg2, _, _, err := hs.WriteMessage(nil, payload)
	require.NoError(t, err)
	msg3, s, err := i.Finish(msg2)
	if err != nil {
		require.Nil(t, msg3, "the device revealed itself to a listener it refused")
		require.Nil(t, s)
	}
	return err
}

// respondTo runs the listener's side against a device built on plain
// flynn/noise, whose static key is static and whose message 3 carries
// payload. It returns the listener's error.
func respondTo(t *testing.T, lcfg HandshakeConfig, static noise.DHKey, payload []byte) error {
	t.Helper()
	hs, msg1 := foreignInitiator(t, ProtocolName, ProtocolName, static)
	r, err := NewResponder(lcfg)
	require.NoError(t, err)
	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	_, _, _, err = hs.ReadMessage(nil, msg2)
	require.NoError(t, err)
	msg3, _, _, err := hs.WriteMessage(nil, payload)
	require.NoError(t, err)
	s, err := r.Finish(msg3)
	if err != nil {
		require.Nil(t, s)
	}
	return err
}

// TestHandshakeCheckOrder: docs/PROTOCOL.md, section 7, rule 2, gives the
// order of the checks of a peer's payload. Each case fails two adjacent
// checks and must get the error of the first.
func TestHandshakeCheckOrder(t *testing.T) {
	e := newTestEnv(t)
	stranger := newIdentity(t)
	static, err := noise.DH25519.GenerateKeypair(nil)
	require.NoError(t, err)
	other, err := noise.DH25519.GenerateKeypair(nil)
	require.NoError(t, err)

	attest := func(purpose []byte, created time.Time, ttl time.Duration) []byte {
		a, err := Attest(e.listener.Signer(), [32]byte(purpose), created, ttl)
		require.NoError(t, err)
		return a.Marshal()
	}
	badSig := func(b []byte) []byte {
		b = bytes.Clone(b)
		b[len(b)-1] ^= 1
		return b
	}
	cred := func(issuer *LocalIdentity, subject Identifier, attrs map[string]string, issued time.Time) []byte {
		c, err := IssueCredential(issuer.Signer(), subject, attrs, issued, time.Hour, nil)
		require.NoError(t, err)
		return c.Marshal()
	}
	revoking := func(subject Identifier) *Verifier {
		v := newVerifier(t, e.authority)
		l, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{subject}, nil)
		require.NoError(t, err)
		require.NoError(t, v.UpdateRevocations(l))
		return v
	}
	listenerAttrs := map[string]string{"role": "listener"}
	good := attest(static.Public, t0, time.Hour)
	goodCred := cred(e.authority, e.listener.Identifier(), listenerAttrs, t0)
	expiredCred := cred(e.authority, e.listener.Identifier(), listenerAttrs, t0.Add(-2*time.Hour))

	for _, tc := range []struct {
		name    string
		payload []byte
		dev     func(*HandshakeConfig)
		want    error
		text    string
	}{
		{"a valid payload", rawPayload(1, good, goodCred), nil, nil, ""},
		{"payload version 2", rawPayload(2, good, goodCred), nil, ErrMalformed, "handshake payload version 2"},
		{"payload version 0", rawPayload(0, good, goodCred), nil, ErrMalformed, "handshake payload version 0"},
		{"a byte after the credential", append(rawPayload(1, good, goodCred), 0), nil, ErrMalformed, "handshake payload of"},
		{"attestation: bad signature, before its purpose key", rawPayload(1, badSig(attest(other.Public, t0, time.Hour)), goodCred),
			nil, ErrBadSignature, "attestation"},
		{"purpose key not rs, before the attestation's period", rawPayload(1, attest(other.Public, t0.Add(-2*time.Hour), time.Hour), goodCred),
			nil, ErrWrongSubject, "purpose key"},
		{"attestation expired, before the credential", rawPayload(1, attest(static.Public, t0.Add(-2*time.Hour), time.Hour),
			cred(stranger, e.listener.Identifier(), listenerAttrs, t0)), nil, ErrExpired, "purpose-key attestation"},
		{"attestation not yet valid, before the credential", rawPayload(1, attest(static.Public, t0.Add(time.Hour), time.Hour),
			cred(stranger, e.listener.Identifier(), listenerAttrs, t0)), nil, ErrNotYetValid, "purpose-key attestation"},
		{"unknown issuer, before the credential's signature", rawPayload(1, good, badSig(cred(stranger, e.listener.Identifier(), listenerAttrs, t0))),
			nil, ErrUnknownIssuer, ""},
		{"bad signature, before the subject", rawPayload(1, good, badSig(cred(e.authority, e.device.Identifier(), listenerAttrs, t0))),
			nil, ErrBadSignature, "credential"},
		{"wrong subject, before the period", rawPayload(1, good, cred(e.authority, e.device.Identifier(), listenerAttrs, t0.Add(-2*time.Hour))),
			nil, ErrWrongSubject, "credential issued to"},
		{"expired, before revocation", rawPayload(1, good, expiredCred),
			func(c *HandshakeConfig) { c.Verifier = revoking(e.listener.Identifier()) }, ErrExpired, "credential expired"},
		{"revoked, before the pin", rawPayload(1, good, goodCred), func(c *HandshakeConfig) {
			c.Verifier = revoking(e.listener.Identifier())
			c.PeerIdentifier = e.device.Identifier()
		}, ErrRevoked, ""},
		{"pin, before the attributes", rawPayload(1, good, goodCred), func(c *HandshakeConfig) {
			c.PeerIdentifier = e.device.Identifier()
			c.PeerAttributes = map[string]string{"role": "admin"}
		}, ErrPinMismatch, ""},
		{"attributes, last", rawPayload(1, good, goodCred), func(c *HandshakeConfig) {
			c.PeerIdentifier = e.listener.Identifier()
			c.PeerAttributes = map[string]string{"role": "admin"}
		}, ErrPeerAttributes, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dcfg := e.deviceConfig()
			if tc.dev != nil {
				tc.dev(&dcfg)
			}
			err := finishAgainst(t, dcfg, static, tc.payload)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, tc.text)
		})
	}

	// The listener applies the same checks to message 3.
	deviceAtt, err := Attest(e.device.Signer(), [32]byte(static.Public), t0, time.Hour)
	require.NoError(t, err)
	require.NoError(t, respondTo(t, e.listenerConfig(), static, rawPayload(1, deviceAtt.Marshal(), e.deviceCred.Marshal())))
	err = respondTo(t, e.listenerConfig(), static, rawPayload(2, deviceAtt.Marshal(), e.deviceCred.Marshal()))
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "handshake payload version 2")
}

// TestHandshakeLowOrderStatic: a peer's static key of small order makes the
// X25519 of es (the device, reading message 2) or se (the listener, reading
// message 3) all zeros, which aborts the handshake (docs/PROTOCOL.md,
// section 7). The peer can compute its own side of that DH with any
// private key: without the check, it would need no key at all.
func TestHandshakeLowOrderStatic(t *testing.T) {
	e := newTestEnv(t)
	private := bytes.Repeat([]byte{7}, 32)
	for _, public := range [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...)} {
		static := noise.DHKey{Private: private, Public: public}
		err := finishAgainst(t, e.deviceConfig(), static, []byte("any payload"))
		require.ErrorIs(t, err, ErrHandshake, "%x", public)
		err = respondTo(t, e.listenerConfig(), static, []byte("any payload"))
		require.ErrorIs(t, err, ErrHandshake, "%x", public)
	}
}
