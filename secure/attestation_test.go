package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"filippo.io/edwards25519"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// testSigner is a fixed Ed25519 identity key for attestation tests.
func testSigner(b byte) vault.Signer {
	var seed [32]byte
	for i := range seed {
		seed[i] = b
	}
	return vault.NewSignerFromSeed(seed)
}

func testPurposeKey(b byte) [32]byte {
	var seed [32]byte
	for i := range seed {
		seed[i] = b
	}
	return vault.NewDHFromScalar(seed).PublicKey()
}

// attestationBody encodes the signed part of an attestation field by field,
// so tests can build any form, valid or not.
func attestationBody(version byte, identityKey []byte, purpose byte, purposeKey [32]byte, created, expires uint64) []byte {
	b := append([]byte{version}, identityKey...)
	b = append(b, purpose)
	b = append(b, purposeKey[:]...)
	b = binary.BigEndian.AppendUint64(b, created)
	return binary.BigEndian.AppendUint64(b, expires)
}

// signWith appends signer's signature over context || body.
func signWith(t testing.TB, signer vault.Signer, context string, body []byte) []byte {
	t.Helper()
	sig, err := signer.Sign(signedMessage(context, body))
	require.NoError(t, err)
	return append(body, sig...)
}

func TestAttestRoundTrip(t *testing.T) {
	signer, pk := testSigner(1), testPurposeKey(2)
	a, err := Attest(signer, pk, t0.Add(500*time.Millisecond), time.Hour)
	require.NoError(t, err)
	require.True(t, t0.Equal(a.Created))
	require.True(t, t0.Add(time.Hour).Equal(a.Expires))
	require.Equal(t, IdentifierOf(signer.Public()), a.Identifier())

	b := a.Marshal()
	require.Len(t, b, AttestationSize)
	require.Equal(t, attestationBody(1, signer.Public(), 1, pk, uint64(t0.Unix()), uint64(t0.Add(time.Hour).Unix())), b[:82])
	require.True(t, ed25519.Verify(signer.Public(), signedMessage(attestationContext, b[:82]), b[82:]))

	p, err := ParseAttestation(b)
	require.NoError(t, err)
	require.Equal(t, signer.Public(), p.IdentityKey)
	require.Equal(t, pk, p.PurposeKey)
	require.Equal(t, t0, p.Created)
	require.Equal(t, t0.Add(time.Hour), p.Expires)
	require.Equal(t, b, p.Marshal())

	// Marshal returns a copy.
	b[0] = 0xff
	require.Equal(t, byte(attestationVersion), a.Marshal()[0])
}

// failingSigner returns err, or a signature of sigLen bytes.
type failingSigner struct {
	vault.Signer
	err    error
	sigLen int
}

func (s failingSigner) Sign(m []byte) ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	return make([]byte, s.sigLen), nil
}

func TestAttestErrors(t *testing.T) {
	errSign := errors.New("token removed")
	for _, tc := range []struct {
		name   string
		signer vault.Signer
		now    time.Time
		ttl    time.Duration
		want   error
	}{
		{"zero TTL", testSigner(1), t0, 0, nil},
		{"negative TTL", testSigner(1), t0, -time.Hour, nil},
		// Expires would truncate to Created: an encoding ParseAttestation
		// refuses, so RotatePurposeKey would store an unloadable record.
		{"TTL under a second", testSigner(1), t0, 999 * time.Millisecond, nil},
		{"signer fails", failingSigner{testSigner(1), errSign, 0}, t0, time.Hour, errSign},
		{"short signature", failingSigner{testSigner(1), nil, 63}, t0, time.Hour, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Attest(tc.signer, testPurposeKey(2), tc.now, tc.ttl)
			require.Error(t, err)
			require.Nil(t, a)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
}

func TestParseAttestationStrict(t *testing.T) {
	signer, pk := testSigner(1), testPurposeKey(2)
	created, expires := uint64(t0.Unix()), uint64(t0.Add(time.Hour).Unix())
	good := signWith(t, signer, attestationContext, attestationBody(1, signer.Public(), 1, pk, created, expires))
	_, err := ParseAttestation(good)
	require.NoError(t, err)

	for n := range len(good) {
		_, err := ParseAttestation(good[:n])
		require.ErrorIs(t, err, ErrMalformed, "truncated to %d bytes", n)
	}
	_, err = ParseAttestation(append(good, 0))
	require.ErrorIs(t, err, ErrMalformed, "trailing byte")

	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"version 0", attestationBody(0, signer.Public(), 1, pk, created, expires)},
		{"version 2", attestationBody(2, signer.Public(), 1, pk, created, expires)},
		{"purpose 0", attestationBody(1, signer.Public(), 0, pk, created, expires)},
		{"purpose 2", attestationBody(1, signer.Public(), 2, pk, created, expires)},
		{"expires = created", attestationBody(1, signer.Public(), 1, pk, created, created)},
		{"expires < created", attestationBody(1, signer.Public(), 1, pk, expires, created)},
		{"created past year 9999", attestationBody(1, signer.Public(), 1, pk, maxUnix+1, maxUnix+2)},
		{"expires past year 9999", attestationBody(1, signer.Public(), 1, pk, created, maxUnix+1)},
		{"expires 2^64-1", attestationBody(1, signer.Public(), 1, pk, created, 1<<64-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAttestation(signWith(t, signer, attestationContext, tc.body))
			require.ErrorIs(t, err, ErrMalformed)
			require.Nil(t, a)
		})
	}

	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"signed by another key", signWith(t, testSigner(3), attestationContext, attestationBody(1, signer.Public(), 1, pk, created, expires))},
		{"signed as a credential", signWith(t, signer, credentialContext, attestationBody(1, signer.Public(), 1, pk, created, expires))},
		{"signed without context", signWith(t, signer, "", attestationBody(1, signer.Public(), 1, pk, created, expires))},
		{"zero signature", append(attestationBody(1, signer.Public(), 1, pk, created, expires), make([]byte, 64)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAttestation(tc.b)
			require.ErrorIs(t, err, ErrBadSignature)
		})
	}
}

// TestAttestationTamper flips every byte of an attestation: parsing must
// fail, with ErrMalformed for a broken form and ErrBadSignature otherwise.
func TestAttestationTamper(t *testing.T) {
	a, err := Attest(testSigner(1), testPurposeKey(2), t0, time.Hour)
	require.NoError(t, err)
	good := a.Marshal()
	for i := range good {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := flip(good, i, mask)
			_, err := ParseAttestation(b)
			created, expires := binary.BigEndian.Uint64(b[66:74]), binary.BigEndian.Uint64(b[74:82])
			switch {
			case i == 0 || i == 33, created > maxUnix || expires > maxUnix || expires <= created:
				require.ErrorIs(t, err, ErrMalformed, "byte %d ^ %#x", i, mask)
			case i >= 1 && i <= 32 && errors.Is(err, ErrMalformed):
				// The flipped identity key is no longer a valid point.
				require.ErrorContains(t, err, "identity key", "byte %d ^ %#x", i, mask)
			default:
				require.ErrorIs(t, err, ErrBadSignature, "byte %d ^ %#x", i, mask)
			}
		}
	}
}

func TestAttestationVerify(t *testing.T) {
	a, err := Attest(testSigner(1), testPurposeKey(2), t0, time.Hour)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		now  time.Time
		want error
	}{
		{"long before", t0.Add(-24 * time.Hour), ErrNotYetValid},
		{"just beyond the skew", t0.Add(-ClockSkew - time.Nanosecond), ErrNotYetValid},
		{"at the skew", t0.Add(-ClockSkew), nil},
		{"within the skew", t0.Add(-time.Second), nil},
		{"at created", t0, nil},
		{"just before expiry", t0.Add(time.Hour - time.Nanosecond), nil},
		{"at expiry", t0.Add(time.Hour), ErrExpired},
		{"after expiry", t0.Add(48 * time.Hour), ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Verify(tc.now)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// TestAttestationSmallOrderIdentityKey: anyone can make signatures that
// verify under a small-order Ed25519 key, so such a key is refused before
// its signature is checked.
func TestAttestationSmallOrderIdentityKey(t *testing.T) {
	pk := testPurposeKey(2)
	for _, key := range smallOrderKeys {
		k, err := hex.DecodeString(key)
		require.NoError(t, err)
		b := append(attestationBody(1, ed25519.PublicKey(k), 1, pk, 1, 2), make([]byte, 64)...)
		_, err = ParseAttestation(b)
		require.ErrorIs(t, err, ErrMalformed, key)
		require.ErrorContains(t, err, "small order", key)
	}
}

// smallOrderKeys are the canonical encodings of the 8 points of small order
// of edwards25519 (docs/PROTOCOL.md, section 1).
var smallOrderKeys = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // order 1 (the neutral point)
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
}

// TestSmallOrderKeys checks the list of section 1: each key is a canonical
// encoding of a point whose order divides 8, and there are 8 of them.
func TestSmallOrderKeys(t *testing.T) {
	seen := map[string]bool{}
	for _, key := range smallOrderKeys {
		k, err := hex.DecodeString(key)
		require.NoError(t, err)
		p, err := new(edwards25519.Point).SetBytes(k)
		require.NoError(t, err, key)
		require.Equal(t, k, p.Bytes(), "canonical: %s", key)
		require.Equal(t, 1, new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()), key)
		seen[key] = true
	}
	require.Len(t, seen, 8)
}

// nonCanonicalKeys returns every 32-byte string that edwards25519's (and so
// crypto/ed25519.Verify's) lenient decoding accepts as a point although it
// is not the point's canonical encoding (docs/PROTOCOL.md, section 1): a y
// field in [p, 2^255-1], that is byte 0 in ed..ff, bytes 1..30 ff, byte 31
// 7f (or ff with the sign bit); and x = 0 with the sign bit set.
func nonCanonicalKeys(t *testing.T) (keys [][]byte, smallOrder int) {
	t.Helper()
	var candidates [][]byte
	for b0 := 0xed; b0 <= 0xff; b0++ {
		for _, top := range []byte{0x7f, 0xff} {
			k := bytes.Repeat([]byte{0xff}, 32)
			k[0], k[31] = byte(b0), top
			candidates = append(candidates, k)
		}
	}
	negZero1 := make([]byte, 32) // y = 1, x = 0, sign bit set
	negZero1[0], negZero1[31] = 1, 0x80
	negZeroMinus1 := bytes.Repeat([]byte{0xff}, 32) // y = p-1, x = 0, sign bit set
	negZeroMinus1[0] = 0xec
	candidates = append(candidates, negZero1, negZeroMinus1)
	for _, k := range candidates {
		p, err := new(edwards25519.Point).SetBytes(k)
		if err != nil {
			continue // y² - 1 / (dy² + 1) is not a square: no point at all
		}
		require.NotEqual(t, k, p.Bytes())
		if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
			smallOrder++
		}
		keys = append(keys, k)
	}
	return keys, smallOrder
}

// TestAttestationNonCanonicalIdentityKey: a key given in a non-canonical
// encoding is refused as malformed, before its signature is checked. The
// 20 such encodings of points of large order would otherwise be a second
// spelling, and so a second identifier, of a key.
func TestAttestationNonCanonicalIdentityKey(t *testing.T) {
	keys, smallOrder := nonCanonicalKeys(t)
	require.Len(t, keys, 26, "12 values of y >= p that are points, with either sign, and two negative zeros")
	require.Equal(t, 6, smallOrder)
	pk := testPurposeKey(2)
	for _, k := range keys {
		require.ErrorIs(t, checkIdentityKey(k), ErrMalformed, "%x", k)
		b := append(attestationBody(1, k, 1, pk, 1, 2), make([]byte, 64)...)
		_, err := ParseAttestation(b)
		require.ErrorIs(t, err, ErrMalformed, "%x", k)
		require.NotErrorIs(t, err, ErrBadSignature, "%x", k)
	}
}

// TestParseAttestationOrder: the order of docs/PROTOCOL.md, section 3. Each
// case fails two adjacent checks and must report the first.
func TestParseAttestationOrder(t *testing.T) {
	pk := testPurposeKey(2)
	signer := testSigner(1)
	small, err := hex.DecodeString(smallOrderKeys[0])
	require.NoError(t, err)
	good := func(body []byte) []byte { return signWith(t, signer, attestationContext, body) }
	zeroSig := func(body []byte) []byte { return append(body, make([]byte, 64)...) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
		text string
	}{
		{"length, before the version", zeroSig(attestationBody(2, signer.Public(), 1, pk, 1, 2))[:145], ErrMalformed, "of 145 bytes"},
		{"version, before the purpose", zeroSig(attestationBody(2, signer.Public(), 2, pk, 1, 2)), ErrMalformed, "version 2"},
		{"purpose, before the identity key", zeroSig(attestationBody(1, small, 2, pk, 1, 2)), ErrMalformed, "purpose 2"},
		{"identity key, before the period", zeroSig(attestationBody(1, small, 1, pk, 2, 1)), ErrMalformed, "small order"},
		{"period, before the signature", zeroSig(attestationBody(1, signer.Public(), 1, pk, 2, 2)), ErrMalformed, "validity [2, 2]"},
		{"created beyond year 9999", zeroSig(attestationBody(1, signer.Public(), 1, pk, maxUnix+1, maxUnix+2)), ErrMalformed, "validity"},
		{"signature", zeroSig(attestationBody(1, signer.Public(), 1, pk, 1, 2)), ErrBadSignature, "attestation"},
		{"valid", good(attestationBody(1, signer.Public(), 1, pk, 1, 2)), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAttestation(tc.b)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, tc.text)
		})
	}
}
