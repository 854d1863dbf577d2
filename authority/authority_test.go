package authority

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
)

func TestEnrollOnline(t *testing.T) {
	f := newFixture(t)
	addr := f.serve()
	tok := f.tokens(1, map[string]string{"role": "sensor", "site": "plant-7"}, time.Hour)[0]
	d := newDevice(t)

	c, err := d.enroll(addr, f.identity.Public(), tok)
	require.NoError(t, err)
	require.Equal(t, d.id.Identifier(), c.Subject)
	require.Equal(t, f.a.Identifier(), c.Issuer)
	require.Equal(t, map[string]string{"role": "sensor", "site": "plant-7"}, c.Attributes)
	require.Equal(t, t0.Add(24*time.Hour), c.ExpiresAt)
	require.NoError(t, f.verifier.VerifyCredential(c, d.id.Identifier(), t0))

	st := f.requireConsistent()
	// The bundle's one-time prekey was in memory: nothing of it is stored.
	require.Equal(t, Stats{Tokens: 1, TokensUsed: 1, Credentials: 1, RevocationSequence: 1}, st, "the first list is signed at start")
}

// TestSameTokenConcurrently has many devices race with one token: exactly
// one gets a credential, every other is told the token was used.
func TestSameTokenConcurrently(t *testing.T) {
	f := newFixture(t)
	addr := f.serve()
	tok := f.tokens(1, map[string]string{"role": "sensor"}, time.Hour)[0]
	const racers = 16
	var wg sync.WaitGroup
	errs := make([]error, racers)
	creds := make([]*secure.Credential, racers)
	start := make(chan struct{})
	for i := range racers {
		d := newDevice(t)
		wg.Go(func() {
			<-start
			creds[i], errs[i] = d.enroll(addr, f.identity.Public(), tok)
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i := range racers {
		if errs[i] == nil {
			won++
			require.NotNil(t, creds[i])
			continue
		}
		require.ErrorIs(t, errs[i], enroll.ErrTokenUsed)
	}
	require.Equal(t, 1, won)
	st := f.requireConsistent()
	require.Equal(t, 1, st.Credentials)
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	addr := f.serve()
	other := newFixture(t) // another authority
	otherAddr := other.serve()

	t.Run("expired token", func(t *testing.T) {
		tok := f.tokens(1, nil, time.Minute)[0]
		f.clock.Add(time.Minute)
		defer f.clock.Add(-time.Minute)
		_, err := newDevice(t).enroll(addr, f.identity.Public(), tok)
		require.ErrorIs(t, err, secure.ErrExpired)
	})
	t.Run("unknown token", func(t *testing.T) {
		tok, err := enroll.GenerateToken(f.a.Identifier(), nil)
		require.NoError(t, err)
		_, err = newDevice(t).enroll(addr, f.identity.Public(), tok)
		require.ErrorIs(t, err, enroll.ErrUnknownToken)
	})
	t.Run("token of another authority, caught by the device", func(t *testing.T) {
		tok := other.tokens(1, nil, time.Hour)[0]
		_, err := newDevice(t).enroll(addr, f.identity.Public(), tok)
		require.ErrorIs(t, err, enroll.ErrWrongAuthority)
	})
	t.Run("request for another authority, caught by the authority", func(t *testing.T) {
		tok := other.tokens(1, nil, time.Hour)[0]
		b, err := other.a.Bundle(1, time.Hour)
		require.NoError(t, err)
		e := newDevice(t).request(b, tok)
		_, err = f.a.Enroll(e.Request())
		require.ErrorIs(t, err, enroll.ErrWrongAuthority)
		_ = otherAddr
	})
	t.Run("replayed request, with an online one-time prekey", func(t *testing.T) {
		tok := f.tokens(1, nil, time.Hour)[0]
		nc, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer nc.Close()
		b, err := wire.FetchBundle(nc)
		require.NoError(t, err)
		require.Len(t, b.OneTimePrekeys, 1)
		e := newDevice(t).request(b, tok)
		_, err = wire.SubmitEnrollment(nc, e.Request())
		require.NoError(t, err)
		_, err = wire.SubmitEnrollment(nc, e.Request())
		require.ErrorIs(t, err, enroll.ErrPrekeyUsed)
	})
	t.Run("replayed request, with a one-time prekey of the store", func(t *testing.T) {
		tok := f.tokens(1, nil, time.Hour)[0]
		b, err := f.a.Bundle(1, time.Hour)
		require.NoError(t, err)
		e := newDevice(t).request(b, tok)
		answer, err := submit(addr, e.Request())
		require.NoError(t, err)
		_, err = submit(addr, e.Request())
		require.ErrorIs(t, err, enroll.ErrPrekeyUsed)
		_, err = e.OpenAnswer(answer, f.verifier, t0)
		require.NoError(t, err)
	})
	t.Run("replayed request, without a one-time prekey", func(t *testing.T) {
		// Answered again, with the same credential under a new salt: only
		// the device can open it, and nothing new is issued.
		tok := f.tokens(1, nil, time.Hour)[0]
		b, err := f.a.Bundle(0, 0)
		require.NoError(t, err)
		e := newDevice(t).request(b, tok)
		first, err := submit(addr, e.Request())
		require.NoError(t, err)
		again, err := submit(addr, e.Request())
		require.NoError(t, err)
		require.NotEqual(t, first, again)
		c, err := e.OpenAnswer(again, f.verifier, t0)
		require.NoError(t, err)
		recorded, h, err := f.a.cfg.Store.Credential(c.ID)
		require.NoError(t, err)
		require.Equal(t, tok.Hash(), h)
		require.Equal(t, recorded.Marshal(), c.Marshal())
	})
	t.Run("token used by another device", func(t *testing.T) {
		tok := f.tokens(1, nil, time.Hour)[0]
		_, err := newDevice(t).enroll(addr, f.identity.Public(), tok)
		require.NoError(t, err)
		_, err = newDevice(t).enroll(addr, f.identity.Public(), tok)
		require.ErrorIs(t, err, enroll.ErrTokenUsed)
	})
	t.Run("forged bundle signature", func(t *testing.T) {
		proxy := flippingProxy(t, addr)
		_, err := newDevice(t).enroll(proxy, f.identity.Public(), f.tokens(1, nil, time.Hour)[0])
		require.ErrorIs(t, err, secure.ErrBadSignature)
	})
	t.Run("bundle of another authority", func(t *testing.T) {
		_, err := newDevice(t).enroll(otherAddr, f.identity.Public(), f.tokens(1, nil, time.Hour)[0])
		require.ErrorIs(t, err, secure.ErrUnknownIssuer)
	})
	t.Run("revoked device", func(t *testing.T) {
		d := newDevice(t)
		_, err := f.a.Revoke([]secure.Identifier{d.id.Identifier()}, nil)
		require.NoError(t, err)
		_, err = d.enroll(addr, f.identity.Public(), f.tokens(1, nil, time.Hour)[0])
		require.ErrorIs(t, err, secure.ErrRevoked)
		// The refusal crosses the network in clear: it names nobody.
		id := d.id.Identifier()
		require.NotContains(t, err.Error(), id.Short())
		require.NotContains(t, err.Error(), id.String())
		require.NotContains(t, err.Error(), fmt.Sprintf("%x", id[:4]))
	})
	f.requireConsistent()
}

// submit sends one request on a new connection.
func submit(addr string, request []byte) ([]byte, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	return wire.SubmitEnrollment(nc, request)
}

// flippingProxy forwards one connection at a time to addr, flipping the
// last bit of every reply frame: a man in the middle forging bundles.
func flippingProxy(t *testing.T, addr string) string {
	return serviceProxy(t, addr, func(typ byte, body []byte) bool {
		if len(body) > 0 && typ != wire.ServiceRefusal {
			body[len(body)-1] ^= 1
		}
		return true
	})
}

// serviceProxy forwards the service protocol to addr, one frame at a time;
// reply may change each reply's body, or return false to drop it and cut
// the connection (a lost answer, a forged reset).
func serviceProxy(t *testing.T, addr string, reply func(typ byte, body []byte) bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				for {
					typ, body, err := wire.ReadServiceFrame(c, wire.ServiceBodyLimit)
					if err != nil || wire.WriteServiceFrame(up, typ, body) != nil {
						return
					}
					rtyp, rbody, err := wire.ReadServiceFrame(up, wire.ServiceBodyLimit)
					if err != nil || !reply(rtyp, rbody) {
						return
					}
					if wire.WriteServiceFrame(c, rtyp, rbody) != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestEnrollAnswerLostOnce is issue 23's item 1: the authority commits the
// credential, and then its answer is lost (dropped on the path, a forged
// reset, a flaky link). The device enrolls again with the same token and
// gets the credential recorded the first time; the token still serves no
// other device.
func TestEnrollAnswerLostOnce(t *testing.T) {
	f := newFixture(t)
	addr := f.serve()
	var dropped atomic.Int32
	proxy := serviceProxy(t, addr, func(typ byte, _ []byte) bool {
		return typ != wire.ServiceEnroll|wire.ServiceReply || !dropped.CompareAndSwap(0, 1)
	})
	tok := f.tokens(1, map[string]string{"role": "sensor"}, time.Hour)[0]
	d := newDevice(t)
	_, err := d.enroll(proxy, f.identity.Public(), tok)
	require.ErrorIs(t, err, io.EOF, "the answer was dropped")
	require.Equal(t, int32(1), dropped.Load())
	st := f.requireConsistent()
	require.Equal(t, 1, st.TokensUsed, "the authority committed before the answer was lost")

	c, err := d.enroll(proxy, f.identity.Public(), tok)
	require.NoError(t, err)
	require.Equal(t, d.id.Identifier(), c.Subject)
	recorded, h, err := f.a.cfg.Store.Credential(c.ID)
	require.NoError(t, err)
	require.Equal(t, tok.Hash(), h)
	require.Equal(t, recorded.Marshal(), c.Marshal(), "the credential recorded the first time")
	st = f.requireConsistent()
	require.Equal(t, 1, st.Credentials, "nothing new issued")

	_, err = newDevice(t).enroll(addr, f.identity.Public(), tok)
	require.ErrorIs(t, err, enroll.ErrTokenUsed, "another device still cannot use the token")
}

// TestOnlinePrekeyNotBurnedByBadToken is issue 23's item 3: the one-time
// prekey of a device's bundle is public. An observer makes a request of its
// own with it, which decrypts, but with a token the store refuses (unknown,
// or used by another device). The prekey stays the device's.
func TestOnlinePrekeyNotBurnedByBadToken(t *testing.T) {
	f := newFixture(t)
	addr := f.serve()
	used := f.tokens(1, nil, time.Hour)[0]
	_, err := newDevice(t).enroll(addr, f.identity.Public(), used)
	require.NoError(t, err)
	unknown, err := enroll.GenerateToken(f.a.Identifier(), nil)
	require.NoError(t, err)

	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	b, err := wire.FetchBundle(nc)
	require.NoError(t, err)
	require.Len(t, b.OneTimePrekeys, 1)
	observer := newDevice(t)
	_, err = submit(addr, observer.request(b, unknown).Request())
	require.ErrorIs(t, err, enroll.ErrUnknownToken)
	_, err = submit(addr, observer.request(b, used).Request())
	require.ErrorIs(t, err, enroll.ErrTokenUsed)

	e := newDevice(t).request(b, f.tokens(1, nil, time.Hour)[0])
	answer, err := wire.SubmitEnrollment(nc, e.Request())
	require.NoError(t, err, "the device's one-time prekey is still there")
	_, err = e.OpenAnswer(answer, f.verifier, t0)
	require.NoError(t, err)
}

// TestOnlinePrekeyNotBurned: a request that does not decrypt cannot use up
// the one-time prekey of someone else's bundle (the prekey is public); the
// genuine request still enrolls.
func TestOnlinePrekeyNotBurned(t *testing.T) {
	f := newFixture(t)
	addr := f.serve()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	b, err := wire.FetchBundle(nc)
	require.NoError(t, err)
	e := newDevice(t).request(b, f.tokens(1, nil, time.Hour)[0])
	forged := e.Request()
	forged[len(forged)-1] ^= 1
	_, err = wire.SubmitEnrollment(nc, forged)
	require.ErrorIs(t, err, secure.ErrDecrypt)
	answer, err := wire.SubmitEnrollment(nc, e.Request())
	require.NoError(t, err)
	_, err = e.OpenAnswer(answer, f.verifier, t0)
	require.NoError(t, err)
}
