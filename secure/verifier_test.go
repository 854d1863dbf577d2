package secure

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewVerifier(t *testing.T) {
	_, err := NewVerifier()
	require.Error(t, err)

	a, b := newIdentity(t), newIdentity(t)
	v := newVerifier(t, a)
	require.True(t, v.Trusts(a.Identifier()))
	require.False(t, v.Trusts(b.Identifier()))
	require.Zero(t, v.RevocationSequence(a.Identifier()))
}

// reencoded returns c with its attributes replaced and the body encoded
// again under the original signature: what an attacker who edits a
// credential produces.
func reencoded(t *testing.T, c *Credential, attrs map[string]string) *Credential {
	t.Helper()
	forged := *c
	forged.Attributes = attrs
	body := forged.appendBody(nil)
	p, err := ParseCredential(append(body, c.raw[len(c.raw)-64:]...))
	require.NoError(t, err)
	return p
}

func TestVerifyCredential(t *testing.T) {
	e := newTestEnv(t)
	other := newIdentity(t)
	device := e.device.Identifier()
	revokeSubject, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{device}, nil)
	require.NoError(t, err)
	revokeID, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), nil, []CredentialID{e.deviceCred.ID})
	require.NoError(t, err)
	revokeOthers, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{e.listener.Identifier()}, []CredentialID{{1}})
	require.NoError(t, err)
	// A second trusted authority revokes the device: that list is about
	// its own credentials, not the first authority's.
	second := newIdentity(t)
	revokeBySecond, err := NewRevocationList(second.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{device}, []CredentialID{e.deviceCred.ID})
	require.NoError(t, err)

	foreign := issue(t, other, device, sensorAttrs)
	// Signed by another key but naming the trusted authority as issuer.
	impostor := issue(t, other, device, sensorAttrs)
	impostor.Issuer = e.authority.Identifier()
	impostor, err = ParseCredential(append(impostor.appendBody(nil), impostor.raw[len(impostor.raw)-64:]...))
	require.NoError(t, err)

	expires := t0.Add(credentialTTL)
	for _, tc := range []struct {
		name    string
		c       *Credential
		subject Identifier
		now     time.Time
		list    *RevocationList
		want    error
	}{
		{"valid", e.deviceCred, device, t0, nil, nil},
		{"unknown issuer", foreign, device, t0, nil, ErrUnknownIssuer},
		{"attributes changed", reencoded(t, e.deviceCred, map[string]string{"role": "admin", "site": "plant-7"}), device, t0, nil, ErrBadSignature},
		{"attribute added", reencoded(t, e.deviceCred, map[string]string{"role": "sensor", "site": "plant-7", "x": "y"}), device, t0, nil, ErrBadSignature},
		{"attribute removed", reencoded(t, e.deviceCred, map[string]string{"role": "sensor"}), device, t0, nil, ErrBadSignature},
		{"signed by another key", impostor, device, t0, nil, ErrBadSignature},
		{"wrong subject", e.deviceCred, e.listener.Identifier(), t0, nil, ErrWrongSubject},
		{"zero subject", e.deviceCred, Identifier{}, t0, nil, ErrWrongSubject},
		{"beyond the skew", e.deviceCred, device, t0.Add(-ClockSkew - time.Second), nil, ErrNotYetValid},
		{"just beyond the skew", e.deviceCred, device, t0.Add(-ClockSkew - time.Nanosecond), nil, ErrNotYetValid},
		{"within the skew", e.deviceCred, device, t0.Add(-ClockSkew), nil, nil},
		{"just before expiry", e.deviceCred, device, expires.Add(-time.Nanosecond), nil, nil},
		{"at expiry", e.deviceCred, device, expires, nil, ErrExpired},
		{"after expiry", e.deviceCred, device, expires.Add(time.Hour), nil, ErrExpired},
		{"revoked by subject", e.deviceCred, device, t0, revokeSubject, ErrRevoked},
		{"revoked by credential id", e.deviceCred, device, t0, revokeID, ErrRevoked},
		{"others revoked", e.deviceCred, device, t0, revokeOthers, nil},
		{"revoked by another authority", e.deviceCred, device, t0, revokeBySecond, nil},
		// The order of docs/PROTOCOL.md, section 4, when several fail.
		{"unknown issuer and wrong subject", foreign, Identifier{}, expires, revokeSubject, ErrUnknownIssuer},
		{"bad signature and wrong subject", impostor, Identifier{}, expires, revokeSubject, ErrBadSignature},
		{"wrong subject and expired", e.deviceCred, Identifier{}, expires, revokeSubject, ErrWrongSubject},
		{"expired and revoked", e.deviceCred, device, expires, revokeSubject, ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, e.authority, second)
			if tc.list != nil {
				require.NoError(t, v.UpdateRevocations(tc.list))
			}
			err := v.VerifyCredential(tc.c, tc.subject, tc.now)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestUpdateRevocations(t *testing.T) {
	e := newTestEnv(t)
	issuer := e.authority.Identifier()
	list := func(seq uint64, subjects ...Identifier) *RevocationList {
		l, err := NewRevocationList(e.authority.Signer(), seq, t0, t0.Add(DefaultRevocationListValidity), subjects, nil)
		require.NoError(t, err)
		return l
	}
	l2 := list(2, Identifier{1})
	require.NoError(t, e.verifier.UpdateRevocations(l2))
	require.Equal(t, uint64(2), e.verifier.RevocationSequence(issuer))

	again, err := ParseRevocationList(l2.Marshal())
	require.NoError(t, err)
	require.NoError(t, e.verifier.UpdateRevocations(l2), "the same list again")
	require.NoError(t, e.verifier.UpdateRevocations(again), "the same list, parsed again")

	require.ErrorIs(t, e.verifier.UpdateRevocations(list(1)), ErrStaleRevocationList)
	require.ErrorIs(t, e.verifier.UpdateRevocations(list(2)), ErrStaleRevocationList, "same sequence, other entries")
	require.ErrorIs(t, e.verifier.UpdateRevocations(list(2, Identifier{1}, Identifier{2})), ErrStaleRevocationList)
	require.Equal(t, uint64(2), e.verifier.RevocationSequence(issuer))

	require.NoError(t, e.verifier.UpdateRevocations(list(3)))
	require.Equal(t, uint64(3), e.verifier.RevocationSequence(issuer))
	require.ErrorIs(t, e.verifier.UpdateRevocations(l2), ErrStaleRevocationList, "putting the old list back")

	other := newIdentity(t)
	foreign, err := NewRevocationList(other.Signer(), 9, t0, t0.Add(DefaultRevocationListValidity), nil, nil)
	require.NoError(t, err)
	require.ErrorIs(t, e.verifier.UpdateRevocations(foreign), ErrUnknownIssuer)
	require.Zero(t, e.verifier.RevocationSequence(other.Identifier()))

	// Signed by another key, naming the trusted authority as issuer.
	forged, err := ParseRevocationList(signWith(t, other.Signer(), revocationContext,
		revocationBody(revocationVersion, issuer, 4, uint64(t0.Unix()), 0, nil, 0, nil)))
	require.NoError(t, err)
	require.ErrorIs(t, e.verifier.UpdateRevocations(forged), ErrBadSignature)
	require.Equal(t, uint64(3), e.verifier.RevocationSequence(issuer))
}

// TestUpdateRevocationsConcurrent offers lists out of order from several
// goroutines: the newest wins, whatever the order.
func TestUpdateRevocationsConcurrent(t *testing.T) {
	e := newTestEnv(t)
	var lists []*RevocationList
	for seq := range uint64(32) {
		l, err := NewRevocationList(e.authority.Signer(), seq+1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{{byte(seq)}}, nil)
		require.NoError(t, err)
		lists = append(lists, l)
	}
	p := &Peer{Attestation: e.device.Public().Attestation(), Credential: e.deviceCred}
	var wg sync.WaitGroup
	for i := range lists {
		wg.Go(func() {
			err := e.verifier.UpdateRevocations(lists[len(lists)-1-i])
			if err != nil {
				assert.ErrorIs(t, err, ErrStaleRevocationList)
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			assert.NoError(t, e.verifier.Authorize(p, t0))
		}
	})
	wg.Wait()
	require.Equal(t, uint64(32), e.verifier.RevocationSequence(e.authority.Identifier()))
}

func TestAuthorize(t *testing.T) {
	e := newTestEnv(t)
	peer := func() *Peer {
		return &Peer{Identifier: e.device.Identifier(), Attestation: e.device.Public().Attestation(), Credential: e.deviceCred}
	}
	expires := t0.Add(credentialTTL)
	revoke := func(seq uint64, subjects []Identifier, ids []CredentialID) {
		t.Helper()
		l, err := NewRevocationList(e.authority.Signer(), seq, t0, t0.Add(DefaultRevocationListValidity), subjects, ids)
		require.NoError(t, err)
		require.NoError(t, e.verifier.UpdateRevocations(l))
	}

	p := peer()
	require.NoError(t, e.verifier.Authorize(p, t0))
	require.Equal(t, expires, p.validUntil, "the credential expires before the attestation")
	require.Zero(t, p.checkedState.generation)

	t.Run("cached", func(t *testing.T) {
		allocs := testing.AllocsPerRun(100, func() {
			if err := e.verifier.Authorize(p, t0.Add(time.Hour)); err != nil {
				panic(err)
			}
		})
		require.Zero(t, allocs)
	})

	revoke(1, []Identifier{e.listener.Identifier()}, []CredentialID{{1}})
	require.NoError(t, e.verifier.Authorize(p, t0.Add(time.Minute)), "a list that revokes others")
	require.Equal(t, uint64(1), p.checkedState.generation)

	require.ErrorIs(t, e.verifier.Authorize(p, expires), ErrExpired, "the cache ends at expiry")
	require.ErrorIs(t, e.verifier.Authorize(p, expires.Add(time.Hour)), ErrExpired)
	require.NoError(t, e.verifier.Authorize(p, expires.Add(-time.Nanosecond)))

	revoke(2, []Identifier{e.device.Identifier()}, nil)
	for range 3 {
		require.ErrorIs(t, e.verifier.Authorize(p, t0.Add(2*time.Minute)), ErrRevoked, "revoked mid-channel")
	}
	require.ErrorIs(t, e.verifier.Authorize(peer(), t0), ErrRevoked, "a new peer")

	revoke(3, nil, []CredentialID{e.deviceCred.ID})
	require.ErrorIs(t, e.verifier.Authorize(p, t0.Add(3*time.Minute)), ErrRevoked, "by credential id")
}

func TestAuthorizeAttestationExpiry(t *testing.T) {
	e := newTestEnv(t)
	a, err := Attest(e.device.Signer(), e.device.Public().Attestation().PurposeKey, t0, time.Hour)
	require.NoError(t, err)
	p := &Peer{Identifier: e.device.Identifier(), Attestation: a, Credential: e.deviceCred}
	require.NoError(t, e.verifier.Authorize(p, t0))
	require.Equal(t, t0.Add(time.Hour), p.validUntil, "the attestation expires before the credential")
	require.NoError(t, e.verifier.Authorize(p, t0.Add(time.Hour-time.Nanosecond)))
	require.ErrorIs(t, e.verifier.Authorize(p, t0.Add(time.Hour)), ErrExpired)
}

// TestAuthorizeConcurrent runs many peers' checks while lists change.
func TestAuthorizeConcurrent(t *testing.T) {
	e := newTestEnv(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p := &Peer{Attestation: e.device.Public().Attestation(), Credential: e.deviceCred}
			for j := range 200 {
				assert.NoError(t, e.verifier.Authorize(p, t0.Add(time.Duration(j)*time.Second)), "peer %d", i)
			}
		})
	}
	for seq := range uint64(20) {
		l, err := NewRevocationList(e.authority.Signer(), seq+1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{{byte(seq)}}, nil)
		require.NoError(t, err)
		require.NoError(t, e.verifier.UpdateRevocations(l), fmt.Sprint(seq))
	}
	wg.Wait()
}

// TestCheckCurrent: the check of a credential in use sees a new list and
// the expiry, and nothing else (the signature was checked before).
func TestCheckCurrent(t *testing.T) {
	e := newTestEnv(t)
	v := newVerifier(t, e.authority)
	c := e.deviceCred
	require.NoError(t, v.CheckCurrent(c, t0))
	require.ErrorIs(t, v.CheckCurrent(c, c.ExpiresAt), ErrExpired)
	l, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{c.Subject}, nil)
	require.NoError(t, err)
	require.NoError(t, v.UpdateRevocations(l))
	require.ErrorIs(t, v.CheckCurrent(c, t0), ErrRevoked)
}
