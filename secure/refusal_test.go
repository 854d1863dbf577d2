package secure

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDialRefused: a listener that refuses a device after message 3 tells
// it why, sealed, and the device's Dial returns a *RefusedError naming the
// listener and the code, never a channel. On version 1 the device got a
// channel here and learned nothing until its first write failed.
func TestDialRefused(t *testing.T) {
	e := newTestEnv(t)
	stranger := newIdentity(t) // an authority the listener does not trust
	revokedList, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity),
		[]Identifier{e.device.Identifier()}, nil)
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		setup  func(dcfg, lcfg *HandshakeConfig)
		code   RefusalCode
		lisErr error
	}{
		{"revoked", func(dcfg, lcfg *HandshakeConfig) {
			v := newVerifier(t, e.authority)
			require.NoError(t, v.UpdateRevocations(revokedList))
			lcfg.Verifier = v
		}, RefusedRevoked, ErrRevoked},
		{"unknown issuer", func(dcfg, lcfg *HandshakeConfig) {
			dcfg.Credential = issue(t, stranger, e.device.Identifier(), nil)
		}, RefusedUnknownIssuer, ErrUnknownIssuer},
		{"expired", func(dcfg, lcfg *HandshakeConfig) {
			c, err := IssueCredential(e.authority.Signer(), e.device.Identifier(), nil, t0.Add(-2*time.Hour), time.Hour, nil)
			require.NoError(t, err)
			dcfg.Credential = c
		}, RefusedExpired, ErrExpired},
		{"admit refuses", func(dcfg, lcfg *HandshakeConfig) {
			lcfg.Admit = func(p *Peer) error {
				require.Equal(t, e.device.Identifier(), p.Identifier)
				return &RefusalError{Code: RefusedTooManyChannels, Err: errors.New("3 open")}
			}
		}, RefusedTooManyChannels, nil},
		{"admit refuses with a plain error", func(dcfg, lcfg *HandshakeConfig) {
			lcfg.Admit = func(*Peer) error { return errors.New("no") }
		}, RefusedUnauthorized, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dcfg, lcfg := e.deviceConfig(), e.listenerConfig()
			tc.setup(&dcfg, &lcfg)
			a, b := net.Pipe()
			t.Cleanup(func() { a.Close(); b.Close() })
			dev, lis, derr, lerr := dialAccept(t, NewStreamTransport(a), NewStreamTransport(b), dcfg, lcfg)
			require.Nil(t, dev)
			require.Nil(t, lis)
			require.ErrorIs(t, derr, ErrRefused)
			re, ok := errors.AsType[*RefusedError](derr)
			require.True(t, ok, "%v", derr)
			require.Equal(t, tc.code, re.Code)
			require.Equal(t, e.listener.Identifier(), re.Listener)
			require.Contains(t, derr.Error(), "refused by listener "+e.listener.Identifier().Short()+": "+tc.code.String())
			for _, verr := range []error{ErrRevoked, ErrUnknownIssuer, ErrExpired} {
				require.NotErrorIs(t, derr, verr, "the device must not read it as a fault of the listener's credential")
			}
			if tc.lisErr != nil {
				require.ErrorIs(t, lerr, tc.lisErr)
			}
			pe, ok := errors.AsType[*PeerError](lerr)
			require.True(t, ok, "the listener knows whom it refused: %v", lerr)
			require.Equal(t, e.device.Identifier(), pe.Identifier)
		})
	}
}

// TestAcceptAndRefuseOnlyFirst: an accept or refuse after the opening is a
// protocol error, so a listener cannot "refuse" an open channel, nor
// inject a second accept, and a device cannot send either.
func TestAcceptAndRefuseOnlyFirst(t *testing.T) {
	e := newTestEnv(t)
	for _, m := range []Message{{Type: TypeAccept}, {Type: TypeRefuse, Code: RefusedRevoked}} {
		dev, lis, _, _ := newChannelPair(t, e)
		require.NoError(t, lis.Send(m))
		_, err := dev.Receive()
		require.ErrorIs(t, err, ErrMalformed, "%v to the device", m.Type)
		require.NoError(t, dev.Send(m))
		_, err = lis.Receive()
		require.ErrorIs(t, err, ErrMalformed, "%v to the listener", m.Type)
	}
}

// TestRefuseNeedsMessage3: the responder can seal a refusal only after
// Noise read message 3, never to a peer that did not prove its key.
func TestRefuseNeedsMessage3(t *testing.T) {
	e := newTestEnv(t)
	r, err := NewResponder(e.listenerConfig())
	require.NoError(t, err)
	_, err = r.Refuse(RefusedRevoked, "")
	require.Error(t, err)
	i, err := NewInitiator(e.deviceConfig())
	require.NoError(t, err)
	msg1, err := i.Start()
	require.NoError(t, err)
	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	msg3, _, err := i.Finish(msg2)
	require.NoError(t, err)
	msg3[len(msg3)-1] ^= 1 // a tampered message 3: Noise fails
	_, err = r.Finish(msg3)
	require.ErrorIs(t, err, ErrHandshake)
	_, err = r.Refuse(RefusedRevoked, "")
	require.Error(t, err, "no key the initiator proved")
}

func TestRefusalCodes(t *testing.T) {
	require.Equal(t, "revoked", RefusedRevoked.String())
	require.Equal(t, "RefusalCode(0)", RefusalCode(0).String())
	require.Equal(t, "RefusalCode(8)", RefusalCode(8).String())
	for c := RefusedRevoked; c <= RefusedTooManyChannels; c++ {
		require.Equal(t, c != RefusedTooManyChannels, c.Permanent(), "%v", c)
	}
	require.Equal(t, RefusedRevoked, RefusalCodeOf(ErrRevoked))
	require.Equal(t, RefusedExpired, RefusalCodeOf(ErrExpired))
	require.Equal(t, RefusedNotYetValid, RefusalCodeOf(ErrNotYetValid))
	require.Equal(t, RefusedUnknownIssuer, RefusalCodeOf(ErrUnknownIssuer))
	require.Equal(t, RefusedInvalidCredential, RefusalCodeOf(ErrBadSignature))
	require.Equal(t, RefusedInvalidCredential, RefusalCodeOf(ErrMalformed))
}
