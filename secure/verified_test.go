package secure

import (
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/stretchr/testify/require"
)

// The attacks on the cache of verified payloads (verified.go): a listener
// that remembers a device must refuse it as soon as it would refuse it
// without the cache, and must never take other bytes for the ones it
// verified. Each test looks at the cache itself as well as at the
// handshake's outcome, because the handshake checks expiry and revocation
// again anyway: the cache must not keep an entry the state no longer
// supports.

// cacheEnv is a testEnv whose listener has a Verifier of its own, so that
// its cache holds the devices' payloads only.
type cacheEnv struct {
	*testEnv
	lv *Verifier
}

func newCacheEnv(t *testing.T) *cacheEnv {
	e := newTestEnv(t)
	return &cacheEnv{testEnv: e, lv: newVerifier(t, e.authority)}
}

// connect runs a handshake of device (with cred) to the listener, whose
// clock reads now, and returns the listener's error.
func (e *cacheEnv) connect(t *testing.T, device *LocalIdentity, cred *Credential, now time.Time) error {
	t.Helper()
	dcfg := HandshakeConfig{Identity: device, Credential: cred, Verifier: e.verifier, Now: fixedNow(t0)}
	lcfg := e.listenerConfig()
	lcfg.Verifier, lcfg.Now = e.lv, fixedNow(now)
	_, lis, err := doHandshake(t, dcfg, lcfg)
	if err == nil {
		require.Equal(t, device.Identifier(), lis.Peer().Identifier)
	}
	return err
}

// remembers reports whether the listener's cache holds device's payload as
// verified at now.
func (e *cacheEnv) remembers(device *LocalIdentity, cred *Credential, now time.Time) bool {
	return e.lv.verifiedBefore(device.public.attestation.raw[:], cred, now)
}

func TestVerifiedCacheReturningDevice(t *testing.T) {
	e := newCacheEnv(t)
	require.False(t, e.remembers(e.device, e.deviceCred, t0))
	require.NoError(t, e.connect(t, e.device, e.deviceCred, t0))
	require.True(t, e.remembers(e.device, e.deviceCred, t0))
	require.Equal(t, 1, e.lv.verified.len())
	// The reconnect takes the cached path and still ends with the peer.
	require.NoError(t, e.connect(t, e.device, e.deviceCred, t0.Add(time.Minute)))
	require.Equal(t, 1, e.lv.verified.len())
}

// TestVerifiedCacheRevoked: a device remembered, then revoked (by identity
// or by credential id), is refused at its next handshake, and its entry is
// gone; a list that revokes someone else also retires every entry (a new
// generation), and the device, verified again, is remembered again.
func TestVerifiedCacheRevoked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		revoke  func(e *cacheEnv) ([]Identifier, []CredentialID)
		refused bool
	}{
		{"identity", func(e *cacheEnv) ([]Identifier, []CredentialID) {
			return []Identifier{e.device.Identifier()}, nil
		}, true},
		{"credential", func(e *cacheEnv) ([]Identifier, []CredentialID) {
			return nil, []CredentialID{e.deviceCred.ID}
		}, true},
		{"someone else", func(e *cacheEnv) ([]Identifier, []CredentialID) {
			return []Identifier{e.listener.Identifier()}, nil
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCacheEnv(t)
			require.NoError(t, e.connect(t, e.device, e.deviceCred, t0))
			require.True(t, e.remembers(e.device, e.deviceCred, t0))

			ids, creds := tc.revoke(e)
			l, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), ids, creds)
			require.NoError(t, err)
			require.NoError(t, e.lv.UpdateRevocations(l))
			require.False(t, e.remembers(e.device, e.deviceCred, t0), "an entry outlived the revocation state it was verified under")
			require.Equal(t, 0, e.lv.verified.len(), "the stale entry is removed")

			err = e.connect(t, e.device, e.deviceCred, t0)
			if tc.refused {
				require.ErrorIs(t, err, ErrRevoked)
				require.Equal(t, 0, e.lv.verified.len())
				return
			}
			require.NoError(t, err)
			require.True(t, e.remembers(e.device, e.deviceCred, t0))
		})
	}
}

// TestVerifiedCacheExpired: a device remembered is refused once its
// credential, or its purpose-key attestation if that expires first, has
// expired, and the entry is not used past that instant.
func TestVerifiedCacheExpired(t *testing.T) {
	t.Run("credential", func(t *testing.T) {
		e := newCacheEnv(t)
		require.NoError(t, e.connect(t, e.device, e.deviceCred, t0))
		end := e.deviceCred.ExpiresAt
		require.Equal(t, t0.Add(credentialTTL), end)
		require.True(t, e.remembers(e.device, e.deviceCred, end.Add(-time.Second)))
		require.NoError(t, e.connect(t, e.device, e.deviceCred, end.Add(-time.Second)))
		require.False(t, e.remembers(e.device, e.deviceCred, end))
		require.ErrorIs(t, e.connect(t, e.device, e.deviceCred, end), ErrExpired)
		require.Equal(t, 0, e.lv.verified.len())
	})
	t.Run("attestation first", func(t *testing.T) {
		e := newCacheEnv(t)
		long, err := IssueCredential(e.authority.Signer(), e.device.Identifier(), sensorAttrs, t0, 2*DefaultAttestationTTL, nil)
		require.NoError(t, err)
		require.NoError(t, e.connect(t, e.device, long, t0))
		end := e.device.public.attestation.Expires
		require.Equal(t, t0.Add(DefaultAttestationTTL), end)
		require.True(t, end.Before(long.ExpiresAt))
		require.True(t, e.remembers(e.device, long, end.Add(-time.Second)))
		require.False(t, e.remembers(e.device, long, end))
		require.ErrorIs(t, e.connect(t, e.device, long, end), ErrExpired)
		require.Equal(t, 0, e.lv.verified.len())
	})
}

// TestVerifiedCacheOtherAuthorities: an entry is bound to the authority
// that verified it. Two Verifiers share one cache here (as a cache kept
// across a reload of the trusted authorities would be): one that does not
// trust the device's authority refuses it, and a credential of the same
// bytes from another trusted authority is not possible (the issuer is in
// the bytes), so the second authority's own device is verified on its own.
func TestVerifiedCacheOtherAuthorities(t *testing.T) {
	e := newCacheEnv(t)
	require.NoError(t, e.connect(t, e.device, e.deviceCred, t0))

	other := newIdentity(t)
	foreign := newVerifier(t, other)
	foreign.verified = e.lv.verified
	att := e.device.public.attestation.raw[:]
	require.False(t, foreign.verifiedBefore(att, e.deviceCred, t0))
	e.lv = foreign
	require.ErrorIs(t, e.connect(t, e.device, e.deviceCred, t0), ErrUnknownIssuer)

	// Both authorities trusted: the entry verified under the first one's
	// key is found under the same key and not under the other's.
	both := newVerifier(t, e.authority, other)
	both.verified = foreign.verified
	require.True(t, both.verifiedBefore(att, e.deviceCred, t0))
	require.NotEqual(t,
		verifiedDigest(e.authority.public.Key(), att, e.deviceCred),
		verifiedDigest(other.public.Key(), att, e.deviceCred))
	otherCred := issue(t, other, e.device.Identifier(), sensorAttrs)
	require.False(t, both.verifiedBefore(att, otherCred, t0))
	e.lv = both
	require.NoError(t, e.connect(t, e.device, otherCred, t0))
	require.Equal(t, 2, both.verified.len())
}

// TestVerifiedCacheReplayedPayload: an attacker who saw a remembered
// device's attestation and credential (message 3 is encrypted, but a
// device's own payload is no secret to the device, nor to whoever stole it)
// sends them over a Noise static key of its own: the payload is remembered,
// and the handshake is still refused, because the attested purpose key is
// compared with the static key at every handshake.
func TestVerifiedCacheReplayedPayload(t *testing.T) {
	e := newCacheEnv(t)
	require.NoError(t, e.connect(t, e.device, e.deviceCred, t0))
	require.True(t, e.remembers(e.device, e.deviceCred, t0))
	static, err := noise.DH25519.GenerateKeypair(nil)
	require.NoError(t, err)
	lcfg := e.listenerConfig()
	lcfg.Verifier = e.lv
	err = respondTo(t, lcfg, static, appendPayload(nil, e.device, e.deviceCred))
	require.ErrorIs(t, err, ErrWrongSubject)
	require.True(t, e.remembers(e.device, e.deviceCred, t0), "the genuine device stays remembered")
	require.Equal(t, 1, e.lv.verified.len())
}

// TestVerifiedCacheOneBit: with the device's payload remembered, every
// payload that differs from it in one bit is refused (as malformed, by a
// signature, or by a check that follows) and none is remembered. A cache
// keyed on less than every byte (the credential id, the identity, ...)
// would accept a changed expiry, attribute or purpose key.
func TestVerifiedCacheOneBit(t *testing.T) {
	e := newCacheEnv(t)
	require.NoError(t, e.connect(t, e.device, e.deviceCred, t0))
	payload := appendPayload(nil, e.device, e.deviceCred)
	static := e.device.public.attestation.PurposeKey
	lookup := func(att []byte, c *Credential) bool { return e.lv.verifiedBefore(att, c, t0) }

	a, c, cached, err := parsePayloadWith(payload, lookup)
	require.NoError(t, err)
	require.True(t, cached)
	_, err = e.lv.verifyPeer(a, c, static[:], t0, cached)
	require.NoError(t, err)

	for i := range len(payload) * 8 {
		p := flip(payload, i/8, 1<<(i%8))
		a, c, cached, err := parsePayloadWith(p, lookup)
		if err == nil {
			_, err = e.lv.verifyPeer(a, c, static[:], t0, cached)
		}
		require.Error(t, err, "bit %d", i)
		require.True(t, errorIsAny(err, ErrMalformed, ErrBadSignature, ErrWrongSubject, ErrUnknownIssuer, ErrNotYetValid, ErrExpired),
			"bit %d: %v", i, err)
	}
	require.Equal(t, 1, e.lv.verified.len())
}

// TestVerifiedCacheOnlySuccess: payloads that fail any check are not
// remembered, so a peer without a valid credential cannot fill the cache.
func TestVerifiedCacheOnlySuccess(t *testing.T) {
	e := newCacheEnv(t)
	stranger := newIdentity(t)
	rogue := newIdentity(t)
	forged := e.deviceCred.Marshal()
	forged[len(forged)-1] ^= 1
	forgedCred, err := ParseCredential(forged)
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		device *LocalIdentity
		cred   *Credential
		want   error
	}{
		{"untrusted authority", e.device, issue(t, rogue, e.device.Identifier(), sensorAttrs), ErrUnknownIssuer},
		{"forged signature", e.device, forgedCred, ErrBadSignature},
		{"another's credential", stranger, e.deviceCred, ErrWrongSubject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, e.connect(t, tc.device, tc.cred, t0), tc.want)
			require.Equal(t, 0, e.lv.verified.len())
		})
	}
	l, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{e.device.Identifier()}, nil)
	require.NoError(t, err)
	require.NoError(t, e.lv.UpdateRevocations(l))
	require.ErrorIs(t, e.connect(t, e.device, e.deviceCred, t0), ErrRevoked)
	require.Equal(t, 0, e.lv.verified.len())
}

// TestVerifiedCacheBounded: the cache never holds more than its bound; one
// entry goes at a time, in CLOCK order (an entry looked up since the clock
// last passed it gets a second chance), and an evicted device is verified
// in full again.
func TestVerifiedCacheBounded(t *testing.T) {
	e := newCacheEnv(t)
	e.lv.verified = newVerifiedCache(3)
	devices := make([]*LocalIdentity, 5)
	creds := make([]*Credential, len(devices))
	for i := range devices {
		devices[i] = newIdentity(t)
		creds[i] = issue(t, e.authority, devices[i].Identifier(), sensorAttrs)
	}
	for i := range 3 {
		require.NoError(t, e.connect(t, devices[i], creds[i], t0))
	}
	require.True(t, e.remembers(devices[0], creds[0], t0)) // 0 is now the most recent
	require.NoError(t, e.connect(t, devices[3], creds[3], t0))
	require.Equal(t, 3, e.lv.verified.len())
	for i, want := range []bool{true, false, true, true} {
		require.Equal(t, want, e.remembers(devices[i], creds[i], t0), "device %d", i)
	}
	require.NoError(t, e.connect(t, devices[1], creds[1], t0), "an evicted device is verified again")
	require.NoError(t, e.connect(t, devices[4], creds[4], t0))
	require.Equal(t, 3, e.lv.verified.len())
	for i, want := range []bool{false, true, false, true, true} {
		require.Equal(t, want, e.remembers(devices[i], creds[i], t0), "device %d", i)
	}
}

// TestVerifiedCacheConcurrent: handshakes of many devices against one
// Verifier at once (run with -race).
func TestVerifiedCacheConcurrent(t *testing.T) {
	e := newCacheEnv(t)
	const n = 8
	devices := make([]*LocalIdentity, n)
	creds := make([]*Credential, n)
	for i := range devices {
		devices[i] = newIdentity(t)
		creds[i] = issue(t, e.authority, devices[i].Identifier(), sensorAttrs)
	}
	// handshake is doHandshake without require, for other goroutines.
	handshake := func(device *LocalIdentity, cred *Credential) error {
		i, err := NewInitiator(HandshakeConfig{Identity: device, Credential: cred, Verifier: e.verifier, Now: fixedNow(t0)})
		if err != nil {
			return err
		}
		lcfg := e.listenerConfig()
		lcfg.Verifier = e.lv
		r, err := NewResponder(lcfg)
		if err != nil {
			return err
		}
		msg1, err := i.Start()
		if err != nil {
			return err
		}
		msg2, err := r.Respond(msg1)
		if err != nil {
			return err
		}
		msg3, _, err := i.Finish(msg2)
		if err != nil {
			return err
		}
		_, err = r.Finish(msg3)
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, n*3)
	for i := range errs {
		wg.Go(func() { errs[i] = handshake(devices[i%n], creds[i%n]) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "handshake %d", i)
	}
	require.Equal(t, n, e.lv.verified.len())
}

// TestVerifiedCacheSlots: stale entries leave from the middle of the slots
// and eviction goes on around them; every key stays at the slot the index
// names, and the cache never exceeds its bound.
func TestVerifiedCacheSlots(t *testing.T) {
	c := newVerifiedCache(3)
	key := func(i byte) verifiedKey { return verifiedKey{i} }
	until := t0.Add(time.Hour)
	check := func(want ...byte) {
		t.Helper()
		require.Equal(t, len(want), c.len())
		require.Len(t, c.slots, len(want))
		for i, e := range c.slots {
			require.Equal(t, int32(i), c.index[e.key])
		}
		for _, k := range want {
			_, ok := c.index[key(k)]
			require.True(t, ok, "key %d", k)
		}
	}
	for i := range byte(3) {
		c.add(key(i), 1, until)
	}
	check(0, 1, 2)
	require.False(t, c.contains(key(1), 2, t0), "another generation")
	check(0, 2)
	require.False(t, c.contains(key(2), 1, until), "expired")
	check(0)
	for i := byte(3); i < 10; i++ {
		c.add(key(i), 1, until)
		require.LessOrEqual(t, c.len(), 3)
	}
	check(7, 8, 9)
	require.True(t, c.contains(key(8), 1, t0))
	c.add(key(10), 1, until)
	c.add(key(11), 1, until)
	check(8, 10, 11)
}
